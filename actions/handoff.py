"""Human handoff: record the request, tell the merchant how to reach a person, pause the bot.

Only when an agent is on duty (a staff console seen in the last two minutes, staff/accounts.py): with
nobody there the merchant is told so, gets the hotline route and a repair-ticket button, and the
bot keeps answering — never a silent chat. The request is still recorded (status ``no_agent``)
so staff can call back.

The bot stays silent for the conversation (Rasa's ConversationPaused) until staff release it with
``posbot handoff release ID`` (staff/handoff.py), which resumes the conversation over Rasa's HTTP
API. The web widget shows a banner on the custom message ``{"posbot": {"handoff": "started"}}``.
Contact details come only from the KB brand (a cited hotline) or the generic channels text.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.common import current_or_slot
from actions.store import query
from records.store import HANDOFF_NO_AGENT, HANDOFF_WAITING, RecordStore
from staff.accounts import StaffStore

logger = logging.getLogger(__name__)

HANDOFF_SIGNAL: Dict[str, Any] = {"posbot": {"handoff": "started"}}
#: How many of the merchant's recent messages the handoff record keeps for staff.
CONTEXT_MESSAGES = 3


def recent_questions(tracker: Tracker, limit: int = CONTEXT_MESSAGES) -> str:
    """The merchant's last typed messages (no button payloads), oldest first, for staff."""
    texts: List[str] = []
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        text = str(event.get("text") or "").strip()
        if text and not text.startswith("/"):
            texts.append(text)
        if len(texts) >= limit:
            break
    return " / ".join(reversed(texts))


class ActionHandoff(Action):
    """Store the request (``handoffs`` table), give the contact route, pause the conversation."""

    def name(self) -> Text:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        name = current_or_slot(tracker, "brand")
        brand = await query(lambda kb: kb.brand(name)) if name else None
        try:
            on_duty = await query(lambda kb: StaffStore(kb.engine).agents_on_duty())
        except Exception:
            logger.exception("could not tell whether an agent is on duty")
            on_duty = 0
        try:
            record = await query(
                lambda kb: RecordStore(kb.engine).add_handoff(
                    tracker.sender_id,
                    brand=brand.name if brand else name,
                    symptom=tracker.get_slot("symptom"),
                    question=recent_questions(tracker),
                    status=HANDOFF_WAITING if on_duty else HANDOFF_NO_AGENT,
                )
            )
        except Exception:
            # Without a record no one would ever release the pause: stay active, give the route.
            logger.exception("could not record the handoff of %s", tracker.sender_id)
            dispatcher.utter_message(response="utter_human_handoff")
            return []
        if not on_duty:
            # Nobody has the console open: say so, give the route, keep answering (no pause).
            dispatcher.utter_message(response="utter_handoff_no_agent", handoff_id=record.id)
            self._route(dispatcher, brand)
            return []
        dispatcher.utter_message(response="utter_handoff_started", handoff_id=record.id)
        self._route(dispatcher, brand)
        dispatcher.utter_message(json_message=HANDOFF_SIGNAL)
        return [ConversationPaused()]

    @staticmethod
    def _route(dispatcher: CollectingDispatcher, brand: Any) -> None:
        """The brand's cited hotline, else the generic channels text."""
        if brand is not None and brand.hotline:
            dispatcher.utter_message(
                response="utter_handoff_hotline", brand=brand.name, hotline=brand.hotline
            )
        else:
            dispatcher.utter_message(response="utter_human_handoff")
