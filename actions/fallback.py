"""Clarification when the NLU is unsure: "您是想问:" with the top candidates as buttons."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.common import current_or_slot, is_brand_statement, latest_text
from actions.store import query

NOT_CANDIDATES = {"nlu_fallback", "out_of_scope", "affirm", "deny", "thanks", "goodbye", "greet"}
MAX_CANDIDATES = 3
MIN_CANDIDATE_CONFIDENCE = 0.1


def _response_text(domain: Dict[str, Any], name: str) -> Optional[str]:
    variants = (domain.get("responses") or {}).get(name) or []
    return variants[0].get("text") if variants else None


def _previous_action(tracker: Tracker) -> Optional[str]:
    """The last action the bot ran before this user message."""
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            if seen_user:
                return None
            seen_user = True
        elif seen_user and event.get("event") == "action" and event.get("name") != "action_listen":
            return str(event.get("name"))
    return None


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
        if is_brand_statement(tracker):
            dispatcher.utter_message(response="utter_brand_noted",
                                     brand=current_or_slot(tracker, "brand"))
            return []
        if _previous_action(tracker) == self.name():
            dispatcher.utter_message(response="utter_rephrase_failed")
            return []
        ranking = tracker.latest_message.get("intent_ranking") or []
        candidates = [r["name"] for r in ranking
                      if r.get("name") not in NOT_CANDIDATES
                      and float(r.get("confidence") or 0) >= MIN_CANDIDATE_CONFIDENCE]
        buttons = []
        for intent in candidates[:MAX_CANDIDATES]:
            topic = await query(lambda store, i=intent: store.topic_for(i))
            title = topic.title if topic else _response_text(domain, f"utter_title_{intent}")
            if title:
                buttons.append({"title": title, "payload": f"/{intent}"})
        if not buttons:
            dispatcher.utter_message(response="utter_rephrase_failed")
            return []
        buttons.append({"title": _response_text(domain, "utter_clarify_none") or "",
                        "payload": "/deny"})
        dispatcher.utter_message(response="utter_clarify", buttons=buttons)
        return []
