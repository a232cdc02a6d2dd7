"""Resumed dialogue states (bot/speedups/states.py) equal Rasa's own, at every point of real conversations;
the trained policies (with bot/policies.py's window) predict as Rasa's own.

tests/data/conversations.json holds seven conversations recorded from the running bot
(`GET /conversations/<id>/tracker`): guided troubleshooting answered step by step (a form whose
earlier turns Rasa folds away), a repair ticket, the fee calculator, interruptions, a fallback
and a handoff pause, and a /restart.
"""

from __future__ import annotations

import json
import random

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker

from bot.policies import WindowedRulePolicy
from bot.settings import PROJECT_ROOT
from bot.speedups import registry, states

CONVERSATIONS = json.loads(
    (PROJECT_ROOT / "tests" / "data" / "conversations.json").read_text(encoding="utf-8")
)
# What the policies pass: RulePolicy (all turns); MemoizationPolicy (rule-only turns left out,
# with the rule-only data of our model, which is empty; and with some, to cover that path).
SETTINGS = [
    {"ignore_rule_only_turns": False, "rule_only_data": None},
    {"ignore_rule_only_turns": True, "rule_only_data": {"rule_only_slots": [], "rule_only_loops": []}},
    {
        "ignore_rule_only_turns": True,
        "rule_only_data": {
            "rule_only_slots": ["ts_solved", "contact_phone"],
            "rule_only_loops": ["ticket_form"],
        },
    },
]


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(PROJECT_ROOT / "bot" / "domain"))


def prefixes(domain: Domain, sender: str, order: list[int]) -> list[DialogueStateTracker]:
    """The conversation cut after each given number of events, sharing the event objects."""
    events = [Event.from_parameters(e) for e in CONVERSATIONS[sender]]
    return [DialogueStateTracker.from_events(sender, events[:n], domain.slots) for n in order]


@pytest.mark.parametrize("sender", sorted(CONVERSATIONS))
@pytest.mark.parametrize("settings", SETTINGS, ids=["rule", "memoization", "rule-only-data"])
def test_every_turn_gives_rasas_states(domain, sender, settings) -> None:
    n = len(CONVERSATIONS[sender])
    order = list(range(1, n + 1))  # as the bot sees it, event after event
    order += random.Random(sender).sample(order, k=min(n, 40))  # and jumping back and forth
    states.FOLDS.clear()
    resumed_before = states.FOLDS.resumed_events

    for tracker in prefixes(domain, sender, order):
        ours = states.states_for_tracker_history(domain, tracker, **settings)
        again = states.states_for_tracker_history(domain, tracker, **settings)
        rasas = states._original(domain, tracker, **settings)
        assert ours == rasas and again == rasas, f"{sender}: {len(tracker.events)} events"

    assert states.FOLDS.resumed_events > resumed_before  # the fold really was resumed


def test_featurizers_may_change_what_they_get(domain) -> None:
    """Rasa's featurizers delete the text or intent of user sub-states, and whole sub-states."""
    tracker = prefixes(domain, "fault-ticket", [len(CONVERSATIONS["fault-ticket"])])[0]
    first = states.states_for_tracker_history(domain, tracker)
    for state in first:
        state.get("user", {}).clear()
        state.pop("slots", None)
    assert states.states_for_tracker_history(domain, tracker) == states._original(domain, tracker)


def test_a_forms_folded_turns_resume_from_an_earlier_checkpoint(domain) -> None:
    """Answering the troubleshooting form folds earlier turns away: the fold resumes, not restarts."""
    n = len(CONVERSATIONS["fault-deep"])
    states.FOLDS.clear()
    trackers = prefixes(domain, "fault-deep", list(range(1, n + 1)))
    replayed = []
    for tracker in trackers:
        before = states.FOLDS.replayed_events
        states.states_for_tracker_history(domain, tracker)
        replayed.append(states.FOLDS.replayed_events - before)
    # Without resuming, the last call alone would replay the whole conversation again.
    assert max(replayed[n // 2 :]) < len(trackers[-1].applied_events()) // 2


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_trained_policies_predict_the_same_with_and_without_the_speed_ups() -> None:
    """Every action of the recorded conversations, predicted by the trained model both ways.

    Needs models/posbot.tar.gz trained with bot/config.yml's WindowedRulePolicy."""
    from rasa.core.agent import Agent
    from rasa.shared.core.events import ActionExecuted

    from ops.launcher import DEFAULT_MODEL

    agent = Agent.load(str(DEFAULT_MODEL))
    processor, domain = agent.processor, agent.domain
    nodes = processor.graph_runner._instantiated_nodes.values()
    rule_policies = [node._component for node in nodes if isinstance(node._component, WindowedRulePolicy)]
    assert rule_policies, "models/posbot.tar.gz was trained without bot.policies.WindowedRulePolicy"
    assert all(policy.windowed for policy in rule_policies)

    def speed_ups(on: bool) -> None:
        """The registry's patches and the policy's window (a class in bot/config.yml)."""
        if on:
            registry.install()
        else:
            registry.revert()
        for policy in rule_policies:
            policy.speedups = on

    predicted = 0
    try:
        for sender in sorted(CONVERSATIONS):
            events = [Event.from_parameters(e) for e in CONVERSATIONS[sender]]
            cuts = [i for i, e in enumerate(events) if isinstance(e, ActionExecuted) and e.policy and i > 0]
            for cut in cuts:
                # Prediction may change the tracker (it clears a follow-up action): one each.
                speed_ups(False)
                rasas = processor._predict_next_with_tracker(
                    DialogueStateTracker.from_events(sender, events[:cut], domain.slots)
                )
                speed_ups(True)
                ours = processor._predict_next_with_tracker(
                    DialogueStateTracker.from_events(sender, events[:cut], domain.slots)
                )
                assert (ours.policy_name, ours.probabilities, ours.events, ours.hide_rule_turn) == (
                    rasas.policy_name,
                    rasas.probabilities,
                    rasas.events,
                    rasas.hide_rule_turn,
                ), f"{sender}, before event {cut}"
                predicted += 1
    finally:
        speed_ups(True)
    assert predicted > 60
    assert all(policy._possible_keys for policy in rule_policies)  # the window was used
