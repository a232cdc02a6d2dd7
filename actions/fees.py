"""Card fees: the KB's fee topics, and the calculator for "刷了10000元信用卡,费率0.6%"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.answers import brands_named
from actions.common import current_or_slot, entity_values, latest_text, value_before_message
from actions.faq import answer_or_offer, declines_other_finance
from actions.store import query
from kb.store import FeeItemView, FeeRuleView

MAX_AMOUNT = Decimal(10_000_000)
MAX_RATE = Decimal(5)
CENT = Decimal("0.01")
FEE_ENTITIES = ("amount", "rate", "card_type")
#: What may stand around typed values ("0.6%", "10000元。", "信用卡吧").
_FILLER = re.compile(r"[\s%％元块钱吧呢啊哦的是,，.。!！~]*")


@dataclass(frozen=True)
class FeeResult:
    amount: Decimal
    rate: Decimal
    fee: Decimal


def parse_decimal(value: Optional[str]) -> Optional[Decimal]:
    if value is None:
        return None
    try:
        number = Decimal(str(value).strip().rstrip("%"))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def calculate(amount: Decimal, rate_percent: Decimal) -> FeeResult:
    """Fee = amount × rate, rounded to the fen as receipts show it."""
    fee = (amount * rate_percent / Decimal(100)).quantize(CENT, rounding=ROUND_HALF_UP)
    return FeeResult(amount, rate_percent, fee)


def money(value: Decimal) -> str:
    """10000 → "10,000"; 60.00 → "60"; 6.50 → "6.5"; 0.35 → "0.35"."""
    quantized = value.quantize(CENT, rounding=ROUND_HALF_UP)
    return f"{quantized:,.2f}".rstrip("0").rstrip(".")


def percent(value: Decimal) -> str:
    return format(value.normalize(), "f")


class ActionAnswerFees(Action):
    """With numbers in the message: calculate, asking for what is missing. Without: the KB topic."""

    def name(self) -> str:
        return "action_answer_fees"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        if await declines_other_finance(dispatcher, tracker):
            return [SlotSet("answered_topic", None)]
        text = latest_text(tracker)
        asks_to_calculate, asks_what = await query(
            lambda store: (store.asks_to_calculate(text), store.asks_what_a_fee_is(text))
        )
        # The calculator runs for an amount, an explicit "帮我算", or a rate / card type typed
        # while it is under way (an amount remembered from an earlier message: the slot mapping
        # has already copied this message's amount, "扣了99块" included, into the slot). A rate
        # or card type on its own ("0.6的费率正常吗", "信用卡手续费国家有上限吗")
        # is a question about the rules.
        has_values = any(entity_values(tracker, e) for e in FEE_ENTITIES)
        calculating = (
            asks_to_calculate
            or "fee_calc" in entity_values(tracker, "flow")
            or (_has_transaction_amount(tracker) and not asks_what)
            or (has_values and (value_before_message(tracker, "amount") is not None or _only_values(tracker)))
        )
        if not calculating:
            # A question about fees, not a calculation: the nearest topic (a rule, hidden fees,
            # QR fees, a deposit …), or the nearest topics to choose from.
            return await answer_or_offer(
                dispatcher, tracker, domain, brands_named(tracker), ask_feedback=False
            )
        return await self._calculate(dispatcher, tracker)

    async def _calculate(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> List[Dict[str, Any]]:
        amount_text = current_or_slot(tracker, "amount")
        rate_text = current_or_slot(tracker, "rate")
        card_type = current_or_slot(tracker, "card_type")
        amount, rate = parse_decimal(amount_text), parse_decimal(rate_text)
        if amount is not None and not (Decimal(0) < amount <= MAX_AMOUNT):
            dispatcher.utter_message(response="utter_fee_amount_invalid", amount=amount_text)
            return [SlotSet("amount", None)]
        if rate is not None and not (Decimal(0) < rate <= MAX_RATE):
            dispatcher.utter_message(response="utter_fee_rate_invalid", rate=rate_text)
            return [SlotSet("rate", None)]
        if amount is None:
            dispatcher.utter_message(response="utter_ask_fee_amount")
            return []
        market = await query(lambda store: store.fee_items("market_rate"))
        if rate is None:
            dispatcher.utter_message(response="utter_ask_fee_rate", buttons=_rate_buttons(market))
            return []
        rule: Optional[FeeRuleView] = None
        if card_type:
            rule = await query(lambda store: store.fee_rule(card_type))
        if rule is None:
            dispatcher.utter_message(response="utter_ask_card_type")
            return []
        result = calculate(amount, rate)
        dispatcher.utter_message(
            response="utter_fee_result",
            amount=money(result.amount),
            rate=percent(result.rate),
            fee=money(result.fee),
        )
        if rule.issuer_fee_cap is None:
            dispatcher.utter_message(response="utter_fee_credit_note")
        else:
            regulation = await query(lambda store: store.fee_items("regulation"))
            dispatcher.utter_message(
                response="utter_fee_debit_note",
                document=regulation[0].label if regulation else "",
                issuer_rate=percent(Decimal(str(rule.issuer_rate_cap))),
                issuer_cap=money(Decimal(str(rule.issuer_fee_cap))),
                network_cap=money(Decimal(str(rule.network_fee_cap or 0))),
            )
        for item in market:
            if item.rate is not None and Decimal(str(item.rate)) == result.rate:
                dispatcher.utter_message(
                    response="utter_fee_market_rate_note", rate=percent(result.rate), label=item.label
                )
                break
        dispatcher.utter_message(response="utter_fee_contract_reminder")
        return [
            SlotSet("amount", str(amount)),
            SlotSet("rate", percent(rate)),
            SlotSet("card_type", rule.card_type),
        ]


#: Words right before an amount that make it a deduction, not the sale: "被扣了99元服务费",
#: "到账少了99块", "每年扣36块流量费" ask what the charge is (a KB topic), not for arithmetic.
_DEDUCTION_BEFORE = re.compile(r"(扣了?我?|少了|收了?我|年费|服务费|押金)\s*$")


def _has_transaction_amount(tracker: Tracker) -> bool:
    text = latest_text(tracker)
    for entity in tracker.latest_message.get("entities", []):
        if entity.get("entity") != "amount":
            continue
        start = entity.get("start")
        if start is None or not _DEDUCTION_BEFORE.search(text[: int(start)]):
            return True
    return False


def _only_values(tracker: Tracker) -> bool:
    """ "0.6%", "信用卡": the message is nothing but the values (the calculator's own prompts)."""
    text = latest_text(tracker)
    for entity in sorted(tracker.latest_message.get("entities", []), key=lambda e: -int(e.get("start", 0))):
        if entity.get("entity") in FEE_ENTITIES and "start" in entity and "end" in entity:
            text = text[: int(entity["start"])] + text[int(entity["end"]) :]
    return not _FILLER.sub("", text)


def _rate_buttons(market: List[FeeItemView]) -> List[Dict[str, str]]:
    return [
        {
            "title": f"{percent(Decimal(str(item.rate)))}%（{item.label}）",
            "payload": f'/fees{{"rate": "{percent(Decimal(str(item.rate)))}"}}',
        }
        for item in market
        if item.rate is not None
    ]
