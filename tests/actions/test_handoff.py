"""Human handoff: the request is recorded, the contact route is real, the bot pauses."""

from __future__ import annotations

import pytest
from rasa_sdk.events import ConversationPaused
from rasa_sdk.executor import CollectingDispatcher

from actions.handoff import ActionHandoff
from records.store import RecordStore
from staff.accounts import StaffStore
from tests.actions.conftest import answer, response_buttons
from tests.conftest import load_tracker, render


@pytest.fixture()
def on_duty(action_store) -> StaffStore:
    """An agent with the staff console open."""
    staff = StaffStore(action_store.engine)
    staff.start_session(staff.add_user("agent1", "agent", "a long password"))
    return staff


@pytest.mark.asyncio
async def test_handoff_is_recorded_the_hotline_given_and_the_bot_paused(
    action_store, flow_domain, records: RecordStore, on_duty
) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, load_tracker("handoff_request"), flow_domain)
    [handoff] = records.handoffs()
    assert (handoff.conversation_id, handoff.brand, handoff.status) == (
        "merchant-handoff",
        "拉卡拉",
        "waiting",
    )
    assert handoff.question == "我用的是拉卡拉 / 结算的钱一直没到账 / 转人工"
    assert render(flow_domain, dispatcher.messages) == [
        f"好的，已为您登记转人工，登记号 {handoff.id}。客服接入后会看到我们的对话记录；"
        "排队期间您发的消息都会转给客服，回复“取消转人工”可以随时回到机器人。",
        "想尽快和人工客服通话的话，请直接拨打拉卡拉官方客服热线 95016。",
    ]
    assert dispatcher.messages[-1]["custom"] == {"posbot": {"handoff": "started"}}
    assert events == [ConversationPaused()]


@pytest.mark.parametrize("brand", [None, "银盛"])
@pytest.mark.asyncio
async def test_without_a_sourced_hotline_no_number_is_invented(
    action_store, flow_domain, records, brand, on_duty
) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("handoff_request", brand=brand)
    await ActionHandoff().run(dispatcher, tracker, flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[1] == (
        "想尽快和人工客服通话的话，请拨打您机身或贴纸上印的客服电话，"
        "也可以通过品牌官方App或官网的在线客服联系。"
    )
    assert not any(ch.isdigit() for ch in texts[1])
    assert records.handoffs()[0].brand == brand


@pytest.mark.asyncio
async def test_if_the_request_cannot_be_stored_the_bot_does_not_pause(
    action_store, flow_domain, monkeypatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is down")

    monkeypatch.setattr(RecordStore, "add_handoff", broken)
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, load_tracker("handoff_request"), flow_domain)
    assert events == []
    assert render(flow_domain, dispatcher.messages)[0].startswith("想尽快和人工客服通话的话")


@pytest.mark.asyncio
async def test_with_no_agent_on_duty_the_merchant_is_told_and_the_bot_keeps_answering(
    action_store, flow_domain, records: RecordStore
) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionHandoff().run(dispatcher, load_tracker("handoff_request"), flow_domain)
    [handoff] = records.handoffs()
    assert handoff.status == "no_agent"
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0].startswith(f"抱歉，现在没有人工客服在线，已为您登记（登记号 {handoff.id}）")
    assert "我继续为您解答" in texts[0]
    assert texts[1] == "想尽快和人工客服通话的话，请直接拨打拉卡拉官方客服热线 95016。"
    assert response_buttons(flow_domain, dispatcher.messages[0]) == [
        ("登记报修", '/contact_support{"flow": "ticket"}')
    ]
    assert events == []  # not paused


@pytest.mark.asyncio
async def test_an_agent_who_closed_the_console_long_ago_is_not_on_duty(
    action_store, flow_domain, records: RecordStore, on_duty: StaffStore
) -> None:
    assert on_duty.agents_on_duty() == 1
    assert on_duty.agents_on_duty(within_seconds=-1) == 0
    on_duty.set_disabled("agent1", True)
    assert on_duty.agents_on_duty() == 0
    events = await ActionHandoff().run(CollectingDispatcher(), load_tracker("handoff_request"), flow_domain)
    assert events == [] and records.handoffs()[0].status == "no_agent"
