"""Error-code answers: meaning and what to do; the warning for high-risk codes; never a guess."""

from __future__ import annotations

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.errors import ActionExplainErrorCode
from tests.conftest import load_tracker, render


def code_message(text: str, *codes: str) -> dict:
    return {
        "text": text,
        "intent": {"name": "error_code", "confidence": 0.98},
        "entities": [{"entity": "error_code", "value": c} for c in codes],
    }


async def explain(domain: dict, text: str, *codes: str) -> tuple[list[str], list]:
    """What the merchant reads after writing ``text`` (codes as extracted), and the events."""
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("tracker_new", **code_message(text, *codes))
    events = await ActionExplainErrorCode().run(dispatcher, tracker, domain)
    return render(domain, dispatcher.messages), events


@pytest.mark.asyncio
async def test_a0_says_sign_in_again_and_that_retry_helps(action_store, domain) -> None:
    texts, events = await explain(domain, "刷卡显示A0", "A0")
    assert texts[0].startswith("应答码 A0：")
    assert "签到" in texts[0]
    assert texts[1] == "按上面的方法处理后，可以再试一次。"
    assert events == [SlotSet("error_code", "A0")]


@pytest.mark.asyncio
async def test_stolen_card_code_warns_not_to_complete_the_sale(action_store, domain) -> None:
    texts, _ = await explain(domain, "显示43", "43")
    assert texts[0].startswith("应答码 43：")
    assert "请不要继续完成这笔交易" in texts[1]


@pytest.mark.asyncio
async def test_unknown_code_is_not_guessed(action_store, domain) -> None:
    texts, _ = await explain(domain, "显示Z9", "Z9")
    assert len(texts) == 1
    assert "Z9 不在我们整理的银联应答码表里" in texts[0]
    assert "联系收单机构" in texts[0]


@pytest.mark.asyncio
async def test_without_a_code_the_bot_asks_for_it(action_store, domain) -> None:
    texts, events = await explain(domain, "屏幕上有个错误码")
    assert events == []
    assert "请告诉我屏幕或小票上显示的应答码" in texts[0]


@pytest.mark.asyncio
async def test_insufficient_funds_says_retry_is_useless(action_store, domain) -> None:
    texts, _ = await explain(domain, "报51", "51")
    assert "余额" in texts[0]
    assert texts[1] == "用同一张卡重复刷通常没有用，请先按上面的方法处理。"


@pytest.mark.asyncio
async def test_a_code_and_its_screen_text_get_one_explanation_of_the_typed_code(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    text = "显示41 挂失卡 怎么办"
    tracker = load_tracker(
        "tracker_new",
        text=text,
        intent={"name": "error_code", "confidence": 0.98},
        entities=[
            {"entity": "error_code", "value": "41", "start": 2, "end": 4},
            {"entity": "error_code", "value": "04", "start": 5, "end": 8},
        ],
    )
    events = await ActionExplainErrorCode().run(dispatcher, tracker, domain)
    texts = render(domain, dispatcher.messages)
    assert texts[0].startswith("应答码 41：")
    assert sum(t.startswith("应答码") for t in texts) == 1
    assert events == [SlotSet("error_code", "41")]


@pytest.mark.asyncio
async def test_two_different_codes_are_both_explained(action_store, domain) -> None:
    texts, events = await explain(domain, "05和57都出过", "05", "57")
    assert [t[:6] for t in texts if t.startswith("应答码")] == ["应答码 05", "应答码 57"]
    assert events == [SlotSet("error_code", "57")]
