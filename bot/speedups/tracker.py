"""Speed-ups of Rasa's event and tracker handling.

Found with py-spy on the Rasa server under ``make bench`` load (2026-11-23):

- ``Event.resolve_by_type`` walks every subclass of ``Event`` (with ``inspect.isabstract`` on
  each) for every event it deserialises: 13 % of the CPU with ten senders. A name → class map,
  rebuilt when a name is missing, returns the same class.
- ``DialogueStateTracker.applied_events`` was computed 6-8 times per message for the same events.
- ``DialogueStateTracker.copy`` replays the whole session before every action (3-4 times per
  message, 5 % of the CPU with 30-message sessions); the replayed state is kept and continued.

``clone_tracker`` and ``remember_replay`` are also used by the tracker store (bot/stores.py).
Registered in bot/speedups/registry.py; compared with Rasa's own code in tests/bot/test_perf.py.
"""

from __future__ import annotations

import copy
import itertools
from typing import Dict, List, Optional, Text, Type

from rasa.shared.core.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    Event,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
)
from rasa.shared.core.trackers import AnySlotDict, DialogueStateTracker
from rasa.shared.utils.common import all_subclasses

from bot.speedups.lru import continues

_original_resolve_by_type = Event.resolve_by_type
_event_types: Dict[Text, Type[Event]] = {}


def _resolve_by_type(type_name: Text, default: Optional[Type[Event]] = None) -> Optional[Type[Event]]:
    found = _event_types.get(type_name)
    if found is None:
        # First match wins, in the order Rasa's own loop would meet the classes.
        for cls in all_subclasses(Event):
            _event_types.setdefault(cls.type_name, cls)
        found = _event_types.get(type_name)
    if found is not None:
        return found
    return _original_resolve_by_type(type_name, default)  # "topic", default, or the error


_original_applied_events = DialogueStateTracker.applied_events


_REWINDING = (Restarted, SessionStarted, ActionReverted, UserUtteranceReverted)


def _applied_events(self: DialogueStateTracker) -> List[Event]:
    """``applied_events`` once per tracker state instead of once per caller (6-8 per message).

    Events are only ever appended to a tracker, so the same event deque with the same length and
    the same last event gives the same answer. When events were appended that Rasa's loop would
    simply append too (no restart, session start, rewind, new loop name or run of a loop), the
    answer is the previous one plus those events; anything else is computed by Rasa's code.
    Callers get their own list.
    """
    events = self.events
    count = len(events)
    last = events[-1] if count else None
    memo = self.__dict__.get("_posbot_applied")
    if memo is not None and memo[0] is events and memo[1] == count and memo[2] is last:
        return list(memo[3])
    applied = None
    if memo is not None and memo[0] is events and 0 < memo[1] < count and (events[memo[1] - 1] is memo[2]):
        added = list(itertools.islice(events, memo[1], None))
        loop_names = memo[4]
        if not any(
            isinstance(e, _REWINDING)
            or (isinstance(e, ActiveLoop) and e.name and e.name not in loop_names)
            or (isinstance(e, ActionExecuted) and e.action_name in loop_names)
            for e in added
        ):
            applied = memo[3] + added
    if applied is None:
        applied = _original_applied_events(self)
        loop_names = frozenset(e.name for e in events if isinstance(e, ActiveLoop) and e.name)
    self.__dict__["_posbot_applied"] = (events, count, last, applied, loop_names)
    return list(applied)


_original_copy = DialogueStateTracker.copy


def clone_tracker(tracker: DialogueStateTracker) -> DialogueStateTracker:
    """A tracker in the same state as ``tracker`` that changes independently of it.

    Copies every attribute an event's ``apply_to`` can change (rasa.shared.core.events:
    slots, the pause, the follow-up action, the latest action, message and bot utterance,
    and the active loop) and shares the event objects, as Rasa's replayed copy does.
    """
    clone = tracker.init_copy()
    clone.events.extend(tracker.events)
    for name, slot in tracker.slots.items():
        clone.slots[name] = copy.copy(slot)
    clone._paused = tracker._paused
    clone.followup_action = tracker.followup_action
    clone.latest_action = dict(tracker.latest_action) if tracker.latest_action is not None else None
    # Logged events are shared, as in Rasa's copy; the placeholders of a tracker without a
    # user message or bot utterance (``UserUttered.empty()``) are its own in Rasa's copy.
    clone.latest_message = _shared_if_logged(tracker, tracker.latest_message)
    clone.latest_bot_utterance = _shared_if_logged(tracker, tracker.latest_bot_utterance)
    clone.active_loop = copy.copy(tracker.active_loop)
    return clone


def _shared_if_logged(tracker: DialogueStateTracker, event: Optional[Event]) -> Optional[Event]:
    """The event itself when it is one of the tracker's (usually among the last few), else a
    copy of the placeholder."""
    if event is None or any(logged is event for logged in reversed(tracker.events)):
        return event
    return copy.deepcopy(event)


def remember_replay(tracker: DialogueStateTracker) -> None:
    """Note that ``tracker`` was just built by replaying its events (``from_events``)."""
    tracker.__dict__["_posbot_replay"] = clone_tracker(tracker)


def _copy(self: DialogueStateTracker) -> DialogueStateTracker:
    """``tracker.copy()``: the state that replaying all events gives, without replaying them.

    Rasa copies the tracker before every action (3-4 times per message) by replaying the
    whole session onto a new tracker (5 % of the CPU with 30-message sessions). The replayed
    state is kept on the tracker (from the tracker store's own replay, or from the first
    copy) and brought up to date with the events added since; each copy is a clone of it.
    A replayed state, not the live one: the processor changes the live tracker without
    events (it clears the follow-up action), and Rasa's copy does not see those changes.
    """
    if isinstance(self.slots, AnySlotDict):  # slots appear as they are set: Rasa's way
        return _original_copy(self)
    replayed = self.__dict__.get("_posbot_replay")
    if replayed is None or not continues(replayed.events, self.events):
        replayed = self.__dict__["_posbot_replay"] = _original_copy(self)
    else:
        for event in itertools.islice(self.events, len(replayed.events), None):
            replayed.update(event)
    return clone_tracker(replayed)
