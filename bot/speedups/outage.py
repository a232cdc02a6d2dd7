"""Let ``StoreUnavailable`` through Rasa's ``FailSafeTrackerStore`` (not a speed-up: a fix).

Rasa 3.6 wraps every tracker store in ``FailSafeTrackerStore``, whose ``retrieve`` / ``save`` /
``keys`` catch every exception and call ``on_tracker_store_retrieve_error`` or
``on_tracker_store_error`` with it before falling back (an empty conversation, or a turn kept in
memory and never read again). Re-raising from those hooks ends the fallback for this one
exception type, so the channels can ask the merchant to send the message again (bot/outage.py);
every other error keeps Rasa's behaviour. Registered in bot/speedups/registry.py (always on).
"""

from __future__ import annotations

from rasa.core.tracker_store import FailSafeTrackerStore

from bot.outage import StoreUnavailable

_original_on_error = FailSafeTrackerStore.on_tracker_store_error
_original_on_retrieve_error = FailSafeTrackerStore.on_tracker_store_retrieve_error


def on_tracker_store_error(self: FailSafeTrackerStore, error: Exception) -> None:
    if isinstance(error, StoreUnavailable):
        raise error
    _original_on_error(self, error)


def on_tracker_store_retrieve_error(self: FailSafeTrackerStore, error: Exception) -> None:
    if isinstance(error, StoreUnavailable):
        raise error
    _original_on_retrieve_error(self, error)
