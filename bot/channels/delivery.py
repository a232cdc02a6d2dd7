"""Did a message pushed into a conversation reach the merchant? (issue 16: agent replies.)

The staff console writes an agent's reply into the merchant's conversation through Rasa's API
(``POST /conversations/{id}/tracker/events?execute_side_effects=true&output_channel=latest``).
Rasa then hands the message to the output channel of the channel the merchant last wrote from
(``InputChannel.get_output_channel()``), and answers with the tracker only: whether the message
reached the merchant's screen is not in that answer. This module carries that fact back:

* the event carries a receipt id in its metadata (``RECEIPT_KEY``, which Rasa merges into the
  message handed to the output channel);
* a channel that can tell (WeChat: customer-service message sent, or kept for later) records the
  outcome under that id and answers :meth:`ReportsDelivery.delivery_receipt`;
* a channel that cannot be pushed to (REST) answers with the reason at once;
* a channel that pushes without a failure signal (the widget's socket.io) counts as delivered.

The reason codes are part of the staff API; ``web/staff/staff.js`` shows them in Chinese.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

#: Metadata key of the bot event; Rasa merges event metadata into the outgoing message.
RECEIPT_KEY = "posbot_receipt"

#: Rasa did not take the message (API down or refused): nothing was stored.
NOT_ACCEPTED = "not_accepted"
#: WeChat refused with 45015: the merchant has not written for 48 hours (or unfollowed).
WECHAT_WINDOW_CLOSED = "wechat_window_closed"
#: WeChat refused with 45047: too many pushed messages since the merchant last wrote.
WECHAT_LIMIT = "wechat_limit"
#: No WECHAT_APP_SECRET: the customer-service message API cannot be called at all.
WECHAT_NO_SECRET = "wechat_no_secret"
#: Any other WeChat API failure (network, token, permission).
WECHAT_ERROR = "wechat_error"
#: WeChat could not send and the message could not be kept either (Redis down).
WECHAT_NOT_KEPT = "wechat_not_kept"
#: REST clients fetch messages from GET /webhooks/rest/messages; nothing can be pushed.
REST_POLL = "rest_poll"
#: The merchant's channel has no way to push (or is not mounted on this server).
NOT_PUSHABLE = "not_pushable"
#: The channel should have recorded the outcome but did not (another process, store outage).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Delivery:
    """What happened to one pushed message."""

    #: Rasa stored the message in the conversation.
    accepted: bool
    #: It reached the merchant now (False: kept for later, fetched by the client, or lost).
    delivered: bool
    #: A code above when not delivered.
    reason: Optional[str] = None

    def as_json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "reason": self.reason}


DELIVERED = Delivery(True, True, None)


@runtime_checkable
class ReportsDelivery(Protocol):
    """An input channel that knows what became of the messages pushed through it."""

    async def delivery_receipt(self, receipt: str) -> Optional[Delivery]:
        """The outcome recorded for ``receipt``, or None when nothing was recorded."""
        ...


@runtime_checkable
class KeepsUndelivered(Protocol):
    """An input channel that keeps messages it could not push, for the merchant's next turn."""

    async def undelivered(self, conversation_id: str) -> int:
        """How many messages wait for ``conversation_id``'s next message."""
        ...


def input_channel(app: Any, name: Optional[str]) -> Any:
    """The input channel called ``name`` mounted on the Rasa server ``app``, or None."""
    if not name:
        return None
    for channel in getattr(getattr(app, "ctx", None), "input_channels", None) or []:
        if channel.name() == name:
            return channel
    return None


async def delivery_via(channel: Any, receipt: str) -> Delivery:
    """What the merchant's channel did with the message Rasa accepted under ``receipt``."""
    if channel is None:
        return Delivery(True, False, NOT_PUSHABLE)
    if isinstance(channel, ReportsDelivery):
        return await channel.delivery_receipt(receipt) or Delivery(True, False, UNKNOWN)
    if channel.get_output_channel() is not None:
        return DELIVERED  # e.g. the widget: socket.io pushes, with no failure signal
    return Delivery(True, False, NOT_PUSHABLE)


def agent_said(custom: Any) -> Optional[dict[str, str]]:
    """``{"name", "text"}`` when a message's custom JSON is an agent's words, else None.

    The staff console writes them as a bot event with
    ``data.custom = {"posbot": {"agent_message": {"name": ..., "text": ...}}}``.
    """
    posbot = custom.get("posbot") if isinstance(custom, dict) else None
    said = posbot.get("agent_message") if isinstance(posbot, dict) else None
    if not isinstance(said, dict):
        return None
    return {"name": str(said.get("name") or ""), "text": str(said.get("text") or "")}
