"""The fee calculator: arithmetic shown, debit cap rule, contract reminder, nonsense refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.fees import ActionAnswerFees, calculate, money
from tests.conftest import load_tracker, render


def fee_message(text: str, **entities: str) -> dict:
    return {
        "text": text,
        "intent": {"name": "fees", "confidence": 0.95},
        "entities": [{"entity": k, "value": v} for k, v in entities.items()],
    }


async def run(tracker_name: str, domain: dict, text: str, **entities: str):
    dispatcher = CollectingDispatcher()
    tracker = load_tracker(tracker_name, **fee_message(text, **entities))
    events = await ActionAnswerFees().run(dispatcher, tracker, domain)
    return render(domain, dispatcher.messages), dispatcher.messages, events


def test_arithmetic_rounds_to_the_fen() -> None:
    assert calculate(Decimal(10000), Decimal("0.6")).fee == Decimal("60.00")
    assert calculate(Decimal("1234.56"), Decimal("0.38")).fee == Decimal("4.69")
    assert money(Decimal(10000)) == "10,000"
    assert money(Decimal("4.69")) == "4.69"


@pytest.mark.asyncio
async def test_credit_card_fee_shows_the_arithmetic_and_the_contract_reminder(action_store, domain):
    texts, _, events = await run(
        "tracker_new", domain, "刷了10000元信用卡,费率0.6%", amount="10000", card_type="信用卡", rate="0.6"
    )
    assert texts[0] == "按费率 0.6% 计算：10,000 元 × 0.6% = 60 元。"
    assert "没有单笔封顶" in texts[1]
    assert "0.6% 是市场上常见的标准类商户费率" in texts[2]
    assert texts[-1] == "以上是估算，实际扣费以您签约的费率和合同条款为准。"
    assert SlotSet("amount", "10000") in events


@pytest.mark.asyncio
async def test_debit_card_explains_the_regulated_caps(action_store, domain):
    texts, _, _ = await run(
        "tracker_new", domain, "储蓄卡刷5万,费率0.5%", amount="50000", card_type="借记卡", rate="0.5"
    )
    assert texts[0] == "按费率 0.5% 计算：50,000 元 × 0.5% = 250 元。"
    assert "单笔最高 13 元" in texts[1] and "6.5 元" in texts[1]
    assert "发改价格〔2016〕557号" in texts[1]


@pytest.mark.asyncio
async def test_missing_rate_is_asked_with_market_rate_buttons(action_store, domain):
    texts, messages, _ = await run("tracker_new", domain, "刷一万块扣多少手续费", amount="10000")
    assert texts[0].startswith("请问您签约的费率是多少")
    assert [b["title"] for b in messages[0]["buttons"]] == ["0.6%（标准类商户）", "0.38%（优惠类行业商户）"]
    assert messages[0]["buttons"][0]["payload"] == '/fees{"rate": "0.6"}'


@pytest.mark.asyncio
async def test_missing_card_type_is_asked(action_store, domain):
    texts, _, _ = await run("tracker_new", domain, "刷一万费率0.6%", amount="10000", rate="0.6")
    assert texts == ["请问刷的是借记卡（储蓄卡）还是信用卡？两者的收费规则不同。"]


@pytest.mark.parametrize(
    ("entity", "value", "expected"),
    [
        ("amount", "-500", "金额 -500 元看起来不太对"),
        ("amount", "99999999999", "金额 99999999999 元看起来不太对"),
        ("rate", "60", "费率 60% 看起来不太对"),
        ("rate", "0", "费率 0% 看起来不太对"),
    ],
)
@pytest.mark.asyncio
async def test_nonsense_numbers_are_refused_politely(action_store, domain, entity, value, expected):
    entities = {"amount": "10000", "rate": "0.6", "card_type": "信用卡", entity: value}
    texts, _, events = await run("tracker_new", domain, "算手续费", **entities)
    assert texts[0].startswith(expected)
    assert events == [SlotSet(entity, None)]


@pytest.mark.asyncio
async def test_general_fee_question_answers_from_the_kb(action_store, domain):
    texts, _, events = await run("tracker_new", domain, "有哪些隐藏费用要注意")
    hidden = action_store.topic("fees_hidden")
    assert texts[0].startswith(hidden.answer)
    assert "1. " in texts[0]
    assert events == [SlotSet("answered_topic", "fees_hidden")]


@pytest.mark.asyncio
async def test_a_fee_rule_question_gets_the_rule_not_the_calculator(action_store, domain):
    """ "信用卡手续费国家有上限吗": the regulation answer, no question about the amount."""
    texts, _, events = await run("tracker_new", domain, "信用卡刷卡手续费国家规定有没有上限")
    assert events == [SlotSet("answered_topic", "fees_cap_rule")]
    rule = action_store.topic("fees_cap_rule")
    assert texts[0].startswith(rule.answer)
    assert "请告诉我这笔交易的金额" not in "".join(texts)


@pytest.mark.asyncio
async def test_an_explicit_request_starts_the_calculator_without_numbers(action_store, domain):
    texts, _, events = await run("tracker_new", domain, "帮我算一下手续费")
    assert texts == ["请告诉我这笔交易的金额，例如“刷了10000元”。"]
    assert events == []


@pytest.mark.asyncio
async def test_a_rate_on_its_own_is_a_question_not_a_calculation(action_store, domain):
    """ "0.6的费率正常吗": no amount, no "帮我算" — the merchant asks about the rules."""
    texts, _, events = await run("tracker_new", domain, "0.6的费率正常吗", rate="0.6")
    assert "请告诉我这笔交易的金额" not in "".join(texts)
    assert events and events[-1]["name"] == "answered_topic"


@pytest.mark.asyncio
async def test_a_bare_rate_typed_alone_starts_the_calculator(action_store, domain):
    """ "0.6%" on its own is the calculator's own example: ask for the amount."""
    dispatcher = CollectingDispatcher()
    message = {
        "text": "0.6%",
        "intent": {"name": "fees", "confidence": 0.95},
        "entities": [{"entity": "rate", "value": "0.6", "start": 0, "end": 4}],
    }
    await ActionAnswerFees().run(dispatcher, load_tracker("tracker_new", **message), domain)
    assert render(domain, dispatcher.messages) == ["请告诉我这笔交易的金额，例如“刷了10000元”。"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text, entities",
    [
        ("买股票手续费怎么算", {}),
        ("炒股1万块要交多少手续费", {"amount": "10000"}),
        ("花呗分期的手续费是多少", {}),
    ],
)
async def test_fees_outside_card_acquiring_get_a_polite_decline(action_store, domain, text, entities):
    texts, _, events = await run("tracker_new", domain, text, **entities)
    assert texts == [domain["responses"]["utter_out_of_scope"][0]["text"]]
    assert not any("×" in t or "费率" in t[:20] for t in texts)
    assert events == [SlotSet("answered_topic", None)]


@pytest.mark.asyncio
async def test_a_pos_fee_question_naming_a_loan_is_still_answered(action_store, domain):
    texts, _, _ = await run(
        "tracker_new",
        domain,
        "刷了10000元信用卡 费率0.6% 算一下 我是拿来还贷款的POS",
        amount="10000",
        card_type="信用卡",
        rate="0.6",
    )
    assert texts[0] == "按费率 0.6% 计算：10,000 元 × 0.6% = 60 元。"


@pytest.mark.asyncio
async def test_the_calculator_button_under_a_fee_answer_starts_the_calculator(action_store, domain):
    texts, _, _ = await run("tracker_new", domain, '/fees{"flow": "fee_calc"}', flow="fee_calc")
    assert texts == [domain["responses"]["utter_ask_fee_amount"][0]["text"]]


@pytest.mark.asyncio
async def test_an_amount_that_was_deducted_is_a_question_not_a_calculation(action_store, domain):
    dispatcher = CollectingDispatcher()
    text = "刷卡突然被扣了99元服务费"
    tracker = load_tracker(
        "tracker_new",
        text=text,
        intent={"name": "fees", "confidence": 0.9},
        entities=[{"entity": "amount", "value": "99", "start": 7, "end": 9}],
    )
    events = await ActionAnswerFees().run(dispatcher, tracker, domain)
    assert events[-1] == SlotSet("answered_topic", "deduction_99")


@pytest.mark.asyncio
async def test_a_deduction_is_a_question_even_with_the_amount_slot_filled(action_store, domain):
    """Rasa's slot mapping has already copied "99" into ``amount`` when the action runs: only
    an amount remembered from an earlier message continues the calculator."""
    from rasa_sdk import Tracker

    tracker = load_tracker(
        "tracker_new",
        text="pos机莫名其妙扣了99块 这是什么钱",
        intent={"name": "fees", "confidence": 0.9},
        entities=[{"entity": "amount", "value": "99", "start": 10, "end": 12}],
    )
    state = tracker.current_state()
    state["events"] = [
        *state["events"],
        {"event": "user", "text": state["latest_message"]["text"]},
        {"event": "slot", "name": "amount", "value": "99"},
    ]
    state["slots"] = {**state["slots"], "amount": "99"}
    tracker = Tracker.from_dict(state)
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerFees().run(dispatcher, tracker, domain)
    assert events[-1] == SlotSet("answered_topic", "deduction_99")
    assert not any("×" in t for t in render(domain, dispatcher.messages))

    state["events"] = [
        {"event": "user", "text": "刷了5000"},
        {"event": "slot", "name": "amount", "value": "5000"},
        *state["events"],
    ]
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerFees().run(dispatcher, Tracker.from_dict(state), domain)
    assert SlotSet("answered_topic", "deduction_99") not in events  # the calculator goes on
    assert render(domain, dispatcher.messages)[0].startswith("请问您签约的费率")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text, number",
    [
        ("每笔交易另外多收3块钱 这是什么费", "3"),
        ("刷卡每笔加收3元秒到费 能不能关掉", "3"),
        ("说好刷满5万退押金 我都刷了8万了还没退", "8万"),
        ("扫码超过1000块费率是不是变高了", "1000"),
        ("刷了10000到账9940 这正常吗", "10000"),
    ],
)
async def test_an_amount_asked_about_as_a_charge_is_a_question_not_a_calculation(
    action_store, domain, text, number
):
    """ "每笔另外多收3块钱 这是什么费": the 3 yuan is a charge the merchant asks about; a deposit's
    condition, a charge to switch off or a rule asked about is no sale to price either."""
    at = text.index(number)
    tracker = load_tracker(
        "tracker_new",
        text=text,
        intent={"name": "fees", "confidence": 0.9},
        entities=[{"entity": "amount", "value": number, "start": at, "end": at + len(number)}],
    )
    dispatcher = CollectingDispatcher()
    await ActionAnswerFees().run(dispatcher, tracker, domain)
    shown = render(domain, dispatcher.messages)
    assert domain["responses"]["utter_ask_fee_rate"][0]["text"] not in shown
    assert not any(t.startswith("按费率") for t in shown), "no fee worked out for a sale"
    assert shown and "元 ×" not in shown[0]


@pytest.mark.asyncio
async def test_a_sale_with_a_request_to_calculate_still_starts_the_calculator(action_store, domain):
    texts, _, _ = await run("tracker_new", domain, "刷了3000块 帮我算下手续费", amount="3000")
    assert texts[0] == domain["responses"]["utter_ask_fee_rate"][0]["text"]
