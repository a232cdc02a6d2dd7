"""Ratings of KB answers: 有帮助 / 没帮助 after action_answer_topic, stored in ``feedback``;
and 都不是 after "您是想问", stored as an unhelpful rating without a topic (staff's learning list).

The buttons send /affirm and /deny (intents are a fixed contract); the rules route those to this
action only right after an answer, and the slot ``answered_topic`` says which answer is rated.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text, Tuple

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import last_response
from actions.store import query
from records.store import RecordStore

logger = logging.getLogger(__name__)


def rated_question(tracker: Tracker) -> Tuple[str, Optional[str]]:
    """Text and intent of the message the rated answer replied to (the one before the rating)."""
    users = [e for e in tracker.events if e.get("event") == "user"]
    if len(users) < 2:
        return "", None
    previous = users[-2]
    intent = ((previous.get("parse_data") or {}).get("intent") or {}).get("name")
    return str(previous.get("text") or ""), intent


def offered_choices(tracker: Tracker) -> bool:
    """Whether the bot's last reply before this message was "您是想问" with topic buttons."""
    return last_response(tracker) == "utter_clarify"


class ActionRecordFeedback(Action):
    """Store the rating and thank the merchant; without a rated answer, a plain ok/no reply."""

    def name(self) -> Text:
        return "action_record_feedback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        topic_id = tracker.get_slot("answered_topic")
        helpful = (tracker.latest_message.get("intent") or {}).get("name") == "affirm"
        none_of_these = not helpful and not topic_id and offered_choices(tracker)
        if not topic_id and not none_of_these:
            dispatcher.utter_message(response="utter_affirm" if helpful else "utter_deny")
            return []
        # 都不是 after "您是想问": the question is recorded (no topic) for staff to answer.
        question, intent = rated_question(tracker)
        try:
            await query(
                lambda kb: RecordStore(kb.engine).add_feedback(
                    tracker.sender_id,
                    topic_id=str(topic_id) if topic_id else None,
                    intent=intent,
                    question=question,
                    helpful=helpful,
                )
            )
        except Exception:
            logger.exception("could not store feedback of %s", tracker.sender_id)
        if none_of_these:
            dispatcher.utter_message(response="utter_none_of_these")
        else:
            dispatcher.utter_message(
                response="utter_feedback_helpful" if helpful else "utter_feedback_unhelpful"
            )
        return [SlotSet("answered_topic", None)]
