"""Human handoff: the request is recorded, the contact route is real, the bot pauses."""

from __future__ import annotations

import pytest
from rasa_sdk.events import ConversationPaused
from rasa_sdk.executor import CollectingDispatcher

from actions.handoff import ActionHandoff
from kb.records import RecordStore
from tests.actions.conftest import answer
from tests.conftest import load_tracker, render


@pytest.mark.asyncio
async def test_handoff_is_recorded_the_hotline_given_and_the_bot_paused(
        action_store, flow_domain, records: RecordStore) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, load_tracker("handoff_request"), flow_domain)
    [handoff] = records.handoffs()
    assert (handoff.conversation_id, handoff.brand, handoff.status) == (
        "merchant-handoff", "拉卡拉", "waiting")
    assert handoff.question == "我用的是拉卡拉 / 结算的钱一直没到账 / 转人工"
    assert render(flow_domain, dispatcher.messages) == [
        f"好的，已为您登记转人工，登记号 {handoff.id}。工作人员会查看我们的对话记录；"
        "在人工处理期间，我先暂停自动回复。",
        "想尽快和人工客服通话的话，请直接拨打拉卡拉官方客服热线 95016。",
    ]
    assert dispatcher.messages[-1]["custom"] == {"posbot": {"handoff": "started"}}
    assert events == [ConversationPaused()]


@pytest.mark.parametrize("brand", [None, "银盛"])
@pytest.mark.asyncio
async def test_without_a_sourced_hotline_no_number_is_invented(action_store, flow_domain, records,
                                                                brand) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("handoff_request", brand=brand)
    await ActionHandoff().run(dispatcher, tracker, flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[1] == ("想尽快和人工客服通话的话，请拨打您机身或贴纸上印的客服电话，"
                        "也可以通过品牌官方App或官网的在线客服联系。")
    assert not any(ch.isdigit() for ch in texts[1])
    assert records.handoffs()[0].brand == brand


@pytest.mark.asyncio
async def test_if_the_request_cannot_be_stored_the_bot_does_not_pause(action_store, flow_domain,
                                                                      monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is down")

    monkeypatch.setattr(RecordStore, "add_handoff", broken)
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, load_tracker("handoff_request"), flow_domain)
    assert events == []
    assert render(flow_domain, dispatcher.messages)[0].startswith("想尽快和人工客服通话的话")
