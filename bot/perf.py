"""Speed-ups for Rasa 3.6 internals that cost more than the work they guard.

Each one gives the same results as the code it replaces, found with py-spy on the Rasa server
under `make bench` load (2026-11-23):

- Rasa validates every action-server response with ``jsonschema.validate``, which re-checks the
  schema itself on every call: about a fifth of the CPU per custom-action turn. The same
  validation with a validator built once gives the same errors at a fraction of the cost.
- ``Event.resolve_by_type`` walks every subclass of ``Event`` (with ``inspect.isabstract`` on
  each) for every event it deserialises: 13 % of the CPU with ten senders. A name → class map,
  rebuilt when a name is missing, returns the same class.

- Every call to the action server (1-3 per message) opened a new aiohttp session and TCP
  connection and encoded the whole tracker with the ``json`` module (6 % of the CPU). One
  long-lived session per event loop and endpoint headers keeps the connection alive and encodes
  with ujson (a Rasa dependency; the decoded JSON is identical, tests/bot/test_perf.py).

- The RulePolicy matches its rules against every state of the session, turn by turn (and
  re-reverses each rule's states on every comparison), although a rule can only look as far back
  as its own length: past the longest rule every rule is applicable by Rasa's own test. It now
  sees the last states up to the longest rule's length, with each rule's reversed states kept,
  and predicts exactly the same (tests/bot/test_states.py predicts every action of recorded
  conversations with the trained policies, with and without the speed-ups).
- Dialogue states are resumed per conversation instead of replayed per call (bot/states.py).

Applied when the server loads our channels (bot/channels) or tracker store (bot/stores.py).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import itertools
import logging
import os
from functools import lru_cache
from typing import Any, Dict, List, Optional, Text, Tuple, Type

import aiohttp
import ujson
from jsonschema import ValidationError
from jsonschema.validators import validator_for
from rasa.core import processor as processor_module
from rasa.core.actions import forms as forms_module
from rasa.core.actions.action import RemoteAction
from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT
from rasa.core.policies import memoization as memoization_module
from rasa.core.policies import rule_policy as rule_policy_module
from rasa.core.policies.policy import Policy
from rasa.core.policies.rule_policy import (
    RULES,
    RULES_FOR_LOOP_UNHAPPY_PATH,
    RulePolicy,
)
from rasa.engine.graph import GraphSchema
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.constants import PREVIOUS_ACTION
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    Event,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import EndpointConfig

from bot import states

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _response_validator() -> Any:
    schema = RemoteAction.action_response_format_spec()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _validator(schema: Dict[Text, Any]) -> Any:
    return validator_for(schema)(schema)


@lru_cache(maxsize=1)
def _response_checks() -> Tuple[Any, Dict[Text, Any]]:
    """The response schema split at its ``oneOf`` over event types.

    Every alternative of Rasa's event schema pins ``event`` to its own constant and ``event`` is
    required, so an event satisfies the ``oneOf`` exactly when it satisfies the alternative named
    by its ``event`` field. Checking that one alternative (instead of all 23, building an error
    for each of the 22 that fail) accepts the same responses.
    """
    schema = copy.deepcopy(RemoteAction.action_response_format_spec())
    event_schema = schema["properties"]["events"]["items"]
    alternatives = event_schema.pop("oneOf")
    by_type = {alt["properties"]["event"]["const"]: _validator(alt) for alt in alternatives}
    if len(by_type) != len(alternatives):  # pragma: no cover - a changed Rasa schema
        raise RuntimeError("event alternatives are not distinguished by their constant")
    return _validator(schema), by_type


def _valid_response(result: Dict[Text, Any]) -> bool:
    outer, by_type = _response_checks()
    if not outer.is_valid(result):
        return False
    for event in result.get("events") or []:
        check = by_type.get(event["event"])
        if check is None or not check.is_valid(event):
            return False
    return True


def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
    try:
        if _valid_response(result):
            return True
        _response_validator().validate(result)  # Rasa's full check, for Rasa's error message
        return True
    except ValidationError as e:
        e.message += (
            ". Failed to validate Action server response from API, make sure your response "
            f"from the Action endpoint is valid. For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise e


_original_resolve_by_type = Event.resolve_by_type
_event_types: Dict[Text, Type[Event]] = {}


def _resolve_by_type(type_name: Text, default: Optional[Type[Event]] = None
                     ) -> Optional[Type[Event]]:
    found = _event_types.get(type_name)
    if found is None:
        # First match wins, in the order Rasa's own loop would meet the classes.
        for cls in all_subclasses(Event):
            _event_types.setdefault(cls.type_name, cls)
        found = _event_types.get(type_name)
    if found is not None:
        return found
    return _original_resolve_by_type(type_name, default)  # "topic", default, or the error


_original_session = EndpointConfig.session
_shared_sessions: Dict[Any, aiohttp.ClientSession] = {}


class _LentSession:
    """``async with`` hands out a long-lived session and leaves it open afterwards."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self._session

    async def __aexit__(self, *exc_info: Any) -> None:
        return None


def _session(self: EndpointConfig) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _original_session(self)
    key = (id(loop), tuple(sorted((self.headers or {}).items())),
           tuple(sorted((self.basic_auth or {}).items())))
    session = _shared_sessions.get(key)
    if session is None or session.closed:
        # The same settings as EndpointConfig.session, plus the encoder.
        auth = (aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"])
                if self.basic_auth else None)
        session = aiohttp.ClientSession(
            headers=self.headers, auth=auth, json_serialize=ujson.dumps,
            timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT))
        _shared_sessions[key] = session
    return _LentSession(session)


async def close_sessions() -> None:
    """Close the shared sessions of the running loop (server shutdown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _shared_sessions if k[0] == loop_id]:
        await _shared_sessions.pop(key).close()


_reversed_rules: Dict[Text, List[State]] = {}


def _is_rule_applicable(self: RulePolicy, rule_key: Text, turn_index: int,
                        conversation_state: State) -> bool:
    # Rasa 3.6.21 RulePolicy._is_rule_applicable with the reversed rule states kept.
    reversed_rule_states = _reversed_rules.get(rule_key)
    if reversed_rule_states is None:
        reversed_rule_states = list(reversed(self._rule_key_to_state(rule_key)))
        _reversed_rules[rule_key] = reversed_rule_states
    if turn_index >= len(reversed_rule_states):
        return True
    current_previous_action = conversation_state.get(PREVIOUS_ACTION)
    rule_previous_action = reversed_rule_states[turn_index].get(PREVIOUS_ACTION)
    if not rule_previous_action and not current_previous_action:
        return True
    if not rule_previous_action or not current_previous_action:
        return False
    return self._does_rule_match_state(reversed_rule_states[turn_index], conversation_state)


def rule_window(policy: RulePolicy) -> int:
    """Length in states of the policy's longest rule (normal and loop-unhappy-path rules)."""
    window = policy.__dict__.get("_posbot_rule_window")
    if window is None:
        keys = [*policy.lookup.get(RULES, {}), *policy.lookup.get(RULES_FOR_LOOP_UNHAPPY_PATH, {})]
        window = max((len(policy._rule_key_to_state(key)) for key in keys), default=0) + 1
        policy.__dict__["_posbot_rule_window"] = window
    return window


def _rule_prediction_states(self: RulePolicy, tracker: Any, domain: Any,
                            use_text_for_last_user_input: bool = False,
                            rule_only_data: Optional[Dict[Text, Any]] = None) -> List[State]:
    found = Policy._prediction_states(self, tracker, domain, use_text_for_last_user_input,
                                      rule_only_data)
    return found[-rule_window(self):]


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
    if memo is not None and memo[0] is events and 0 < memo[1] < count and (
            events[memo[1] - 1] is memo[2]):
        added = list(itertools.islice(events, memo[1], None))
        loop_names = memo[4]
        if not any(isinstance(e, _REWINDING)
                   or (isinstance(e, ActiveLoop) and e.name and e.name not in loop_names)
                   or (isinstance(e, ActionExecuted) and e.action_name in loop_names)
                   for e in added):
            applied = memo[3] + added
    if applied is None:
        applied = _original_applied_events(self)
        loop_names = frozenset(e.name for e in events if isinstance(e, ActiveLoop) and e.name)
    self.__dict__["_posbot_applied"] = (events, count, last, applied, loop_names)
    return list(applied)


_original_minimal_graph_schema = GraphSchema.minimal_graph_schema
_minimal_schemas: Dict[Tuple[int, Tuple[Text, ...]], Tuple[GraphSchema, GraphSchema]] = {}


def _minimal_graph_schema(self: GraphSchema, targets: Optional[List[Text]] = None
                          ) -> GraphSchema:
    """Rasa prunes the prediction graph to the requested targets on every run (2-4 per
    message); the graph of a loaded model does not change, so each pruning is kept."""
    key = (id(self), tuple(targets or ()))
    kept = _minimal_schemas.get(key)
    if kept is None or kept[0] is not self:
        kept = (self, _original_minimal_graph_schema(self, targets))
        _minimal_schemas[key] = kept
    return kept[1]


class _LogOnlyCopy:
    """The ``copy`` module for Rasa modules that deep-copy only what they pass to debug logs.

    Rasa copies the events, slots and states of every turn for ``structlogger.debug`` calls,
    even when debug logging is off and the copies are dropped unread. Below debug level the
    copy is skipped; with ``--debug`` it is made as before. tests/bot/test_perf.py checks that
    every use of ``copy`` in these modules is an argument of a debug call.
    """

    _rasa_logger = logging.getLogger("rasa")

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if self._rasa_logger.isEnabledFor(logging.DEBUG):
            return copy.deepcopy(value, memo)
        return value

    def __getattr__(self, name: Text) -> Any:
        return getattr(copy, name)


LOG_ONLY_COPY_MODULES = [processor_module, rule_policy_module, memoization_module, forms_module]

# (owner, attribute, replacement); the originals are kept for ``revert``.
_PATCHES: List[Tuple[Any, Text, Any]] = [
    (RemoteAction, "_validate_action_result", _validate_action_result),
    (EndpointConfig, "session", _session),
    (Event, "resolve_by_type", staticmethod(_resolve_by_type)),
    (RulePolicy, "_is_rule_applicable", _is_rule_applicable),
    (RulePolicy, "_prediction_states", _rule_prediction_states),
    (Domain, "states_for_tracker_history", states.states_for_tracker_history),
    (DialogueStateTracker, "applied_events", _applied_events),
    (GraphSchema, "minimal_graph_schema", _minimal_graph_schema),
    *[(module, "copy", _LogOnlyCopy()) for module in LOG_ONLY_COPY_MODULES],
]
_ORIGINALS = {(owner, name): owner.__dict__.get(name) for owner, name, _ in _PATCHES}


async def freeze_loaded_objects(*_: Any) -> None:
    """Exempt everything loaded at start (model, TensorFlow, domain) from garbage collection.

    Python's full collections walk every object the process holds, millions of them once the
    model is loaded, while the objects a message creates are short-lived. ``gc.freeze`` moves
    the start-up objects out of the collector's way (docs.python.org/3/library/gc.html).
    """
    if os.environ.get("POSBOT_GC_FREEZE", "1") != "0":
        gc.collect()
        gc.freeze()
        logger.debug("froze %d start-up objects", gc.get_freeze_count())


def apply() -> None:
    """Install the speed-ups (idempotent). ``POSBOT_RASA_PATCHES=0`` leaves Rasa as it is."""
    if os.environ.get("POSBOT_RASA_PATCHES", "1") == "0":
        return
    for owner, name, replacement in _PATCHES:
        setattr(owner, name, replacement)


def revert() -> None:
    """Put Rasa's own code back (tests compare both)."""
    for (owner, name), original in _ORIGINALS.items():
        if original is None:
            if name in owner.__dict__:
                delattr(owner, name)
        else:
            setattr(owner, name, original)
