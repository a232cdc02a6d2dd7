"""A polite "请稍后再发一次" when the conversation store or the conversation locks are unreachable.

Rasa 3.6 hides a tracker store failure: ``Agent`` wraps every tracker store in
``FailSafeTrackerStore``, which turns a failed read into *no conversation* (the message is then
answered from an empty tracker, without the slots it had) and a failed save into an in-memory
copy that is never read again. A lock store failure (Redis down) raises ``LockError`` from
``lock_store.lock(...)``; Rasa's REST channel then answers ``[]`` and the widget gets nothing.

Here instead:

* ``bot/stores.py`` raises :class:`StoreUnavailable` when the database fails, and
  bot/speedups/outage.py lets exactly that exception through ``FailSafeTrackerStore`` (its two
  error hooks re-raise it; every other error keeps Rasa's behaviour). It is installed with the
  speed-ups by bot/serve.py at start (registry entries ``outage-read`` and ``outage-save``).
  A failed read stops the turn before NLU and actions run; a failed save stores nothing (one
  transaction).
* :func:`guard` wraps each merchant channel's ``on_new_message`` (REST, widget, WeChat): on
  ``StoreUnavailable`` or ``LockError`` it drops whatever the turn had produced so far (a
  collecting output channel's messages, the widget's held messages) and sends ONE polite text
  (``service_unavailable`` in ``bot/outage_texts.yml``), logging one warning line. The message is
  not stored; the merchant sends it again once the service is back and the conversation goes on
  from its last stored turn.

The stores log the outage itself once ("not usable") and once more when it is over.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import yaml
from rasa.core.channels.channel import UserMessage
from rasa.core.lock_store import LockError

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
TEXTS_PATH = Path(__file__).with_name("outage_texts.yml")


class StoreUnavailable(RuntimeError):
    """The tracker store could not read or write a conversation (its database is unreachable).

    Raised by ``bot.stores.CachedSQLTrackerStore`` instead of letting Rasa's
    ``FailSafeTrackerStore`` turn the failure into an empty conversation.
    """


#: What makes a message unanswerable for now: the conversation cannot be read, stored or locked.
OUTAGES = (StoreUnavailable, LockError)


def load_text(path: Path = TEXTS_PATH) -> str:
    """The polite text; a missing or empty one stops the server at start-up, not at an outage."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    text = data.get("service_unavailable") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}: `service_unavailable` must be a non-empty text")
    return text.strip()


SERVICE_UNAVAILABLE = load_text()


def describe(error: BaseException) -> str:
    """One short line for the log: no SQL, no parameters (they hold merchants' messages)."""
    original = getattr(error, "orig", None)  # SQLAlchemy's DBAPIError: the driver's own error
    shown = original if isinstance(original, BaseException) else error
    lines = [line.strip() for line in str(shown).splitlines() if line.strip()]
    return f"{type(shown).__name__}: {lines[0][:200]}" if lines else type(shown).__name__


def _drop_held(output: Any) -> None:
    """Forget what the failed turn produced, so the merchant reads only the apology."""
    discard: Optional[Callable[[], None]] = getattr(output, "discard", None)
    if callable(discard):
        discard()
    elif isinstance(getattr(output, "messages", None), list):  # CollectingOutputChannel
        output.messages.clear()


async def apologise(message: UserMessage) -> None:
    """Send the polite text through the merchant's own channel (instead of the turn's output)."""
    output = message.output_channel
    if output is None:
        return
    _drop_held(output)
    await output.send_text_message(message.sender_id, SERVICE_UNAVAILABLE)


def guard(on_new_message: OnNewMessage) -> OnNewMessage:
    """``on_new_message`` that answers an outage with the polite text instead of failing."""

    async def handle(message: UserMessage) -> Any:
        try:
            return await on_new_message(message)
        except OUTAGES as error:
            what = (
                "conversation store" if isinstance(error, StoreUnavailable) else "conversation lock (Redis)"
            )
            logger.warning(
                "%s message from %s not handled, the %s is unavailable (%s); "
                "the merchant was asked to send it again",
                message.input_channel,
                message.sender_id,
                what,
                describe(error),
            )
            await apologise(message)
            return None

    return handle
