"""How to reach support: the brand's hotline and channels, or a brand question with buttons."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import current_or_slot
from actions.store import query

LIST_SEPARATOR = "、"


class ActionContactSupport(Action):
    """Hotline only from the KB; a brand without one gets its channels, never a made-up number."""

    def name(self) -> str:
        return "action_contact_support"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        name = current_or_slot(tracker, "brand")
        if not name:
            brands = await query(lambda store: store.brands())
            buttons = [
                {"title": b.name, "payload": f'/contact_support{{"brand": "{b.name}"}}'}
                for b in brands if b.hotline
            ]
            buttons.append({"title": "其他品牌", "payload": '/contact_support{"brand": "其他"}'})
            dispatcher.utter_message(response="utter_ask_brand", buttons=buttons)
            return []
        brand = await query(lambda store: store.brand(name))
        if brand is None:
            dispatcher.utter_message(response="utter_support_unknown_brand")
            return [SlotSet("brand", None)]
        channels = LIST_SEPARATOR.join(
            c for c in brand.channels if not (brand.hotline and brand.hotline in c))
        if brand.hotline:
            dispatcher.utter_message(response="utter_hotline", brand=brand.name,
                                     hotline=brand.hotline, channels=channels)
        else:
            dispatcher.utter_message(response="utter_support_general", brand=brand.name,
                                     channels=channels)
        return [SlotSet("brand", brand.name)]
