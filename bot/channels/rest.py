"""Rasa's REST webhook with its input checked, so a broken client gets a 400, not a 500.

Same URL and JSON as Rasa's own channel (POST /webhooks/rest/webhook with
{"sender": "...", "message": "..."}); the answer is a clear 400 when the body is not a JSON
object, the sender is missing, or the message is not text.

REST cannot be pushed to, so what reaches a conversation outside the merchant's own turn (an
agent's reply from the staff console, "人工客服已经处理完毕……" when the bot takes over again) is
fetched: ``GET /webhooks/rest/messages?sender=ID&since=CURSOR`` answers the bot's and agents'
messages after the cursor, read from the conversation's tracker, with the cursor for the next
call. Like the webhook, it trusts the sender id: whoever knows an id can already write into that
conversation, so REST clients must use unguessable ids (docs/console.md). It reads only
conversations the merchant holds over REST (a WeChat or widget conversation answers as empty),
and a REST message is always tagged ``rest`` (Rasa would take an ``input_channel`` from the body).

When the conversation store or the conversation locks are unreachable, the webhook answers 200
with one polite message asking to send again (bot/outage.py) instead of ``[]`` or an answer
from an empty conversation; the poll route answers 503.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Text, Tuple

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput as RasaRestInput
from rasa.shared.core.events import BotUttered
from sanic import Blueprint, response
from sanic.exceptions import InvalidUsage
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.delivery import REST_POLL, Delivery, agent_said
from bot.channels.limits import limited
from bot.handoff_gate import gate
from bot.outage import StoreUnavailable, guard
from bot.speedups.actions import close_sessions
from bot.speedups.startup import freeze_loaded_objects

logger = logging.getLogger(__name__)

MAX_SENDER_CHARS = 128
#: Messages per poll: ``limit`` may ask for fewer; ``more`` says when others follow.
POLL_LIMIT = 50
MAX_POLL_LIMIT = 100
MAX_CURSOR_CHARS = 32


class BadPoll(ValueError):
    """A poll request we answer with 400 and this message."""


def parse_cursor(raw: Optional[str]) -> Optional[float]:
    """``since``: a cursor this route handed out (the time of a message); absent = from the start."""
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw) if len(raw) <= MAX_CURSOR_CHARS else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadPoll('"since" must be the "cursor" of an earlier answer (a number)')
    return value


def parse_limit(raw: Optional[str]) -> int:
    if raw is None or raw.strip() == "":
        return POLL_LIMIT
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_POLL_LIMIT:
        raise BadPoll(f'"limit" must be a whole number from 1 to {MAX_POLL_LIMIT}')
    return int(raw)


def _message(event: BotUttered) -> Optional[Dict[str, Any]]:
    """A bot event as the poll shows it; None for an event with nothing to show."""
    data = event.data or {}
    custom = data.get("custom") if isinstance(data.get("custom"), dict) else None
    said = agent_said(custom)
    if said is not None:
        return {
            "sender": "agent",
            "agent": said["name"],
            "text": said["text"],
            "buttons": [],
            "custom": custom,
            "timestamp": event.timestamp,
        }
    buttons = [b for b in data.get("buttons") or data.get("quick_replies") or [] if isinstance(b, dict)]
    item: Dict[str, Any] = {
        "sender": "bot",
        "agent": None,
        "text": event.text,
        "buttons": buttons,
        "custom": custom,
        "timestamp": event.timestamp,
    }
    for key in ("image", "attachment"):
        if data.get(key):
            item[key] = data[key]
    if not (event.text or buttons or custom or "image" in item or "attachment" in item):
        return None
    return item


def messages_after(
    events: Iterable[Any], since: Optional[float], limit: int
) -> Tuple[List[Dict[str, Any]], Optional[float], bool]:
    """The bot's and agents' messages after ``since`` (oldest first, at most ``limit`` plus any
    sharing the last one's time, so a cursor never falls between two messages), the cursor for
    the next call (None: nothing new), and whether more follow."""
    found = [
        (event.timestamp, shown)
        for event in events
        if isinstance(event, BotUttered)
        and (since is None or event.timestamp > since)
        and (shown := _message(event)) is not None
    ]
    page = found[:limit]
    while len(page) < len(found) and found[len(page)][0] == page[-1][0]:
        page.append(found[len(page)])
    cursor = page[-1][0] if page else None
    return [shown for _, shown in page], cursor, len(page) < len(found)


def _poll_error(status: int, message: str) -> HTTPResponse:
    return response.json(
        {"error": message}, status=status, ensure_ascii=False, headers={"Cache-Control": "no-store"}
    )


BODY_HINT = 'The body must be a JSON object: {"sender": "...", "message": "..."}'


def _body(request: Request) -> Dict[str, Any]:
    try:
        body = request.json
    except InvalidUsage:  # not JSON at all (a form, plain text, a cut-off body)
        raise InvalidUsage(BODY_HINT) from None
    if not isinstance(body, dict):
        raise InvalidUsage(BODY_HINT)
    return body


async def _bad_request(request: Request, error: Exception) -> HTTPResponse:
    """A refused webhook request is answered in JSON, whatever the client sent: Sanic's own
    error page is HTML when the request was not JSON (a form post, say)."""
    return response.json({"error": str(error)}, status=getattr(error, "status_code", 400), ensure_ascii=False)


class RestInput(RasaRestInput):
    """posbot's REST channel: Rasa's, plus validation and channel metadata for reports."""

    @classmethod
    def name(cls) -> Text:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        # guard: a store or lock outage is answered with one polite "请稍后再发一次" (bot/outage.py)
        blueprint = limited(super().blueprint(guard(gate(on_new_message))))

        async def poll_messages(request: Request) -> HTTPResponse:
            return await self.poll(request)

        blueprint.add_route(poll_messages, "/messages", methods=["GET"])
        blueprint.exception(InvalidUsage)(_bad_request)

        async def close_action_sessions(_app: Any, _loop: Any) -> None:
            await close_sessions()

        blueprint.after_server_stop(close_action_sessions)
        blueprint.after_server_start(freeze_loaded_objects)
        return blueprint

    @classmethod
    async def poll(cls, request: Request) -> HTTPResponse:
        """GET /webhooks/rest/messages?sender=ID&since=CURSOR[&limit=N]."""
        sender = request.args.get("sender")
        if not sender or not sender.strip() or len(sender) > MAX_SENDER_CHARS:
            return _poll_error(
                400,
                f'"sender" must be the conversation\'s sender id (1 to ' f"{MAX_SENDER_CHARS} characters)",
            )
        try:
            since = parse_cursor(request.args.get("since"))
            limit = parse_limit(request.args.get("limit"))
        except BadPoll as bad:
            return _poll_error(400, str(bad))
        store = getattr(getattr(getattr(request.app, "ctx", None), "agent", None), "tracker_store", None)
        if store is None:
            return _poll_error(503, "The bot is not ready yet; try again shortly.")
        try:
            tracker = await store.retrieve(sender)
        except StoreUnavailable as error:  # logged once per outage by the store
            logger.warning("could not read conversation %s for a poll: %s", sender, error)
            return _poll_error(503, "The conversation cannot be read right now; try again.")
        except Exception:  # a store outage is a 503 the client retries, never a 500
            logger.exception("could not read conversation %s for a poll", sender)
            return _poll_error(503, "The conversation cannot be read right now; try again.")
        if tracker is not None and tracker.get_latest_input_channel() != cls.name():
            tracker = None  # not a REST conversation: nothing to fetch here, and no hint
        found, cursor, more = messages_after(tracker.events if tracker else [], since, limit)
        next_cursor = cursor if cursor is not None else since
        return response.json(
            {
                "messages": found,
                "cursor": repr(next_cursor) if next_cursor is not None else "0",
                "more": more,
            },
            ensure_ascii=False,
            headers={"Cache-Control": "no-store"},
        )

    async def delivery_receipt(self, receipt: str) -> Optional[Delivery]:
        """Nothing is pushed to REST clients: they fetch from the poll route."""
        return Delivery(True, False, REST_POLL)

    async def _extract_sender(self, req: Request) -> Optional[Text]:
        sender = _body(req).get("sender")
        if isinstance(sender, int) and not isinstance(sender, bool):
            sender = str(sender)
        if not isinstance(sender, str) or not sender.strip() or len(sender) > MAX_SENDER_CHARS:
            raise InvalidUsage(
                f'"sender" must be a non-empty string of at most {MAX_SENDER_CHARS} '
                "characters identifying the conversation"
            )
        return sender

    def _extract_input_channel(self, req: Request) -> Text:
        """Always ``rest``: the channel decides where agents' replies go (bot/channels/delivery.py)."""
        return self.name()

    def _extract_message(self, req: Request) -> Optional[Text]:
        message = _body(req).get("message")
        if not isinstance(message, str):
            raise InvalidUsage('"message" must be a string (the merchant\'s text)')
        return message

    def get_metadata(self, request: Request) -> Optional[Dict[Text, Any]]:
        metadata = _body(request).get("metadata")
        extra = metadata if isinstance(metadata, dict) else {}
        return {**extra, "channel": "rest"}
