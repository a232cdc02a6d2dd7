"""Replies that fit the question: retrieval picks the topic, a question is not taken for a fault,
every brand named is covered, and an unsure match is offered, never sent as if it were the answer."""

from __future__ import annotations

import json

import pytest
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.answers import ActionAnswerTopic
from actions.faq import render_topic
from actions.troubleshooting import ActionStartTroubleshooting
from tests.actions.conftest import answer, response_buttons
from tests.conftest import render


def kb_topics(buttons: list[tuple[str, str]]) -> list[str]:
    return [json.loads(p[p.index("{") :])["kb_topic"] for _, p in buttons if '"kb_topic"' in p]


@pytest.mark.asyncio
async def test_a_how_to_question_about_the_printer_gets_its_answer_not_a_walk(
    action_store, flow_domain
) -> None:
    """ "打印纸怎么装" is classified as a hardware fault, but it asks how to load paper."""
    dispatcher = CollectingDispatcher()
    tracker = answer("fault_message", "新买的打印纸怎么装进去", "fault_hardware", entities=[])
    events = await ActionStartTroubleshooting().run(dispatcher, tracker, flow_domain)
    assert SlotSet("ts_start", False) in events
    assert SlotSet("answered_topic", "paper_load") in events
    assert render(flow_domain, dispatcher.messages)[0].startswith(action_store.topic("paper_load").answer)


@pytest.mark.asyncio
async def test_a_fault_report_still_starts_the_walk(action_store, flow_domain) -> None:
    tracker = answer("fault_message", "打印机突然不出纸了", "fault_hardware", entities=[])
    events = await ActionStartTroubleshooting().run(CollectingDispatcher(), tracker, flow_domain)
    assert SlotSet("ts_start", True) in events and SlotSet("symptom", "printer") in events


@pytest.mark.asyncio
async def test_a_topic_from_another_intent_wins_when_its_questions_are_nearer(
    action_store, flow_domain
) -> None:
    """Intent usage_tips, but the message asks how to get a frozen terminal unfrozen."""
    dispatcher = CollectingDispatcher()
    tracker = answer("topic_question", "机器被冻结了 怎么才能解封", "usage_tips", confidence=0.6)
    events = await ActionAnswerTopic().run(dispatcher, tracker, flow_domain)
    assert events == [SlotSet("answered_topic", "frozen_unfreeze")]
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0].startswith(action_store.topic("frozen_unfreeze").answer)
    assert texts[1] == "这个回答对您有帮助吗？"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text, intent",
    [
        ("麻烦帮我申请上门修机器", "apply_pos"),
        ("能在这里帮我提交个报修单吗", "usage_tips"),
        ("帮我预约个维修", "contact_support"),
    ],
)
async def test_a_request_to_file_a_repair_opens_the_ticket_form(
    action_store, flow_domain, text, intent
) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("topic_question", text, intent)
    assert await ActionAnswerTopic().run(dispatcher, tracker, flow_domain) == [FollowupAction("ticket_form")]
    assert dispatcher.messages == []


@pytest.mark.asyncio
async def test_a_button_answers_exactly_the_topic_it_names(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer(
        "topic_question",
        '/usage_tips{"kb_topic": "paper_size"}',
        "usage_tips",
        entities=[{"entity": "kb_topic", "value": "paper_size"}],
    )
    assert await ActionAnswerTopic().run(dispatcher, tracker, flow_domain) == [
        SlotSet("answered_topic", "paper_size")
    ]


@pytest.mark.asyncio
async def test_an_answer_offers_its_walk_and_related_topics(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("topic_question", "小票打出来是白纸 一个字都没有", "usage_tips", entities=[])
    await ActionAnswerTopic().run(dispatcher, tracker, flow_domain)
    buttons = response_buttons(flow_domain, dispatcher.messages[-1])
    assert buttons[:2] == [("有帮助", "/affirm"), ("没帮助", "/deny")]
    assert ("一步步排查：打印问题", '/fault_hardware{"symptom": "printer"}') in buttons
    assert all(action_store.topic(t) is not None for t in kb_topics(buttons))


@pytest.mark.asyncio
async def test_nonsense_gets_an_honest_question_back_not_a_default_answer(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("topic_question", "嗯嗯嗯那个啥", "usage_tips", confidence=0.3, entities=[])
    assert await ActionAnswerTopic().run(dispatcher, tracker, flow_domain) == [
        SlotSet("answered_topic", None)
    ]
    first = render(flow_domain, dispatcher.messages)[0]
    assert first.startswith("抱歉，我没太明白") or first.startswith("不好意思")


def test_a_comparison_covers_every_brand_named(action_store) -> None:
    topic = action_store.topic("contact_support")
    text = render_topic(topic, ["拉卡拉", "银联"])
    assert "95016" in text and "95516" in text


@pytest.mark.asyncio
async def test_a_specific_fault_gets_its_specific_answer_with_the_walk_as_a_button(
    action_store, flow_domain
) -> None:
    """ "小票打出来是白纸": the paper is in the wrong way round — say so, offer the walk."""
    dispatcher = CollectingDispatcher()
    tracker = answer("fault_message", "小票打出来是白纸", "fault_hardware", entities=[])
    events = await ActionStartTroubleshooting().run(dispatcher, tracker, flow_domain)
    assert SlotSet("answered_topic", "paper_side") in events
    assert SlotSet("ts_start", False) in events
    assert ("一步步排查：打印问题", '/fault_hardware{"symptom": "printer"}') in response_buttons(
        flow_domain, dispatcher.messages[-1]
    )


@pytest.mark.asyncio
async def test_a_question_about_causes_gets_the_overview_not_a_walk(action_store, flow_domain):
    dispatcher = CollectingDispatcher()
    tracker = answer("fault_message", "pos机通讯失败一般是什么原因", "fault_network", entities=[])
    events = await ActionStartTroubleshooting().run(dispatcher, tracker, flow_domain)
    assert SlotSet("ts_start", False) in events
    assert SlotSet("answered_topic", "fault_network") in events


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "topic_id, button",
    [
        ("fees_overview", ("帮我算手续费", '/fees{"flow": "fee_calc"}')),
        ("repair_paid", ("登记报修", '/contact_support{"flow": "ticket"}')),
    ],
)
async def test_a_topic_of_a_flow_links_to_it_with_a_button(
    action_store, flow_domain, topic_id, button
) -> None:
    dispatcher = CollectingDispatcher()
    payload = f'/usage_tips{{"kb_topic": "{topic_id}"}}'
    tracker = answer(
        "topic_question", payload, "usage_tips", entities=[{"entity": "kb_topic", "value": topic_id}]
    )
    await ActionAnswerTopic().run(dispatcher, tracker, flow_domain)
    assert button in response_buttons(flow_domain, dispatcher.messages[-1])
