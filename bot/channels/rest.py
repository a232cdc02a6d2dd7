"""Rasa's REST webhook with its input checked, so a broken client gets a 400, not a 500.

Same URL and JSON as Rasa's own channel (POST /webhooks/rest/webhook with
{"sender": "...", "message": "..."}); the answer is a clear 400 when the body is not a JSON
object, the sender is missing, or the message is not text.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Dict, Optional, Text

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput as RasaRestInput
from sanic import Blueprint
from sanic.exceptions import InvalidUsage
from sanic.request import Request

from bot import perf
from bot.channels.limits import limited
from bot.handoff_gate import gate

logger = logging.getLogger(__name__)
perf.apply()

MAX_SENDER_CHARS = 128


def _body(request: Request) -> Dict[str, Any]:
    body = request.json
    if not isinstance(body, dict):
        raise InvalidUsage('The body must be a JSON object: {"sender": "...", "message": "..."}')
    return body


class RestInput(RasaRestInput):
    """posbot's REST channel: Rasa's, plus validation and channel metadata for reports."""

    @classmethod
    def name(cls) -> Text:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        blueprint = limited(super().blueprint(gate(on_new_message)))

        async def close_action_sessions(_app: Any, _loop: Any) -> None:
            await perf.close_sessions()

        blueprint.after_server_stop(close_action_sessions)
        blueprint.after_server_start(perf.freeze_loaded_objects)
        return blueprint

    async def _extract_sender(self, req: Request) -> Optional[Text]:
        sender = _body(req).get("sender")
        if isinstance(sender, int) and not isinstance(sender, bool):
            sender = str(sender)
        if not isinstance(sender, str) or not sender.strip() or len(sender) > MAX_SENDER_CHARS:
            raise InvalidUsage(f'"sender" must be a non-empty string of at most {MAX_SENDER_CHARS} '
                               "characters identifying the conversation")
        return sender

    def _extract_message(self, req: Request) -> Optional[Text]:
        message = _body(req).get("message")
        if not isinstance(message, str):
            raise InvalidUsage('"message" must be a string (the merchant\'s text)')
        return message

    def get_metadata(self, request: Request) -> Optional[Dict[Text, Any]]:
        metadata = _body(request).get("metadata")
        extra = metadata if isinstance(metadata, dict) else {}
        return {**extra, "channel": "rest"}
