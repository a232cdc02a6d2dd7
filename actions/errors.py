"""Error codes (应答码): meaning and what to do, with the high-risk warning; never a guess."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import entity_values
from actions.store import query


class ActionExplainErrorCode(Action):
    """Explain every code in the message (or the remembered one); ask when there is none."""

    def name(self) -> str:
        return "action_explain_error_code"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        codes = list(dict.fromkeys(c.upper() for c in entity_values(tracker, "error_code")))
        if not codes:
            dispatcher.utter_message(response="utter_ask_error_code")
            return []
        for code in codes[:3]:
            entry = await query(lambda store, c=code: store.error_code(c))
            if entry is None:
                dispatcher.utter_message(response="utter_error_code_unknown", code=code)
                continue
            dispatcher.utter_message(response="utter_error_code", code=entry.code, name=entry.name,
                                     meaning=entry.meaning, cause=entry.cause, action=entry.action)
            if entry.high_risk:
                dispatcher.utter_message(response="utter_error_code_high_risk")
            elif entry.group != "success":
                dispatcher.utter_message(
                    response="utter_error_code_retry" if entry.retry else "utter_error_code_no_retry")
        return [SlotSet("error_code", codes[-1])]
