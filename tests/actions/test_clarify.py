"""Clarification: "您是想问：" with the likely topics and 都不是; the second miss apologises."""

from __future__ import annotations

import json

import pytest
from rasa_sdk.executor import CollectingDispatcher

from actions.fallback import ActionClarify
from tests.actions.conftest import response_buttons
from tests.conftest import load_tracker, render


@pytest.mark.asyncio
async def test_first_miss_offers_the_candidate_topics_and_none_of_them(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    assert await ActionClarify().run(dispatcher, load_tracker("unsure_message"), flow_domain) == []
    assert render(flow_domain, dispatcher.messages) == ["抱歉，我没太明白。您是想问："]
    buttons = response_buttons(flow_domain, dispatcher.messages[0])
    assert 2 <= len(buttons) <= 4 and buttons[-1] == ("都不是", "/deny")
    for title, payload in buttons[:-1]:  # each names the KB topic it answers
        topic_id = json.loads(payload[payload.index("{") :])["kb_topic"]
        assert action_store.topic(topic_id).title == title


@pytest.mark.asyncio
async def test_second_miss_in_a_row_apologises_with_menu_and_human(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    await ActionClarify().run(dispatcher, load_tracker("unsure_twice"), flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0].startswith("不好意思，我还是没能理解您的问题。")
    assert ("转人工", "/human_handoff") in response_buttons(flow_domain, dispatcher.messages[0])


@pytest.mark.asyncio
async def test_a_request_to_file_a_repair_opens_the_form_even_when_the_nlu_is_unsure(
    action_store, flow_domain
) -> None:
    from rasa_sdk.events import FollowupAction

    dispatcher = CollectingDispatcher()
    tracker = load_tracker(
        "unsure_message",
        text="麻烦帮我申请上门修一下机器",
        intent={"name": "nlu_fallback", "confidence": 0.4},
    )
    events = await ActionClarify().run(dispatcher, tracker, flow_domain)
    assert events == [FollowupAction("ticket_form")] and dispatcher.messages == []


def after_the_bot_said(response: str, text: str):
    """A tracker whose bot sent ``response`` (domain name) and then got ``text``."""
    from rasa_sdk import Tracker

    parse = {"text": text, "intent": {"name": "nlu_fallback", "confidence": 1.0}, "entities": []}
    events = [
        {"event": "user", "text": "刷卡手续费帮我算一下", "parse_data": {"text": "刷卡手续费帮我算一下"}},
        {"event": "action", "name": "action_answer_fees"},
        {"event": "bot", "text": "…", "metadata": {"utter_action": response}},
        {"event": "action", "name": "action_listen"},
        {"event": "user", "text": text, "parse_data": parse},
    ]
    return Tracker("m", {}, parse, events, False, None, None, "action_listen")


@pytest.mark.asyncio
@pytest.mark.parametrize("text", ["2", "1."])
async def test_a_number_with_no_options_open_says_so(action_store, flow_domain, text) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("unsure_message", text=text)
    assert await ActionClarify().run(dispatcher, tracker, flow_domain) == []
    [said] = render(flow_domain, dispatcher.messages)
    assert said.startswith("您回复的数字没有对应的选项") and "请直接用文字描述您的问题" in said
    assert not response_buttons(flow_domain, dispatcher.messages[0])


@pytest.mark.asyncio
async def test_a_small_number_for_the_fee_amount_asks_for_its_unit(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    await ActionClarify().run(dispatcher, after_the_bot_said("utter_ask_fee_amount", "50"), flow_domain)
    assert render(flow_domain, dispatcher.messages) == [
        "请连同单位告诉我这笔交易的金额，例如“50元”“1万”，我来帮您算手续费。"
    ]
    other = CollectingDispatcher()
    await ActionClarify().run(other, after_the_bot_said("utter_ask_fee_rate", "50"), flow_domain)
    assert render(flow_domain, other.messages)[0].startswith("您回复的数字没有对应的选项")
