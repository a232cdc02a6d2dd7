"""The repair ticket: ``ticket_form`` asks for a contact phone and the terminal's serial number.

Opened after a walk that did not solve the problem (action_offer_repair, actions/
troubleshooting.py) or by a request to file one ("我要报修", vocabulary.yml ``ticket_requests``).
``validate_ticket_form`` accepts a valid number or SN, re-asks clearly otherwise, ends the form on
"算了", and rejects it for a new question so the rules answer that instead.
``action_submit_ticket`` stores the ticket (brand, the walk's symptom and the steps tried) in the
``tickets`` table through ``records.store.RecordStore`` and tells its number.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, ActionExecutionRejection, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import asks_something_else, current_or_slot, intent_of, wants_to_stop
from actions.store import query
from actions.troubleshooting import stage_index, symptom_of
from kb.store import SymptomView
from records.store import RecordStore

logger = logging.getLogger(__name__)

MOBILE_RE = re.compile(r"(?<!\d)(1[3-9]\d{9})(?!\d)")
LANDLINE_RE = re.compile(r"(?<!\d)(0(?:10|2\d|[3-9]\d{2}))-?(\d{7,8})(?!\d)")
SN_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9]|[A-Za-z0-9]")
#: The label a merchant may type before the serial number, as printed on the terminal's sticker.
SN_LABEL_RE = re.compile(r"^(?:S/?N|SN号|序列号)[:：]?", re.IGNORECASE)
SN_MIN, SN_MAX = 6, 32


def parse_phone(text: str) -> Optional[str]:
    """A mainland mobile (13812345678) or a landline with area code (010-12345678), normalised."""
    compact = re.sub(r"[\s()（）]", "", text).replace("－", "-").replace("—", "-")
    mobile = MOBILE_RE.search(compact.replace("-", ""))
    if mobile:
        return mobile.group(1)
    landline = LANDLINE_RE.search(compact)
    if landline:
        return f"{landline.group(1)}-{landline.group(2)}"
    return None


def parse_sn(text: str) -> Optional[str]:
    """A plausible terminal serial number: 6–32 letters/digits/hyphens with at least one digit."""
    candidates = []
    for token in SN_TOKEN_RE.findall(text.strip()):
        token = SN_LABEL_RE.sub("", token) if len(token) > 2 else token
        if SN_MIN <= len(token) <= SN_MAX and any(ch.isdigit() for ch in token):
            candidates.append(token.upper())
    if len(candidates) != 1:
        return None
    return candidates[0]


def steps_tried(symptom: Optional[SymptomView], stage: int) -> List[str]:
    """The titles of the walk's stages up to ``stage``: what the technician need not repeat."""
    if symptom is None:
        return []
    return [s.title for s in symptom.stages[: stage + 1]]


class ValidateTicketForm(FormValidationAction):
    """Phone and SN: accept what is valid, re-ask clearly, let the merchant leave or ask anew."""

    def name(self) -> Text:
        return "validate_ticket_form"

    async def _not_valid(
        self, slot: str, response: str, dispatcher: CollectingDispatcher, tracker: Tracker, text: str
    ) -> Dict[Text, Any]:
        if await wants_to_stop(tracker):
            return {slot: None, "requested_slot": None}  # the form ends; nothing is stored
        if asks_something_else(tracker, text):
            raise ActionExecutionRejection(self.name(), f"{intent_of(tracker)} while asking {slot}")
        dispatcher.utter_message(response=response)
        return {slot: None}

    async def validate_contact_phone(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        text = str(value or "")
        phone = parse_phone(text)
        if phone:
            return {"contact_phone": phone}
        return await self._not_valid(
            "contact_phone", "utter_invalid_contact_phone", dispatcher, tracker, text
        )

    async def validate_terminal_sn(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        text = str(value or "")
        sn = parse_sn(text)
        phone = str(tracker.get_slot("contact_phone") or "")
        if sn and sn.replace("-", "") != phone.replace("-", ""):
            return {"terminal_sn": sn}
        return await self._not_valid("terminal_sn", "utter_invalid_terminal_sn", dispatcher, tracker, text)


class ActionSubmitTicket(Action):
    """Store the ticket and tell its number; a form the merchant left stores nothing."""

    def name(self) -> Text:
        return "action_submit_ticket"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        phone, sn = tracker.get_slot("contact_phone"), tracker.get_slot("terminal_sn")
        clear = [SlotSet("contact_phone", None), SlotSet("terminal_sn", None)]
        if not (phone and sn):
            dispatcher.utter_message(response="utter_ticket_cancelled")
            return clear
        symptom = await symptom_of(tracker)
        tried = steps_tried(symptom, stage_index(tracker.get_slot("ts_stage")))
        brand = current_or_slot(tracker, "brand")
        try:
            ticket = await query(
                lambda kb: RecordStore(kb.engine).add_ticket(
                    tracker.sender_id,
                    brand=brand,
                    symptom=symptom.id if symptom else None,
                    steps_tried=tried,
                    contact=str(phone),
                    sn=str(sn),
                )
            )
        except Exception:
            logger.exception("could not store the ticket of %s", tracker.sender_id)
            dispatcher.utter_message(response="utter_ticket_failed")
            return []
        dispatcher.utter_message(
            response="utter_ticket_created", number=ticket.number, contact=ticket.contact
        )
        return clear
