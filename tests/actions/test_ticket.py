"""The repair ticket: phone and SN validated with a clear re-ask, the ticket stored and numbered."""

from __future__ import annotations

import pytest
from rasa_sdk import ActionExecutionRejection
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.ticket import ActionSubmitTicket, ValidateTicketForm, parse_phone, parse_sn
from records.store import RecordStore
from tests.actions.conftest import answer
from tests.conftest import load_tracker, render

PHONE_REASK = "抱歉，这个号码格式不对：手机号是1开头的11位数字，座机号要带区号。"
SN_REASK = (
    "抱歉，这个序列号看起来不对：序列号通常是6到32位的字母和数字（可能带“-”），而且不是电话号码。"
    "请对照机器背面的标签再输入一次。"
)


def phone_answer(text: str, intent: str = "nlu_fallback", confidence: float = 0.4):
    return answer("ticket_phone", text, intent, confidence, candidate=("contact_phone", text))


def sn_answer(text: str, intent: str = "nlu_fallback", confidence: float = 0.4):
    return answer("ticket_sn", text, intent, confidence, candidate=("terminal_sn", text))


async def validate(tracker, domain) -> tuple[list, list[str]]:
    dispatcher = CollectingDispatcher()
    events = await ValidateTicketForm().run(dispatcher, tracker, domain)
    return events, render(domain, dispatcher.messages)


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("13812345678", "13812345678"),
        ("138 1234 5678", "13812345678"),
        ("我的电话是19912345678", "19912345678"),
        ("010-12345678", "010-12345678"),
        ("0755-1234567", "0755-1234567"),
        ("01012345678", "010-12345678"),
        ("座机 021 87654321", "021-87654321"),
    ],
)
@pytest.mark.asyncio
async def test_mobile_and_landline_numbers_are_accepted(action_store, flow_domain, text, phone) -> None:
    events, said = await validate(phone_answer(text, "contact_support", 0.99), flow_domain)
    assert events == [SlotSet("contact_phone", phone)]
    assert said == []


@pytest.mark.parametrize(
    "text", ["12345", "23812345678", "1381234567", "138123456789", "12812345678", "好的", "010-123"]
)
@pytest.mark.asyncio
async def test_bad_numbers_are_asked_again_clearly(action_store, flow_domain, text) -> None:
    events, said = await validate(
        phone_answer(text, "affirm" if text == "好的" else "nlu_fallback"), flow_domain
    )
    assert events == [SlotSet("contact_phone", None)]
    assert said == [PHONE_REASK]


@pytest.mark.parametrize(
    ("text", "sn"),
    [
        ("N6G1234567", "N6G1234567"),
        ("SN:N6G1234567", "N6G1234567"),
        ("S/N: 00001234-ab", "00001234-AB"),
        ("序列号是 P8A0123456789", "P8A0123456789"),
    ],
)
@pytest.mark.asyncio
async def test_plausible_serial_numbers_are_accepted(action_store, flow_domain, text, sn) -> None:
    events, said = await validate(sn_answer(text), flow_domain)
    assert events == [SlotSet("terminal_sn", sn)]
    assert said == []


@pytest.mark.parametrize(
    "text", ["123", "ABCDEFGH", "没看到", "13812345678", "N6G1234567 N6G7654321", "X" * 40 + "1"]
)
@pytest.mark.asyncio
async def test_implausible_serial_numbers_are_asked_again(action_store, flow_domain, text) -> None:
    events, said = await validate(sn_answer(text), flow_domain)
    assert events == [SlotSet("terminal_sn", None)]
    assert said == [SN_REASK]


@pytest.mark.asyncio
async def test_stop_words_leave_the_ticket_form_quietly(action_store, flow_domain) -> None:
    events, said = await validate(phone_answer("算了", "deny", 0.99), flow_domain)
    assert events == [SlotSet("contact_phone", None), SlotSet("requested_slot", None)]
    assert said == []


@pytest.mark.asyncio
async def test_a_different_question_rejects_the_form_so_the_rules_answer_it(
    action_store, flow_domain
) -> None:
    with pytest.raises(ActionExecutionRejection):
        await validate(sn_answer("手续费怎么算", "fees", 0.99), flow_domain)


def test_parsers_return_none_for_nothing() -> None:
    assert parse_phone("") is None
    assert parse_sn("") is None


@pytest.mark.asyncio
async def test_ticket_is_stored_and_its_number_told(action_store, flow_domain, records: RecordStore) -> None:
    dispatcher = CollectingDispatcher()
    tracker = load_tracker("ticket_filled")
    events = await ActionSubmitTicket().run(dispatcher, tracker, flow_domain)
    [ticket] = records.tickets()
    assert (ticket.conversation_id, ticket.symptom, ticket.contact, ticket.sn) == (
        "merchant-ticket",
        "network",
        "13812345678",
        "N6G1234567",
    )
    assert ticket.steps_tried == ["先检查网络连接", "重新连接后再试", "联系网络服务商或收单机构"]
    assert ticket.brand is None and ticket.created_at is not None
    assert render(flow_domain, dispatcher.messages) == [
        "报修单已登记，单号 BX000001。售后人员会通过 13812345678 联系您，请保持电话畅通；"
        "联系时报上单号，处理会更快。"
    ]
    assert events == [SlotSet("contact_phone", None), SlotSet("terminal_sn", None)]


@pytest.mark.asyncio
async def test_ticket_remembers_the_brand(action_store, flow_domain, records: RecordStore) -> None:
    tracker = answer("ticket_filled", brand="拉卡拉")
    await ActionSubmitTicket().run(CollectingDispatcher(), tracker, flow_domain)
    assert records.tickets()[0].brand == "拉卡拉"


@pytest.mark.asyncio
async def test_a_form_left_early_stores_nothing(action_store, flow_domain, records: RecordStore) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("ticket_filled", terminal_sn=None)
    await ActionSubmitTicket().run(dispatcher, tracker, flow_domain)
    assert records.tickets() == []
    assert render(flow_domain, dispatcher.messages) == ["好的，这次先不登记报修了。需要的时候随时告诉我。"]
