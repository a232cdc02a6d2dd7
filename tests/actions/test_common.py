"""Reading the merchant's message: the intent as the flows need it, brand statements."""

from __future__ import annotations

import pytest

from actions.common import intent_of, is_brand_statement
from tests.conftest import load_tracker


def test_the_intent_is_the_top_of_the_ranking_even_when_the_nlu_was_unsure() -> None:
    tracker = load_tracker("unsure_message")  # ranking: nlu_fallback, fault_hardware
    assert intent_of(tracker) == "nlu_fallback"


def test_an_intent_without_a_ranking_is_still_read() -> None:
    # A Rasa-triggered intent (/trigger_intent, reminders) carries no intent_ranking.
    assert intent_of(load_tracker("tracker_new")) == "greet"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("拉卡拉", True),
        ("我用的是拉卡拉的机器", True),
        ("拉卡拉的POS机！", True),
        ("是拉卡拉呀~", True),
        ("拉卡拉的怎么签到", False),
        ("拉卡拉客服电话", False),
    ],
)
async def test_a_brand_statement_is_a_brand_and_filler_words_only(action_store, text, expected) -> None:
    start = text.index("拉卡拉")
    tracker = load_tracker(
        "tracker_new",
        text=text,
        intent={"name": "choose_brand", "confidence": 0.9},
        entities=[{"entity": "brand", "value": "拉卡拉", "start": start, "end": start + 3}],
    )
    assert await is_brand_statement(tracker) is expected
