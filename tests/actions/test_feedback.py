"""Answer ratings: 有帮助/没帮助 offered under KB answers, stored with the question asked."""

from __future__ import annotations

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.answers import ActionAnswerTopic
from actions.feedback import ActionRecordFeedback
from records.store import RecordStore
from tests.actions.conftest import answer, response_buttons
from tests.conftest import load_tracker, render


@pytest.mark.asyncio
async def test_kb_answer_is_followed_by_the_rating_question(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerTopic().run(dispatcher, load_tracker("topic_question"), flow_domain)
    topic = action_store.topic("apply_process")
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0].startswith(topic.answer)
    assert texts[1] == "这个回答对您有帮助吗？"
    assert response_buttons(flow_domain, dispatcher.messages[1])[:2] == [
        ("有帮助", "/affirm"),
        ("没帮助", "/deny"),
    ]
    assert events == [SlotSet("answered_topic", topic.id)]


@pytest.mark.asyncio
async def test_unhelpful_rating_is_stored_with_the_question(
    action_store, flow_domain, records: RecordStore
) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionRecordFeedback().run(dispatcher, load_tracker("topic_rated"), flow_domain)
    [rating] = records.feedback()
    assert (rating.conversation_id, rating.topic_id, rating.intent, rating.question, rating.helpful) == (
        "merchant-feedback",
        "apply_process",
        "apply_pos",
        "怎么申请POS机",
        False,
    )
    assert render(flow_domain, dispatcher.messages) == [
        "抱歉没能帮上忙，我们会根据您的反馈改进这个回答。您可以换个说法再问一次，或者转人工客服。"
    ]
    assert response_buttons(flow_domain, dispatcher.messages[0]) == [("转人工客服", "/human_handoff")]
    assert events == [SlotSet("answered_topic", None)]


@pytest.mark.asyncio
async def test_helpful_rating_is_stored_and_thanked(action_store, flow_domain, records: RecordStore) -> None:
    dispatcher = CollectingDispatcher()
    await ActionRecordFeedback().run(dispatcher, answer("topic_rated", "/affirm", "affirm"), flow_domain)
    assert records.feedback()[0].helpful is True
    assert render(flow_domain, dispatcher.messages) == ["谢谢您的反馈！还有其他问题可以继续问我。"]


@pytest.mark.asyncio
async def test_without_a_rated_answer_affirm_gets_the_plain_reply(
    action_store, flow_domain, records: RecordStore
) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("topic_rated", "好的", "affirm", answered_topic=None)
    assert await ActionRecordFeedback().run(dispatcher, tracker, flow_domain) == []
    assert records.feedback() == []
    assert render(flow_domain, dispatcher.messages) == ["好的。还有什么可以帮您的吗？"]


@pytest.mark.asyncio
async def test_none_of_these_records_the_question_for_staff(
    action_store, flow_domain, records: RecordStore
) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionRecordFeedback().run(dispatcher, load_tracker("none_of_these"), flow_domain)
    [rating] = records.feedback()
    assert (rating.conversation_id, rating.topic_id, rating.question, rating.helpful) == (
        "merchant-none-of-these",
        None,
        "那个东西怎么弄",
        False,
    )
    assert render(flow_domain, dispatcher.messages)[0].startswith(
        "抱歉，这几个都不是您要问的。您的问题已经记下来了"
    )
    assert ("转人工", "/human_handoff") in response_buttons(flow_domain, dispatcher.messages[0])
    assert events == [SlotSet("answered_topic", None)]


@pytest.mark.asyncio
async def test_a_plain_no_without_offered_topics_records_nothing(
    action_store, flow_domain, records: RecordStore
) -> None:
    tracker = load_tracker("none_of_these")
    tracker.events = [e for e in tracker.events if e.get("event") != "bot"]
    dispatcher = CollectingDispatcher()
    await ActionRecordFeedback().run(dispatcher, tracker, flow_domain)
    assert records.feedback() == []
    assert render(flow_domain, dispatcher.messages) == ["好的。如果还有其他问题，直接告诉我就行。"]
