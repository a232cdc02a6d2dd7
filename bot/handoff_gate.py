"""No silence while a merchant waits for a person.

While a handoff is open the bot is paused (Rasa's ``ConversationPaused``): Rasa logs the
merchant's messages, for the agent to read, but answers none. This gate sits in front of every
merchant channel (REST, widget, WeChat wrap their ``on_new_message`` with it) and makes sure no
message meets silence:

* waiting for an agent → the message is logged and acknowledged ("已收到……您前面还有 N 位"), with
  a 取消转人工 button;
* "取消转人工" (words: vocabulary.yml ``handoff_cancel``) → the bot is resumed at once and says so;
  typed with no handoff open, it is answered instead of starting a new handoff;
* nobody claimed it within ``POSBOT_HANDOFF_TIMEOUT_MIN`` minutes (default 10) → the bot is
  resumed, says so, and answers this message itself;
* an agent claimed it (the staff console) → the message is logged for the agent, no bot ack.

The texts are the domain's responses (bot/domain/conversations.yml). The gate works inside the
Rasa server only (it needs the agent's tracker and lock stores); elsewhere it passes messages on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from typing import Any, Awaitable, Callable, Dict, List, Optional

from rasa.core.channels.channel import UserMessage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, ConversationResumed

from kb.schema import utcnow
from kb.store import shared_store
from records.store import HANDOFF_ACTIVE, HANDOFF_WAITING, RecordStore

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
DEFAULT_TIMEOUT_MIN = 10
RELEASED_SIGNAL = {"posbot": {"handoff": "released"}}


def timeout_minutes(env: Optional[Dict[str, str]] = None) -> float:
    raw = (os.environ if env is None else env).get("POSBOT_HANDOFF_TIMEOUT_MIN", "").strip()
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_MIN
    except ValueError:
        logger.warning("POSBOT_HANDOFF_TIMEOUT_MIN=%r is not a number: using %s", raw, DEFAULT_TIMEOUT_MIN)
        return DEFAULT_TIMEOUT_MIN


def rasa_agent() -> Any:
    """The Rasa server's agent, or None outside `rasa run` (tests of single channels)."""
    from sanic import Sanic

    for name in ("rasa_server", "rasa_core_no_api"):  # `rasa run` with / without --enable-api
        try:
            return getattr(Sanic.get_app(name).ctx, "agent", None)
        except Exception:  # SanicException: no app of that name in this process
            continue
    return None


async def resume(agent: Any, sender_id: str) -> None:
    """Un-pause the conversation, as `posbot handoff release` does over the HTTP API."""
    async with agent.lock_store.lock(sender_id):
        tracker = await agent.tracker_store.get_or_create_tracker(sender_id)
        tracker.update(ConversationResumed())
        tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
        await agent.tracker_store.save(tracker)


async def say(agent: Any, message: UserMessage, response: str, **values: Any) -> None:
    """Send a domain response (text and buttons) through the merchant's own channel."""
    variants: List[Dict[str, Any]] = (agent.domain.responses or {}).get(response) or []
    if not variants or message.output_channel is None:
        return
    text = str(variants[0].get("text") or "").format(**values)
    buttons = list(variants[0].get("buttons") or [])
    if buttons:
        await message.output_channel.send_text_with_buttons(message.sender_id, text, buttons)
    else:
        await message.output_channel.send_text_message(message.sender_id, text)


def gate(on_new_message: OnNewMessage) -> OnNewMessage:
    async def handle(message: UserMessage) -> Any:
        agent = rasa_agent()
        text = str(message.text or "")
        if agent is None or not message.sender_id or not text.strip():
            return await on_new_message(message)

        def look() -> tuple[RecordStore, Any, bool]:
            store = shared_store()
            records = RecordStore(store.engine)
            return (
                records,
                records.open_handoff(message.sender_id),
                not text.startswith("/") and store.mentions(text, "handoff_cancel"),
            )

        try:  # in a worker thread: a slow database must not stall other merchants
            records, open_handoff, cancels = await asyncio.to_thread(look)
        except Exception as error:  # the records database is down: never block the merchant
            # one line per message during an outage; the traceback (with its SQL) only at DEBUG
            cause = getattr(error, "orig", None) or error
            logger.warning(
                "handoff gate: could not read the handoff of %s (%s), passing the " "message on",
                message.sender_id,
                type(cause).__name__,
            )
            logger.debug("handoff gate: the failure in full", exc_info=True)
            return await on_new_message(message)
        if open_handoff is None:
            if cancels:
                await say(agent, message, "utter_handoff_nothing_to_cancel")
                return None
            return await on_new_message(message)
        if cancels:
            await resume(agent, message.sender_id)
            await asyncio.to_thread(records.mark_released, open_handoff.id)
            await message.output_channel.send_custom_json(message.sender_id, RELEASED_SIGNAL)
            await say(agent, message, "utter_handoff_cancelled")
            logger.info("handoff %s cancelled by the merchant", open_handoff.id)
            return None
        minutes = timeout_minutes()
        if open_handoff.status == HANDOFF_WAITING and utcnow() - open_handoff.created_at >= timedelta(
            minutes=minutes
        ):
            await resume(agent, message.sender_id)
            await asyncio.to_thread(records.mark_released, open_handoff.id)
            await message.output_channel.send_custom_json(message.sender_id, RELEASED_SIGNAL)
            await say(agent, message, "utter_handoff_timeout", minutes=f"{minutes:g}")
            logger.info("handoff %s returned to the bot after %s minutes", open_handoff.id, minutes)
            return await on_new_message(message)
        result = await on_new_message(message)  # logged in the paused conversation
        if open_handoff.status != HANDOFF_ACTIVE:
            ahead = await asyncio.to_thread(records.waiting_before, open_handoff.id)
            ack = "utter_handoff_waiting_ack" if ahead else "utter_handoff_waiting_ack_next"
            await say(agent, message, ack, ahead=ahead)
        return result

    return handle
