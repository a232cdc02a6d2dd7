"""Answers for the topic intents, straight from the knowledge base, with a rating prompt.

Fault intents are not answered here: they start guided troubleshooting (actions/troubleshooting.py).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import current_or_slot, is_brand_statement, latest_text, numbered
from actions.store import query
from kb.store import TopicView

logger = logging.getLogger(__name__)


def render_topic(topic: TopicView, brand: Optional[str]) -> str:
    """Short answer, numbered steps, then the brand's own note when we know the brand."""
    parts = [topic.answer]
    if topic.steps:
        parts.append(numbered(topic.steps))
    if brand and brand in topic.brand_notes:
        parts.append(topic.brand_notes[brand])
    return "\n\n".join(parts)


class ActionAnswerTopic(Action):
    """Answer the intent's best-matching topic, tailored to the brand, and offer 有帮助/没帮助."""

    def name(self) -> str:
        return "action_answer_topic"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        brand = current_or_slot(tracker, "brand")
        if is_brand_statement(tracker):
            dispatcher.utter_message(response="utter_brand_noted", brand=brand)
            return [SlotSet("answered_topic", None)]
        intent = str((tracker.latest_message.get("intent") or {}).get("name") or "")
        text = latest_text(tracker)
        topic = await query(lambda store: store.topic_for(intent, text))
        if topic is None:
            logger.error("no KB topic for intent %r: run `posbot kb build`", intent)
            dispatcher.utter_message(response="utter_default")
            return [SlotSet("answered_topic", None)]
        dispatcher.utter_message(text=render_topic(topic, brand))
        dispatcher.utter_message(response="utter_ask_feedback")
        return [SlotSet("answered_topic", topic.id)]
