"""Answers to questions, from the knowledge base topic that retrieval finds (actions/faq.py).

Fault reports are not answered here: they start guided troubleshooting (actions/troubleshooting.py).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import current_or_slot, entity_values, is_brand_statement
from actions.faq import TICKET_FORM, answer_or_offer, declines_other_finance, wants_ticket

logger = logging.getLogger(__name__)


def brands_named(tracker: Tracker) -> List[str]:
    """Every brand in the message (a comparison names two), else the remembered one."""
    named = entity_values(tracker, "brand")
    if named:
        return named
    remembered = current_or_slot(tracker, "brand")
    return [remembered] if remembered else []


class ActionAnswerTopic(Action):
    """Answer the nearest topic, tailored to the brand(s), and offer 有帮助/没帮助; when unsure,
    offer the nearest topics instead of guessing."""

    def name(self) -> str:
        return "action_answer_topic"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        if await is_brand_statement(tracker):
            dispatcher.utter_message(response="utter_brand_noted", brand=current_or_slot(tracker, "brand"))
            return [SlotSet("answered_topic", None)]
        if await declines_other_finance(dispatcher, tracker):
            return [SlotSet("answered_topic", None)]
        if await wants_ticket(tracker):  # "麻烦帮我申请上门修机器", whatever the intent
            return [FollowupAction(TICKET_FORM)]
        return await answer_or_offer(dispatcher, tracker, domain, brands_named(tracker), ask_feedback=True)
