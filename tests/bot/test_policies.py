"""WindowedRulePolicy (bot/policies.py) learns and predicts what Rasa's RulePolicy does.

Trained on posbot's own rules and stories (data/), it must learn Rasa's lookup with Rasa's own
rule matching; loaded, it must predict Rasa's action at every turn of the recorded conversations
(tests/data/conversations.json) while it matches rules only against its window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from rasa.core.policies.rule_policy import RULES, RULES_FOR_LOOP_UNHAPPY_PATH, RulePolicy
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, Event
from rasa.shared.core.trackers import DialogueStateTracker

from bot.policies import WindowedRulePolicy
from bot.settings import PROJECT_ROOT

RECORDED = json.loads((PROJECT_ROOT / "tests" / "data" / "conversations.json").read_text(encoding="utf-8"))
#: bot/config.yml's parameters of the policy.
CONFIG = {
    "core_fallback_threshold": 0.3,
    "core_fallback_action_name": "action_default_fallback",
    "enable_fallback_prediction": True,
}


def _config() -> Dict[str, Any]:
    return {**RulePolicy.get_default_config(), **CONFIG}  # a new dict: __init__ changes it


def _context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test")


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(PROJECT_ROOT / "bot" / "domain"))


@pytest.fixture(autouse=True)
def patches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSBOT_RASA_PATCHES", raising=False)


def _prediction_points(domain: Domain) -> List[DialogueStateTracker]:
    """Each recorded conversation cut before every action the bot predicted."""
    trackers = []
    for sender, recorded in sorted(RECORDED.items()):
        events = [Event.from_parameters(e) for e in recorded]
        cuts = [i for i, e in enumerate(events) if isinstance(e, ActionExecuted) and e.policy and i > 0]
        trackers += [DialogueStateTracker.from_events(sender, events[:cut], domain.slots) for cut in cuts]
    return trackers


def _all_prefixes(domain: Domain) -> List[DialogueStateTracker]:
    """Each recorded conversation cut after each of its events, in the file's order."""
    trackers = []
    for sender, recorded in RECORDED.items():
        events = [Event.from_parameters(e) for e in recorded]
        trackers += [
            DialogueStateTracker.from_events(sender, events[:n], domain.slots) for n in range(len(events) + 1)
        ]
    return trackers


@pytest.fixture(scope="module")
def trained(
    domain: Domain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[RulePolicy, WindowedRulePolicy, LocalModelStorage, Resource, List[Any]]]:
    """Rasa's RulePolicy and ours, each trained on posbot's rules and stories."""
    from rasa.core.training import load_data

    trackers = load_data(str(PROJECT_ROOT / "data"), domain, augmentation_factor=0)
    assert any(t.is_rule_tracker for t in trackers) and any(not t.is_rule_tracker for t in trackers)
    storage = LocalModelStorage(tmp_path_factory.mktemp("policies"))
    rasas = RulePolicy(_config(), storage, Resource("rasa"), _context())
    rasas.train(trackers, domain)
    ours = WindowedRulePolicy(_config(), storage, Resource("ours"), _context())
    window_asked = []
    original_window = WindowedRulePolicy.rule_window

    def asked(policy: WindowedRulePolicy) -> int:
        window_asked.append(policy)
        return original_window(policy)

    WindowedRulePolicy.rule_window = asked
    try:
        ours.train(trackers, domain)
    finally:
        WindowedRulePolicy.rule_window = original_window
    assert window_asked == []  # training never cut the states to a window
    yield rasas, ours, storage, Resource("ours"), trackers


def test_a_trained_policy_learned_with_rasas_own_rule_matching(trained, domain) -> None:
    """Training builds and prunes the rules with the methods the window replaces: a freshly
    trained policy learns exactly Rasa's rules and sees every state of a conversation."""
    rasas, ours, _, _, _ = trained
    assert ours.speedups and not ours.loaded and not ours.windowed
    assert ours.lookup == rasas.lookup and len(ours.lookup[RULES]) > 20
    assert ours._possible_keys == {}  # no rule set was kept while the lookup changed
    longest = max(_prediction_points(domain), key=lambda t: len(t.events))
    full = RulePolicy._prediction_states(rasas, longest, domain)
    assert ours._prediction_states(longest, domain) == full
    assert len(full) > ours.rule_window()  # so a window would have cut them


def test_a_loaded_policy_predicts_rasas_action_at_every_recorded_turn(trained, domain) -> None:
    _, _, storage, resource, _ = trained
    loaded = WindowedRulePolicy.load(_config(), storage, resource, _context())
    rasas = RulePolicy.load(_config(), storage, resource, _context())
    assert type(rasas) is RulePolicy and loaded.windowed
    window = loaded.rule_window()
    cut = 0
    for tracker in _prediction_points(domain):
        theirs = rasas.predict_action_probabilities(tracker, domain)
        for _ in range(2):  # the second time from the kept rule sets
            mine = loaded.predict_action_probabilities(tracker, domain)
            assert (
                mine.probabilities,
                mine.events,
                mine.hide_rule_turn,
                mine.is_end_to_end_prediction,
                mine.is_no_user_prediction,
            ) == (
                theirs.probabilities,
                theirs.events,
                theirs.hide_rule_turn,
                theirs.is_end_to_end_prediction,
                theirs.is_no_user_prediction,
            ), f"{tracker.sender_id}, after {len(tracker.events)} events"
        cut += len(RulePolicy._prediction_states(rasas, tracker, domain)) > window
    assert cut > 20  # the window really cut conversations
    assert loaded._possible_keys  # and rule sets were kept


def test_a_loaded_policy_trained_again_learns_with_rasas_rule_matching(trained, domain) -> None:
    """``rasa train --finetune`` loads the policy, then trains it: Rasa's own matching again."""
    rasas, _, storage, resource, trackers = trained
    loaded = WindowedRulePolicy.load(_config(), storage, resource, _context())
    assert loaded.windowed and loaded.rule_window() > 1
    loaded.train(trackers, domain)
    assert not loaded.windowed and loaded.lookup == rasas.lookup
    assert loaded._possible_keys == {}
    longest = max(_prediction_points(domain), key=lambda t: len(t.events))
    assert loaded._prediction_states(longest, domain) == RulePolicy._prediction_states(rasas, longest, domain)


def _loaded(tmp_path: Path, lookup: Dict[str, Any]) -> WindowedRulePolicy:
    """A policy loaded from a model whose rules are ``lookup``."""
    storage, resource = LocalModelStorage(tmp_path), Resource("rules")
    WindowedRulePolicy(_config(), storage, resource, _context(), lookup=lookup).persist()
    return WindowedRulePolicy.load(_config(), storage, resource, _context())


def test_rules_as_long_as_the_window_predict_as_rasas(domain, tmp_path: Path) -> None:
    """Rules of 1-4 real states, each predicting another action, so that which rule applies
    shows: at every point of every recorded conversation, Rasa's prediction."""
    trackers = _all_prefixes(domain)
    maker = WindowedRulePolicy(_config(), LocalModelStorage(tmp_path / "k"), Resource("k"), _context())
    actions = [name for name in domain.action_names_or_texts if name.startswith("utter_")]
    rules = {}
    whole = [
        DialogueStateTracker.from_dict(sender, events, domain.slots) for sender, events in RECORDED.items()
    ]
    for tracker in whole[::3]:
        states = domain.states_for_tracker_history(tracker)
        for n in (1, 2, 3, 4):
            for i in range(len(states) - n):
                rules[maker._create_feature_key(states[i : i + n])] = actions[(7 * i + n) % len(actions)]
    storage, resource = LocalModelStorage(tmp_path), Resource("rules")
    WindowedRulePolicy(
        _config(), storage, resource, _context(), lookup={RULES: rules, RULES_FOR_LOOP_UNHAPPY_PATH: {}}
    ).persist()
    loaded = WindowedRulePolicy.load(_config(), storage, resource, _context())
    rasas = RulePolicy.load(_config(), storage, resource, _context())
    assert loaded.windowed and loaded.rule_window() == 5
    predicted = set()
    for tracker in trackers:
        mine = loaded.predict_action_probabilities(tracker, domain)
        theirs = rasas.predict_action_probabilities(tracker, domain)
        assert (mine.probabilities, mine.hide_rule_turn) == (
            theirs.probabilities,
            theirs.hide_rule_turn,
        ), f"{tracker.sender_id}, after {len(tracker.events)} events"
        predicted.add(max(range(len(mine.probabilities)), key=mine.probabilities.__getitem__))
    assert len(predicted) > 10  # many different rules applied


def test_applicable_rules_are_the_ones_rasa_finds(domain, tmp_path: Path) -> None:
    """Every state window of the recorded conversations against a policy with their rules."""
    trackers = _all_prefixes(domain)
    maker = WindowedRulePolicy(_config(), LocalModelStorage(tmp_path / "k"), Resource("k"), _context())
    # Rules made of real turns: every 2-4 state stretch of one conversation.
    states = domain.states_for_tracker_history(trackers[len(trackers) // 3])
    rules = {
        maker._create_feature_key(states[i : i + n]): "action_listen"
        for n in (2, 3, 4)
        for i in range(len(states) - n)
    }
    assert len(rules) > 20
    policy = _loaded(tmp_path, {RULES: rules})
    assert policy.windowed
    tried = 0
    for tracker in trackers[::3]:
        window = domain.states_for_tracker_history(tracker)[-6:]
        for _ in range(2):
            rasas = RulePolicy._get_possible_keys(policy, policy.lookup[RULES], window)
            assert policy._get_possible_keys(policy.lookup[RULES], window) == rasas
        tried += bool(rasas)
    assert tried > 10  # some windows do match some rules
    assert policy._possible_keys


def test_rule_applicability_is_rasas(domain, tmp_path: Path) -> None:
    """Every rule against every turn of the recorded conversations' state windows."""
    trackers = _all_prefixes(domain)
    policy = WindowedRulePolicy(_config(), LocalModelStorage(tmp_path), Resource("rules"), _context())
    states = domain.states_for_tracker_history(trackers[len(trackers) // 2])
    rules = [
        policy._create_feature_key(states[i : i + n]) for n in (1, 2, 3, 5) for i in range(len(states) - n)
    ]
    outcomes = set()
    for tracker in trackers[::7]:
        window = domain.states_for_tracker_history(tracker)[-6:]
        for rule in rules:
            for turn_index, state in enumerate(reversed(window)):
                for _ in range(2):  # the second time from the kept reversed states
                    ours = policy._is_rule_applicable(rule, turn_index, state)
                    assert ours == RulePolicy._is_rule_applicable(policy, rule, turn_index, state), (
                        rule,
                        turn_index,
                    )
                outcomes.add(ours)
    assert outcomes == {True, False}
    assert set(policy._reversed_rules) == set(rules)


def test_states_that_cannot_be_kept_are_judged_by_rasa(tmp_path: Path) -> None:
    policy = _loaded(tmp_path, {RULES: {}})
    states = [{"user": {"intent": "greet", "entities": ["brand"]}}]  # a list: unhashable
    assert policy._get_possible_keys({}, states) == set()
    assert policy._possible_keys == {}


def test_with_patches_off_a_loaded_policy_runs_rasas_methods(
    domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSBOT_RASA_PATCHES", "0")
    tracker = max(_prediction_points(domain), key=lambda t: len(t.events))
    states = domain.states_for_tracker_history(tracker)
    rule = WindowedRulePolicy(
        _config(), LocalModelStorage(tmp_path / "k"), Resource("k"), _context()
    )._create_feature_key(states[-2:])
    policy = _loaded(tmp_path, {RULES: {rule: "action_listen"}})
    assert policy.loaded and not policy.speedups and not policy.windowed
    assert policy.rule_window() == 3
    assert policy._prediction_states(tracker, domain) == RulePolicy._prediction_states(
        policy, tracker, domain
    )
    assert len(policy._prediction_states(tracker, domain)) > 3  # not cut to the window
    assert policy._get_possible_keys(policy.lookup[RULES], states) == {rule}
    assert policy._possible_keys == {} and policy._reversed_rules == {}
