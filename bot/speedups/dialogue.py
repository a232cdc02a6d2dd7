"""Speed-ups of Rasa's dialogue prediction: the RulePolicy, the prediction graph, debug copies.

Found with py-spy on the Rasa server under ``make bench`` load:

- The RulePolicy matches its rules against every state of the session, turn by turn (and
  re-reverses each rule's states on every comparison), although a rule can only look as far back
  as its own length: past the longest rule every rule is applicable by Rasa's own test
  (2026-11-23). It now sees the last states up to the longest rule's length, with each rule's
  reversed states kept, and predicts exactly the same (tests/bot/test_states.py predicts every
  action of recorded conversations with the trained policies, with and without the speed-ups).
- Which rules apply to the last states is kept per state window (10 % of the CPU went to testing
  every rule against every state, for the same few hundred windows again and again; 2026-11-24).
- Rasa prunes the prediction graph to the requested targets on every run (2-4 per message).
- Rasa deep-copies events, slots and states for debug log calls even when debug logging is off.

Registered in bot/speedups/registry.py; compared with Rasa's own code in tests/bot/test_perf.py.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Set, Text, Tuple

from rasa.core import processor as processor_module
from rasa.core.actions import forms as forms_module
from rasa.core.policies import memoization as memoization_module
from rasa.core.policies import rule_policy as rule_policy_module
from rasa.core.policies.policy import Policy
from rasa.core.policies.rule_policy import (
    RULES,
    RULES_FOR_LOOP_UNHAPPY_PATH,
    RulePolicy,
)
from rasa.engine.graph import GraphSchema
from rasa.shared.core.constants import PREVIOUS_ACTION
from rasa.shared.core.domain import State

_original_is_rule_applicable = RulePolicy._is_rule_applicable
_reversed_rules: Dict[Text, List[State]] = {}


def _is_rule_applicable(self: RulePolicy, rule_key: Text, turn_index: int, conversation_state: State) -> bool:
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


def _rule_prediction_states(
    self: RulePolicy,
    tracker: Any,
    domain: Any,
    use_text_for_last_user_input: bool = False,
    rule_only_data: Optional[Dict[Text, Any]] = None,
) -> List[State]:
    found = Policy._prediction_states(self, tracker, domain, use_text_for_last_user_input, rule_only_data)
    return found[-rule_window(self) :]


_original_get_possible_keys = RulePolicy._get_possible_keys
POSSIBLE_KEYS_KEPT = 4096


def _frozen_states(states: List[State]) -> Any:
    """The states as a hashable value that is equal exactly when the states are equal."""
    return tuple(
        tuple(sorted((kind, tuple(sorted(sub.items()))) for kind, sub in state.items())) for state in states
    )


def _get_possible_keys(self: RulePolicy, lookup: Dict[Text, Text], states: List[State]) -> Set[Text]:
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


_original_minimal_graph_schema = GraphSchema.minimal_graph_schema
_minimal_schemas: Dict[Tuple[int, Tuple[Text, ...]], Tuple[GraphSchema, GraphSchema]] = {}


def _minimal_graph_schema(self: GraphSchema, targets: Optional[List[Text]] = None) -> GraphSchema:
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
