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

Found the same way on 2026-11-24, when the Rasa server took 21 ms of CPU per message:

- Which rules apply to the last states is kept per state window (10 % of the CPU went to
  testing every rule against every state, for the same few hundred windows again and again).
- Every action call turned the whole session into dicts and JSON again (10 %); earlier turns'
  events keep their JSON, and the request body stays the same bytes.
- DIET's prediction skips tf.function's per-call signature handling and calls the one traced
  graph with the inputs converted the same way (a fifth of the NLU time).

Together: 21 → 14.6 ms of CPU per message with ten senders (tests/bot/test_perf.py checks each
against Rasa's own code on recorded conversations, the dev set and the trained model).
The first-come-first-served gate for messages (bot/admission.py) is installed from here too.

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
from typing import Any, Dict, List, Optional, Set, Text, Tuple, Type

import aiohttp
import rasa
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
    UserUttered,
)
from rasa.shared.core.trackers import AnySlotDict, DialogueStateTracker, EventVerbosity
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import EndpointConfig
from rasa.utils.tensorflow import models as tf_models_module
from rasa.utils.tensorflow.models import RasaModel

from bot import admission, states
from bot.lru import LRU, continues

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
#: Seconds an idle connection to the action server is kept for reuse. It must stay below the
#: action server's own keep-alive timeout (Sanic's KEEP_ALIVE_TIMEOUT, 5 s by default): a
#: connection the server has just closed, picked from the pool as its FIN arrives, fails with
#: "Cannot write to closing transport" and Rasa drops the action's events — a form then took
#: the merchant's answer and said nothing (found 2026-11-30; aiohttp's default is 15 s).
ACTION_KEEPALIVE_S = 2.0


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
            connector=aiohttp.TCPConnector(keepalive_timeout=ACTION_KEEPALIVE_S),
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


class _EncodedJson:
    """A value that ujson writes as the JSON text it holds (ujson calls ``__json__``)."""

    __slots__ = ("text",)

    def __init__(self, text: Text) -> None:
        self.text = text

    def __json__(self) -> Text:
        return self.text


def _event_json(event: Event) -> Text:
    return ujson.dumps(event.as_dict())


# first event of a session → (the settled events, their JSON joined by commas)
SETTLED_RUNS_KEPT = 128
_settled_runs: LRU = LRU(SETTLED_RUNS_KEPT)


def _settled_run(events: List[Event]) -> _EncodedJson:
    """The settled events of a session as one piece of JSON (list items joined by commas).

    Each conversation's run is kept and extended turn by turn with the events that settled
    since, for the ``SETTLED_RUNS_KEPT`` conversations used last (at most ~150 KB each, for a
    30-message session); it is used only while the events are the same objects, so an event
    copied and changed (Rasa does that for fallbacks) is encoded again. One joined piece also
    spares ujson its slow ``__json__`` call per event (0.3 ms for 350 events).
    """
    kept = _settled_runs.get(id(events[0]))
    if kept is not None and continues(kept[0], events):
        known, text = kept
        if len(known) < len(events):
            text = ",".join([text, *map(_event_json, events[len(known):])])
    else:
        text = ",".join(map(_event_json, events))
    _settled_runs.put(id(events[0]), (events, text))
    return _EncodedJson(text)


_original_action_call_format = RemoteAction._action_call_format


def _action_call_format(self: RemoteAction, tracker: DialogueStateTracker, domain: Domain
                        ) -> Dict[Text, Any]:
    """Rasa's request to the action server, with earlier turns' events encoded only once.

    Every call sends the whole session (a 30-message session is ~350 events, 137 KB), and Rasa
    turned every event into a dict and then into JSON again for each of the 1-3 calls of every
    message: a tenth of the CPU per message. Events of earlier turns never change, so their JSON
    is kept per conversation; the events from the latest user message on are encoded fresh.
    The shared action session encodes with ujson, which writes the kept text where it finds
    it: the request body is the same text, byte for byte (tests/bot/test_perf.py).
    """
    events = list(tracker.events)
    settled = len(events)
    for index in range(len(events) - 1, -1, -1):
        settled = index
        if isinstance(events[index], UserUttered):
            break
    state = tracker.current_state(EventVerbosity.NONE)
    state["events"] = [*([_settled_run(events[:settled])] if settled else []),
                       *(event.as_dict() for event in events[settled:])]
    result = {"next_action": self._name, "sender_id": tracker.sender_id, "tracker": state,
              "version": rasa.__version__}
    if (not self._is_selective_domain_enabled()
            or domain.does_custom_action_explicitly_need_domain(self.name())):
        result["domain"] = domain.as_dict()
    return result


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
    clone.latest_action = (dict(tracker.latest_action) if tracker.latest_action is not None
                           else None)
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


_original_get_possible_keys = RulePolicy._get_possible_keys
POSSIBLE_KEYS_KEPT = 4096


def _frozen_states(states: List[State]) -> Any:
    """The states as a hashable value that is equal exactly when the states are equal."""
    return tuple(tuple(sorted((kind, tuple(sorted(sub.items()))) for kind, sub in state.items()))
                 for state in states)


def _get_possible_keys(self: RulePolicy, lookup: Dict[Text, Text], states: List[State]
                       ) -> Set[Text]:
    """Rasa tests every rule against the last states, rule by rule, 2-4 times per message.

    Which rules apply depends on nothing but the rules and the states, and conversations pass
    through the same few hundred states again and again, so each answer is kept (per policy and
    rule table, ``POSSIBLE_KEYS_KEPT`` answers at most).
    """
    kept = self.__dict__.setdefault("_posbot_possible_keys", {})
    try:
        key = (id(lookup), len(lookup), _frozen_states(states))
        found = kept.get(key)
    except TypeError:  # an unhashable value in a state: ask Rasa
        return _original_get_possible_keys(self, lookup, states)
    if found is None or found[0] is not lookup:
        if len(kept) >= POSSIBLE_KEYS_KEPT:
            kept.clear()
        found = kept[key] = (lookup, frozenset(_original_get_possible_keys(self, lookup, states)))
    return set(found[1])


_original_rasa_predict = RasaModel._rasa_predict


def _rasa_predict(self: RasaModel, batch_in: Tuple[Any, ...]) -> Dict[Text, Any]:
    """DIET's prediction without tf.function's per-call argument handling.

    The prediction function is traced once with a fixed input signature, so there is exactly
    one graph. Calling it through ``tf.function`` re-derives the signature from the ~30 input
    arrays on every call (a fifth of DIET's time per message); this converts them the way
    tf.function does (``dtype_hint``, then the same compatibility check) and calls that graph.
    Anything unexpected (eager mode, no graph yet, another input structure) takes Rasa's path.
    """
    function = self._tf_predict_step
    if self._run_eagerly or function is None or not self.prepared_for_prediction:
        return _original_rasa_predict(self, batch_in)
    self._training = False
    traced = self.__dict__.get("_posbot_traced")
    if traced is None or traced[0] is not function:
        # Keras tracks attributes set on a model; this one is ours, not a layer.
        traced = self.__dict__["_posbot_traced"] = (
            function, function.get_concrete_function(),
            tuple(tf_models_module.tf.nest.flatten(function.input_signature)))
    _, concrete, specs = traced
    flat = tf_models_module.tf.nest.flatten(batch_in)
    if len(flat) != len(specs):
        return _original_rasa_predict(self, batch_in)
    tensors = [tf_models_module.tf.convert_to_tensor(value, dtype_hint=spec.dtype)
               for value, spec in zip(flat, specs, strict=True)]
    if not all(spec.is_compatible_with(tensor) for spec, tensor in zip(specs, tensors, strict=True)):
        return _original_rasa_predict(self, batch_in)
    outputs = tf_models_module.tf_utils.sync_to_numpy_or_python_type(
        concrete._call_flat(tensors, captured_inputs=concrete.captured_inputs))
    if tf_models_module.DIAGNOSTIC_DATA in outputs:
        outputs[tf_models_module.DIAGNOSTIC_DATA] = self._empty_lists_to_none_in_dict(
            outputs[tf_models_module.DIAGNOSTIC_DATA])
    return outputs


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
    (RemoteAction, "_action_call_format", _action_call_format),
    (EndpointConfig, "session", _session),
    (Event, "resolve_by_type", staticmethod(_resolve_by_type)),
    (RulePolicy, "_is_rule_applicable", _is_rule_applicable),
    (RulePolicy, "_prediction_states", _rule_prediction_states),
    (RulePolicy, "_get_possible_keys", _get_possible_keys),
    (RasaModel, "_rasa_predict", _rasa_predict),
    (Domain, "states_for_tracker_history", states.states_for_tracker_history),
    (DialogueStateTracker, "applied_events", _applied_events),
    (DialogueStateTracker, "copy", _copy),
    (GraphSchema, "minimal_graph_schema", _minimal_graph_schema),
    (processor_module.MessageProcessor, "handle_message", admission.handle_message),
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
