"""How to reach support: the brand's hotline and channels, or a brand question with buttons."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.answers import brands_named
from actions.faq import TICKET_FORM, answer, best_topic, response_buttons, retrieve, wants_ticket
from actions.store import query

LIST_SEPARATOR = "、"
#: The KB topic this action's own answer stands for (reports and ratings name it).
CONTACT_TOPIC = "contact_support"
#: The domain response whose button comes after the brand buttons: "其他品牌" (title and payload
#: are data in bot/domain/responses.yml).
OTHER_BRAND_BUTTON = "utter_button_other_brand"


class ActionContactSupport(Action):
    """Hotline only from the KB; a brand without one gets its channels, never a made-up number."""

    def name(self) -> str:
        return "action_contact_support"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        # "投诉找谁" or "保修多久" also read as contact_support: a clearly nearer topic answers.
        if await wants_ticket(tracker):
            return [FollowupAction(TICKET_FORM)]
        matches = await retrieve(tracker)
        topic = await best_topic(tracker, matches)
        if topic is not None and topic.id != CONTACT_TOPIC:
            await answer(dispatcher, topic, brands_named(tracker), matches, domain, ask_feedback=False)
            return [SlotSet("answered_topic", topic.id)]
        return [*await self._contact(dispatcher, tracker, domain), SlotSet("answered_topic", CONTACT_TOPIC)]

    async def _contact(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        # "拉卡拉和银联的客服电话分别多少": every brand named gets its own answer.
        names = brands_named(tracker)
        if not names:
            brands = await query(lambda store: store.brands())
            buttons = [
                {"title": b.name, "payload": f'/contact_support{{"brand": "{b.name}"}}'}
                for b in brands
                if b.hotline
            ]
            buttons += response_buttons(domain, OTHER_BRAND_BUTTON)
            dispatcher.utter_message(response="utter_ask_brand", buttons=buttons)
            return []
        events: List[Dict[str, Any]] = []
        for name in dict.fromkeys(names):
            events = await self._one(dispatcher, name)
        return events

    @staticmethod
    async def _one(dispatcher: CollectingDispatcher, name: str) -> List[Dict[str, Any]]:
        brand = await query(lambda store: store.brand(name))
        if brand is None:
            dispatcher.utter_message(response="utter_support_unknown_brand")
            return [SlotSet("brand", None)]
        channels = LIST_SEPARATOR.join(
            c for c in brand.channels if not (brand.hotline and brand.hotline in c)
        )
        if brand.hotline:
            dispatcher.utter_message(
                response="utter_hotline", brand=brand.name, hotline=brand.hotline, channels=channels
            )
        else:
            dispatcher.utter_message(response="utter_support_general", brand=brand.name, channels=channels)
        return [SlotSet("brand", brand.name)]
