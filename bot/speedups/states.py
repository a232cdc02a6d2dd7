"""Dialogue states computed once per conversation turn instead of once per policy call.

Rasa's policies see the conversation as a list of states, one per bot action
(``Domain.states_for_tracker_history``). Rasa 3.6 rebuilds that list from the first event of the
session on every call: it replays every event into a fresh tracker and builds a state at every
action. The RulePolicy asks twice per prediction and the MemoizationPolicy once, 2-3 predictions
per message, so the whole session was replayed 6-8 times per message and the cost grew with the
length of the conversation (the largest share of the Rasa server's CPU under ``make bench``).

The list is a left fold over the applied events: the state at an action depends only on the
events before it. This module keeps that fold per conversation and resumes it:

- the applied events of the new call are compared, object for object, with those of the last
  call (the tracker store hands out the same event objects, bot/stores.py);
- the same events again (the RulePolicy asks twice per prediction) get the kept answer; new
  events continue the fold from where the last call ended;
- otherwise the fold resumes from the latest checkpoint inside the common prefix. Checkpoints are taken
  before each user message and each run of a form: a form folds its previous turn away (Rasa's
  ``applied_events`` undoes happy-path loop turns back to the form's previous run), a rewind
  resumes from an earlier checkpoint, a restart from the start;
- everything after the checkpoint is computed by the same steps as Rasa's loop, copied below.

Callers get fresh state dicts (featurizers delete keys from them), so the kept fold never changes.
tests/bot/test_states.py compares every prefix of recorded conversations with Rasa's own code.
``POSBOT_STATES_CACHE`` (``Settings.states_cache``) sets how many (conversation, policy settings)
folds are kept (0 = off); :func:`configure` applies it when the speed-ups are installed
(bot/speedups/registry.py).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Text

from rasa.shared.core import constants
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.events import ActionExecuted, Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot.speedups.lru import LRU, shared_prefix

DEFAULT_KEPT_FOLDS = 256
#: Checkpoints kept per fold: one before each user message and each run of a form (Rasa folds a
#: form's happy-path turns back to its previous run).
CHECKPOINTS = 6

_original = Domain.states_for_tracker_history


@dataclass
class _Checkpoint:
    position: int  # applied events consumed
    tracker: DialogueStateTracker  # replay tracker after them (never mutated once stored)
    n_states: int
    last_ml_action_sub_state: Any
    turn_was_hidden: bool


@dataclass
class _Fold:
    applied: List[Event]
    states: List[State]  # states at the actions, without the final state
    final: Optional[State]  # the state after the last event (None: that turn is hidden)
    end: _Checkpoint  # the fold after the last event
    checkpoints: List[_Checkpoint] = field(default_factory=list)


def _replay_copy(tracker: DialogueStateTracker) -> DialogueStateTracker:
    """A copy that evolves independently under ``update`` (what the fold's replay touches)."""
    new = copy.copy(tracker)
    new.slots = {name: copy.copy(slot) for name, slot in tracker.slots.items()}
    new.events = tracker._create_events(list(tracker.events))
    new.active_loop = copy.copy(tracker.active_loop)
    return new


def _fresh(state: State) -> State:
    """A state the caller may change without touching the kept one.

    Rasa's featurizers delete keys from a state and from its user sub-state (text or intent of
    the last message); the other sub-states are only read.
    """
    fresh = dict(state)
    if constants.USER in fresh:
        fresh[constants.USER] = dict(fresh[constants.USER])
    return fresh


class _Folds(LRU):
    def __init__(self, limit: int = DEFAULT_KEPT_FOLDS) -> None:
        super().__init__(limit)
        self.resumed_events = 0
        self.replayed_events = 0


FOLDS = _Folds()


def configure(kept_folds: int) -> None:
    """How many folds are kept (``POSBOT_STATES_CACHE``); 0 computes every call with Rasa's code."""
    FOLDS.limit = max(0, int(kept_folds))
    while len(FOLDS) > FOLDS.limit:
        FOLDS.popitem(last=False)


def states_for_tracker_history(
    self: Domain,
    tracker: DialogueStateTracker,
    omit_unset_slots: bool = False,
    ignore_rule_only_turns: bool = False,
    rule_only_data: Optional[Dict[Text, Any]] = None,
) -> List[State]:
    """Same result as ``Domain.states_for_tracker_history``, resumed from the last call."""
    if FOLDS.limit <= 0:
        return _original(self, tracker, omit_unset_slots, ignore_rule_only_turns, rule_only_data)
    key = (
        tracker.sender_id,
        id(self),
        tracker.is_rule_tracker,
        tuple(tracker.slots),
        omit_unset_slots,
        ignore_rule_only_turns,
        json.dumps(rule_only_data, sort_keys=True, default=str),
    )
    applied = tracker.applied_events()

    fold = FOLDS.get(key)
    start: Optional[_Checkpoint] = None
    if fold is not None:
        common = shared_prefix(fold.applied, applied)
        if common == len(applied) == len(fold.applied):  # asked again (RulePolicy asks twice)
            finals = [] if fold.final is None else [fold.final]
            return [_fresh(state) for state in (*fold.states, *finals)]
        start = max(
            (c for c in (*fold.checkpoints, fold.end) if c.position <= common),
            key=lambda c: c.position,
            default=None,
        )
    if start is None:
        replay = tracker.init_copy()
        states: List[State] = []
        last_ml_action_sub_state = None
        turn_was_hidden = False
        position = 0
        checkpoints: List[_Checkpoint] = []
    else:
        replay = _replay_copy(start.tracker)
        states = fold.states[: start.n_states]
        last_ml_action_sub_state = start.last_ml_action_sub_state
        turn_was_hidden = start.turn_was_hidden
        position = start.position
        checkpoints = [c for c in fold.checkpoints if c.position <= start.position]
    forms = set(self.form_names)
    FOLDS.resumed_events += position
    FOLDS.replayed_events += len(applied) - position

    def step(tr: DialogueStateTracker, hide_rule_turn: bool) -> None:
        # Rasa 3.6.21 Domain.states_for_tracker_history, the body of its loop.
        nonlocal last_ml_action_sub_state, turn_was_hidden
        if ignore_rule_only_turns:
            if not turn_was_hidden:
                last_ml_action_sub_state = self._get_prev_action_sub_state(tr)
            if not tr.followup_action and not tr.latest_action_name == tr.active_loop_name:
                turn_was_hidden = hide_rule_turn
            if turn_was_hidden:
                return
        state = self.get_active_state(tr, omit_unset_slots=omit_unset_slots)
        if ignore_rule_only_turns:
            self._remove_rule_only_features(state, rule_only_data)
            if states:
                self._substitute_rule_only_user_input(state, states[-1])
            if last_ml_action_sub_state:
                state[constants.PREVIOUS_ACTION] = last_ml_action_sub_state
        states.append(self._clean_state(state))

    for index in range(position, len(applied)):
        event = applied[index]
        if index > position and (
            isinstance(event, UserUttered)
            or (isinstance(event, ActionExecuted) and event.action_name in forms)
        ):
            checkpoints.append(
                _Checkpoint(
                    index, _replay_copy(replay), len(states), last_ml_action_sub_state, turn_was_hidden
                )
            )
            del checkpoints[:-CHECKPOINTS]
        if isinstance(event, ActionExecuted):
            step(replay, event.hide_rule_turn)
        replay.update(event)

    # The fold after the last event; ``replay`` is not changed from here on.
    end = _Checkpoint(len(applied), replay, len(states), last_ml_action_sub_state, turn_was_hidden)
    kept_states = list(states)
    # The state after the last event (Rasa's final ``yield tracker, False``).
    step(replay, False)
    final = states[-1] if len(states) > len(kept_states) else None
    FOLDS.put(key, _Fold(list(applied), kept_states, final, end, checkpoints))
    return [_fresh(state) for state in states]
