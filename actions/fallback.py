"""Clarification when the NLU is unsure: "您是想问:" with the top candidates as buttons."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.answers import brands_named
from actions.common import current_or_slot, is_brand_statement, last_response, latest_text, previous_turn
from actions.faq import (
    TICKET_FORM,
    answer,
    is_confident,
    offer_choices,
    response_text,
    retrieve,
    walk_does_better,
    wants_ticket,
)
from actions.store import query
from bot.nlu.numbers import stray_number

NOT_CANDIDATES = {
    "nlu_fallback",
    "out_of_scope",
    "affirm",
    "deny",
    "thanks",
    "goodbye",
    "greet",
    "bot_challenge",
}
MAX_CANDIDATES = 3
MIN_CANDIDATE_CONFIDENCE = 0.1


def _previous_action(tracker: Tracker) -> Optional[str]:
    """The last action the bot ran before this user message."""
    return next(
        (
            str(e.get("name"))
            for e in previous_turn(tracker)
            if e.get("event") == "action" and e.get("name") != "action_listen"
        ),
        None,
    )


class ActionClarify(Action):
    """First miss: offer the likely topics. Second miss in a row: apologise, menu, human."""

    def name(self) -> str:
        return "action_clarify"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        if not any(ch.isalnum() for ch in latest_text(tracker)):
            dispatcher.utter_message(response="utter_ask_describe")
            return []
        if stray_number(latest_text(tracker)):  # "2" to a menu that is gone (bare_values.py)
            # After "请告诉我这笔交易的金额" a small number is a sale without its unit ("50").
            asked_amount = last_response(tracker) == "utter_ask_fee_amount"
            response = "utter_ask_fee_amount_unit" if asked_amount else "utter_number_without_choices"
            dispatcher.utter_message(response=response)
            return []
        if await is_brand_statement(tracker):
            dispatcher.utter_message(response="utter_brand_noted", brand=current_or_slot(tracker, "brand"))
            return []
        if await wants_ticket(tracker):  # "麻烦帮我申请上门修机器": unsure words, a clear request
            return [FollowupAction(TICKET_FORM)]
        if _previous_action(tracker) == self.name():
            dispatcher.utter_message(response="utter_rephrase_failed")
            return []
        # Unsure intent: look across all topics. A clearly nearest topic is answered; otherwise
        # the nearest topics are offered; only with no topic near do the intents' titles serve.
        matches = await retrieve(tracker, use_intent=False)
        if is_confident(matches):
            topic = await query(lambda store: store.topic(matches[0].topic_id))
            if topic is not None and not walk_does_better(topic):
                await answer(dispatcher, topic, brands_named(tracker), matches, domain, ask_feedback=False)
                return [SlotSet("answered_topic", topic.id)]
        if await offer_choices(dispatcher, matches, domain):
            return []
        ranking = tracker.latest_message.get("intent_ranking") or []
        candidates = [
            r["name"]
            for r in ranking
            if r.get("name") not in NOT_CANDIDATES
            and float(r.get("confidence") or 0) >= MIN_CANDIDATE_CONFIDENCE
        ]
        buttons = []
        for intent in candidates[:MAX_CANDIDATES]:
            title = response_text(domain, f"utter_title_{intent}")
            if title:
                buttons.append({"title": title, "payload": f"/{intent}"})
        if not buttons:
            dispatcher.utter_message(response="utter_rephrase_failed")
            return []
        buttons.append({"title": response_text(domain, "utter_clarify_none") or "", "payload": "/deny"})
        dispatcher.utter_message(response="utter_clarify", buttons=buttons)
        return []
