"""Contact support: the brand's hotline from the KB, remembered across turns; never invented."""

from __future__ import annotations

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.support import ActionContactSupport
from tests.conftest import load_tracker, render


def support_message(text: str, brand: str | None = None) -> dict:
    entities = [{"entity": "brand", "value": brand}] if brand else []
    return {"text": text, "intent": {"name": "contact_support", "confidence": 0.97}, "entities": entities}


@pytest.mark.asyncio
async def test_brand_remembered_from_an_earlier_turn_gives_its_hotline(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionContactSupport().run(dispatcher, load_tracker("tracker_lakala"), domain)
    text = render(domain, dispatcher.messages)[0]
    assert text.startswith("拉卡拉的官方客服热线是 95016。")
    assert "95016" not in text.split("其他渠道：")[1]
    assert events == [SlotSet("brand", "拉卡拉"), SlotSet("answered_topic", "contact_support")]


@pytest.mark.asyncio
async def test_brand_in_the_message_wins_over_the_slot(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("tracker_lakala", **support_message("京东的客服呢", "京东金融"))
    await ActionContactSupport().run(dispatcher, tracker, domain)
    assert "京东金融的官方客服热线是 95118" in render(domain, dispatcher.messages)[0]


@pytest.mark.asyncio
async def test_brand_without_a_sourced_number_gets_channels_not_a_number(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("tracker_new", **support_message("乐刷客服电话", "乐刷"))
    await ActionContactSupport().run(dispatcher, tracker, domain)
    text = render(domain, dispatcher.messages)[0]
    assert text.startswith("我们没有收录乐刷的客服电话")
    assert not any(ch.isdigit() for ch in text)


@pytest.mark.asyncio
async def test_no_brand_asks_with_brand_buttons(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("tracker_new", **support_message("客服电话多少"))
    await ActionContactSupport().run(dispatcher, tracker, domain)
    message = dispatcher.messages[0]
    assert render(domain, [message])[0].startswith("请问您的POS机是哪个品牌的")
    titles = [b["title"] for b in message["buttons"]]
    assert titles == ["银联", "支付宝", "拉卡拉", "京东金融", "其他品牌"]
    assert message["buttons"][2]["payload"] == '/contact_support{"brand": "拉卡拉"}'
    # 其他品牌: its entity value is no KB brand (next test: the general route)
    assert message["buttons"][-1]["payload"] == '/contact_support{"brand": "其他"}'


@pytest.mark.asyncio
async def test_unknown_brand_gets_the_general_route(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("tracker_new", **support_message("/contact_support", "其他"))
    events = await ActionContactSupport().run(dispatcher, tracker, domain)
    assert "机身或贴纸上印的客服电话" in render(domain, dispatcher.messages)[0]
    assert events == [SlotSet("brand", None), SlotSet("answered_topic", "contact_support")]


@pytest.mark.asyncio
async def test_a_complaint_question_gets_the_complaint_route_not_the_hotline(action_store, domain) -> None:
    """ "投诉找谁": the complaint ladder (provider → 12363 …), not only a hotline."""
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("tracker_new", **support_message("pos机乱扣费 我要投诉 该找哪个部门"))
    events = await ActionContactSupport().run(dispatcher, tracker, domain)
    topic_id = events[-1]["value"]
    assert topic_id.startswith("complaint_")
    assert "12363" in "".join(render(domain, dispatcher.messages))


@pytest.mark.asyncio
async def test_every_brand_named_gets_its_hotline(action_store, domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker(
        "tracker_new",
        **{
            "text": "拉卡拉和银联的客服电话分别多少",
            "intent": {"name": "contact_support", "confidence": 0.97},
            "entities": [{"entity": "brand", "value": "拉卡拉"}, {"entity": "brand", "value": "银联"}],
        },
    )
    await ActionContactSupport().run(dispatcher, tracker, domain)
    texts = render(domain, dispatcher.messages)
    assert texts[0].startswith("拉卡拉的官方客服热线是 95016。")
    assert texts[1].startswith("银联的官方客服热线是 95516")
