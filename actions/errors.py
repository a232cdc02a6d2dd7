"""Error codes (应答码): meaning and what to do, with the high-risk warning; never a guess."""

from __future__ import annotations

from operator import methodcaller
from typing import Any, Dict, List, Optional, Set, Tuple

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import entity_values
from actions.store import query
from kb.store import ErrorCodeView


def typed_codes(tracker: Tracker) -> Set[str]:
    """Codes the merchant typed as such ("41"), not as their screen text ("挂失卡")."""
    text = str(tracker.latest_message.get("text") or "").upper()
    typed = set()
    for entity in tracker.latest_message.get("entities", []):
        if entity.get("entity") != "error_code" or entity.get("value") is None:
            continue
        value = str(entity["value"]).upper()
        start, end = entity.get("start"), entity.get("end")
        span = text[int(start) : int(end)] if start is not None and end is not None else ""
        if value in span:
            typed.add(value)
    return typed


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
        typed = typed_codes(tracker)
        # One explanation per entry: "显示41 挂失卡" names entry 04/07/34/41… twice (the code
        # and its screen text); the code the merchant typed is the one shown and remembered.
        chosen: Dict[str, Tuple[str, Optional[ErrorCodeView]]] = {}
        for code in codes:
            entry = await query(methodcaller("error_code", code))
            key = entry.name if entry is not None else code
            if key not in chosen or (code in typed and chosen[key][0] not in typed):
                chosen[key] = (code, entry)
        for code, entry in list(chosen.values())[:3]:
            if entry is None:
                dispatcher.utter_message(response="utter_error_code_unknown", code=code)
                continue
            dispatcher.utter_message(
                response="utter_error_code",
                code=code,
                name=entry.name,
                meaning=entry.meaning,
                cause=entry.cause,
                action=entry.action,
            )
            if entry.high_risk:
                dispatcher.utter_message(response="utter_error_code_high_risk")
            elif entry.group != "success":
                dispatcher.utter_message(
                    response="utter_error_code_retry" if entry.retry else "utter_error_code_no_retry"
                )
        codes = [code for code, _ in chosen.values()]
        return [SlotSet("error_code", codes[-1])]
