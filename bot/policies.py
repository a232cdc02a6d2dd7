"""posbot's RulePolicy: Rasa's, with the rule matching of a loaded model made cheaper.

Named in bot/config.yml instead of ``RulePolicy`` (issue 18), so that training, ``rasa test``
and the server run the same class, not a patch installed by the server only. Found with py-spy
on the Rasa server under ``make bench`` load (2026-11-23/24):

- Rasa matches the rules against every state of the session, turn by turn, although a rule can
  only look as far back as its own length: past the longest rule every rule is applicable by
  Rasa's own test. A loaded policy sees the last states up to the longest rule's length + 1.
- Which rules apply to the last states is kept per state window (10 % of the CPU went to testing
  every rule against the same few hundred windows again and again).
- Each rule's states were reversed again on every comparison: kept per rule key (a pure
  function of the key: ``json.loads`` of it, reversed; nothing mutates the states).

Training runs Rasa's own logic exactly: ``RulePolicy.train`` calls these methods while it is
still building and pruning its lookup, so the window and the kept rule sets apply only to a
policy :meth:`WindowedRulePolicy.load`-ed from a trained model (the kept reversed states may
always apply). ``POSBOT_RASA_PATCHES=0``, another Rasa or a changed Rasa method (the table
:data:`OVERRIDES`, bot/speedups/overrides.py) run Rasa's own methods throughout.

Predictions carry the class name (``WindowedRulePolicy``) as their policy, as Rasa names them.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, FrozenSet, List, Optional, Set, Text, Tuple

from rasa.core.featurizers.tracker_featurizers import TrackerFeaturizer
from rasa.core.policies.rule_policy import RULES, RULES_FOR_LOOP_UNHAPPY_PATH, RulePolicy
from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.core.constants import PREVIOUS_ACTION
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.generator import TrackerWithCachedStates
from rasa.shared.core.trackers import DialogueStateTracker

from bot.speedups.overrides import Override, speedups_on

logger = logging.getLogger(__name__)

_TESTS = "tests/bot/test_policies.py::"

#: Every Rasa method WindowedRulePolicy overrides, with the sha256 of the source reviewed.
OVERRIDES = [
    Override(
        RulePolicy,
        "_is_rule_applicable",
        "64a108b016b46e573d6020b755a6036439dc207a364b45c9ea5dcb0f18dc7068",
        "each rule's states were reversed again on every comparison (py-spy, 2026-11-23)",
        _TESTS + "test_rule_applicability_is_rasas",
    ),
    Override(
        RulePolicy,  # Policy._prediction_states, inherited
        "_prediction_states",
        "ed9b82bed2f26ad7a0de61709e02339983912bece614191089c3adba60cf1452",
        "the RulePolicy matched rules against every state of the session, not only the "
        "longest rule's length (py-spy, 2026-11-23)",
        "tests/bot/test_states.py::test_the_trained_policies_predict_the_same_with_and_without_the_speed_ups",
    ),
    Override(
        RulePolicy,
        "_get_possible_keys",
        "2915fd81711e194c6d667728e00bd0e51e9c1c2791a0be14c55f0ef9938f9936",
        "testing every rule against the same few hundred state windows: 10 % of the CPU "
        "(py-spy, 2026-11-24)",
        _TESTS + "test_applicable_rules_are_the_ones_rasa_finds",
    ),
]

#: Rule sets kept per policy (one per state window and rule table).
POSSIBLE_KEYS_KEPT = 4096


def _frozen_states(states: List[State]) -> Any:
    """The states as a hashable value that is equal exactly when the states are equal."""
    return tuple(
        tuple(sorted((kind, tuple(sorted(sub.items()))) for kind, sub in state.items())) for state in states
    )


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.POLICY_WITHOUT_END_TO_END_SUPPORT, is_trainable=True)
class WindowedRulePolicy(RulePolicy):
    """Rasa's RulePolicy; a loaded one matches rules only against the states they can see."""

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        featurizer: Optional[TrackerFeaturizer] = None,
        lookup: Optional[Dict] = None,
    ) -> None:
        super().__init__(config, model_storage, resource, execution_context, featurizer, lookup)
        #: False: Rasa's own methods (POSBOT_RASA_PATCHES=0, or Rasa changed under OVERRIDES).
        self.speedups = speedups_on(f"{__name__}.{type(self).__qualname__}", OVERRIDES)
        #: True only for a policy loaded from a trained model: its lookup no longer changes.
        self.loaded = False
        self._reversed_rules: Dict[Text, List[State]] = {}
        self._possible_keys: Dict[Tuple[int, int, Any], Tuple[Dict[Text, Text], FrozenSet[Text]]] = {}
        self._window: Optional[int] = None

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> WindowedRulePolicy:
        """Rasa's load; the policy's rules are final now, so the window may apply."""
        policy = super().load(config, model_storage, resource, execution_context, **kwargs)
        assert isinstance(policy, WindowedRulePolicy)
        policy.loaded = True
        return policy

    def train(
        self, training_trackers: List[TrackerWithCachedStates], domain: Domain, **kwargs: Any
    ) -> Resource:
        """Rasa's training with Rasa's own rule matching, also when a loaded policy is trained
        again (``rasa train --finetune``): the lookup changes while Rasa trains."""
        self.loaded = False
        self._window = None
        self._possible_keys.clear()
        return super().train(training_trackers, domain, **kwargs)

    @property
    def windowed(self) -> bool:
        """Whether the window and the kept rule sets apply (a loaded policy, speed-ups on)."""
        return self.speedups and self.loaded

    def _is_rule_applicable(self, rule_key: Text, turn_index: int, conversation_state: State) -> bool:
        if not self.speedups:
            return super()._is_rule_applicable(rule_key, turn_index, conversation_state)
        # Rasa 3.6.21 RulePolicy._is_rule_applicable with the reversed rule states kept.
        reversed_rule_states = self._reversed_rules.get(rule_key)
        if reversed_rule_states is None:
            reversed_rule_states = list(reversed(self._rule_key_to_state(rule_key)))
            self._reversed_rules[rule_key] = reversed_rule_states
        if turn_index >= len(reversed_rule_states):
            return True
        current_previous_action = conversation_state.get(PREVIOUS_ACTION)
        rule_previous_action = reversed_rule_states[turn_index].get(PREVIOUS_ACTION)
        if not rule_previous_action and not current_previous_action:
            return True
        if not rule_previous_action or not current_previous_action:
            return False
        return self._does_rule_match_state(reversed_rule_states[turn_index], conversation_state)

    def rule_window(self) -> int:
        """Length in states of the longest rule (normal and loop-unhappy-path rules), + 1."""
        if self._window is None:
            keys = [*self.lookup.get(RULES, {}), *self.lookup.get(RULES_FOR_LOOP_UNHAPPY_PATH, {})]
            self._window = max((len(self._rule_key_to_state(key)) for key in keys), default=0) + 1
        return self._window

    def _prediction_states(
        self,
        tracker: DialogueStateTracker,
        domain: Domain,
        use_text_for_last_user_input: bool = False,
        rule_only_data: Optional[Dict[Text, Any]] = None,
    ) -> List[State]:
        found = super()._prediction_states(tracker, domain, use_text_for_last_user_input, rule_only_data)
        if not self.windowed:
            return found
        return found[-self.rule_window() :]

    def _get_possible_keys(self, lookup: Dict[Text, Text], states: List[State]) -> Set[Text]:
        """Which rules apply depends on nothing but the rules and the states, and conversations
        pass through the same few hundred states again and again: each answer is kept
        (``POSSIBLE_KEYS_KEPT`` at most)."""
        if not self.windowed:
            return super()._get_possible_keys(lookup, states)
        try:
            key = (id(lookup), len(lookup), _frozen_states(states))
            found = self._possible_keys.get(key)
        except TypeError:  # an unhashable value in a state: ask Rasa
            return super()._get_possible_keys(lookup, states)
        if found is None or found[0] is not lookup:
            if len(self._possible_keys) >= POSSIBLE_KEYS_KEPT:
                self._possible_keys.clear()
            found = self._possible_keys[key] = (
                lookup,
                frozenset(super()._get_possible_keys(lookup, states)),
            )
        return set(found[1])
