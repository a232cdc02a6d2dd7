"""FAQ answers chosen by retrieval (kb/retrieval.py), shared by every action that answers a topic.

The NLU's intent ranking is a prior, not a filter: the topic whose questions are nearest to the
merchant's message wins, whichever intent it belongs to. Below the confidence bar the bot says it
is unsure and offers the nearest topics as buttons instead of sending a default answer as if it
were the answer. Every button that leads to a topic carries its id (entity ``kb_topic``), so
pressing it answers exactly that topic.
"""

from __future__ import annotations

import json
import logging
from operator import methodcaller
from typing import Any, Dict, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import entity_values, latest_text, numbered
from actions.store import query
from kb.retrieval import Match, confident, suggestions
from kb.store import CATEGORY_INTENTS, KnowledgeStore, TopicView

logger = logging.getLogger(__name__)

RELATED = 2
#: The repair-ticket form (data/rules/troubleshooting.yml), opened by a request to file one.
TICKET_FORM = "ticket_form"
#: Flows a topic's answer links to with a button (entity ``flow``): its title, the intent sent.
FLOW_BUTTONS = {
    "fee_calc": ("utter_button_fee_calc", "fees"),
    "ticket": ("utter_button_ticket", "contact_support"),
}


def intent_probabilities(tracker: Tracker) -> Dict[str, float]:
    ranking = tracker.latest_message.get("intent_ranking") or []
    return {str(r.get("name")): float(r.get("confidence") or 0.0) for r in ranking}


def rank(store: KnowledgeStore, text: str, priors: Dict[str, float], limit: int = 5) -> List[Match]:
    """Nothing for a message with nothing to look up ("嗯嗯嗯那个啥"): the bot asks."""
    if store.says_nothing(text):
        return []
    return store.topic_index().rank(text, priors, limit=limit)


async def retrieve(tracker: Tracker, limit: int = 5, *, use_intent: bool = True) -> List[Match]:
    """Topics for the latest message, best first (empty for a button payload). Without
    ``use_intent`` every topic starts equal (the NLU was unsure of the intent)."""
    text = latest_text(tracker)
    if not text.strip() or text.startswith("/"):
        return []
    priors = intent_probabilities(tracker) if use_intent else {}
    return await query(lambda store: rank(store, text, priors, limit))


async def chosen_topic(tracker: Tracker) -> Optional[TopicView]:
    """The topic a button named (``kb_topic`` entity), if any."""
    for topic_id in reversed(entity_values(tracker, "kb_topic")):
        topic = await query(methodcaller("topic", topic_id))
        if topic is not None:
            return topic
    return None


def render_topic(topic: TopicView, brands: List[str]) -> str:
    """Short answer, numbered steps, then the note of every brand the merchant named."""
    parts = [topic.answer]
    if topic.steps:
        parts.append(numbered(topic.steps))
    for brand in dict.fromkeys(brands):
        if brand in topic.brand_notes:
            parts.append(topic.brand_notes[brand])
    return "\n\n".join(parts)


def topic_button(topic: TopicView) -> Dict[str, str]:
    return {
        "title": topic.title,
        "payload": f"/{topic.intent}{json.dumps({'kb_topic': topic.id}, ensure_ascii=False)}",
    }


async def flow_button(topic: TopicView, domain: Dict[str, Any]) -> Optional[Dict[str, str]]:
    """The button to the topic's flow: its fault walk or a person."""
    flow = topic.flow or ""
    if flow.startswith("walk:"):
        symptom = await query(lambda store: store.symptom(flow[5:]))
        if symptom is None:
            return None
        intent = CATEGORY_INTENTS.get(symptom.category, "fault_hardware")
        title = response_text(domain, "utter_button_walk") or ""
        return {
            "title": title.format(label=symptom.label),
            "payload": f"/{intent}{json.dumps({'symptom': symptom.id})}",
        }
    if flow == "handoff":
        return {"title": response_text(domain, "utter_button_handoff") or "", "payload": "/human_handoff"}
    if flow in FLOW_BUTTONS:
        response, intent = FLOW_BUTTONS[flow]
        return {
            "title": response_text(domain, response) or "",
            "payload": f"/{intent}{json.dumps({'flow': flow})}",
        }
    return None


def response_text(domain: Dict[str, Any], name: str) -> Optional[str]:
    variants = (domain.get("responses") or {}).get(name) or []
    return variants[0].get("text") if variants else None


def response_buttons(domain: Dict[str, Any], name: str) -> List[Dict[str, str]]:
    """The buttons of a domain response, for an action that sends them after its own."""
    variants = (domain.get("responses") or {}).get(name) or []
    return [dict(button) for button in variants[0].get("buttons") or []] if variants else []


async def related_buttons(
    topic: TopicView, matches: List[Match], domain: Dict[str, Any]
) -> List[Dict[str, str]]:
    """The topic's flow, then the next nearest topics worth offering."""
    buttons = []
    flow = await flow_button(topic, domain)
    if flow:
        buttons.append(flow)
    for match in suggestions([m for m in matches if m.topic_id != topic.id], RELATED):
        other = await query(methodcaller("topic", match.topic_id))
        if other is not None:
            buttons.append(topic_button(other))
    return buttons


async def offer_choices(
    dispatcher: CollectingDispatcher, matches: List[Match], domain: Dict[str, Any]
) -> bool:
    """ "您是想问：" with the nearest topics and 都不是; False when nothing is near enough."""
    buttons = []
    for match in suggestions(matches):
        topic = await query(methodcaller("topic", match.topic_id))
        if topic is not None:
            buttons.append(topic_button(topic))
    if not buttons:
        return False
    buttons.append({"title": response_text(domain, "utter_clarify_none") or "", "payload": "/deny"})
    dispatcher.utter_message(response="utter_clarify", buttons=buttons)
    return True


async def answer(
    dispatcher: CollectingDispatcher,
    topic: TopicView,
    brands: List[str],
    matches: List[Match],
    domain: Dict[str, Any],
    *,
    ask_feedback: bool,
) -> None:
    """Send the topic; then its flow and related topics as buttons (with 有帮助/没帮助 when
    ``ask_feedback``, i.e. when action_answer_topic answers and the feedback rules apply)."""
    dispatcher.utter_message(text=render_topic(topic, brands))
    buttons = await related_buttons(topic, matches, domain)
    if ask_feedback:
        dispatcher.utter_message(
            text=response_text(domain, "utter_ask_feedback"),
            buttons=response_buttons(domain, "utter_ask_feedback") + buttons,
        )
    elif buttons:
        dispatcher.utter_message(response="utter_related", buttons=buttons)


def is_confident(matches: List[Match]) -> bool:
    return confident(matches)


async def best_topic(tracker: Tracker, matches: List[Match]) -> Optional[TopicView]:
    """The topic a button named, else the clearly nearest one, else None."""
    topic = await chosen_topic(tracker)
    if topic is None and confident(matches):
        topic = await query(lambda store: store.topic(matches[0].topic_id))
    return topic


async def answer_or_offer(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    domain: Dict[str, Any],
    brands: List[str],
    *,
    ask_feedback: bool,
) -> List[Dict[str, Any]]:
    """Answer the nearest topic when retrieval is sure enough; otherwise say so and offer the
    nearest topics ("您是想问"), or ask to rephrase when nothing is near. Never a default topic."""
    matches = await retrieve(tracker)
    topic = await best_topic(tracker, matches)
    if topic is None:
        if not await offer_choices(dispatcher, matches, domain):
            dispatcher.utter_message(response="utter_rephrase_failed")
        return [SlotSet("answered_topic", None)]
    await answer(dispatcher, topic, brands, matches, domain, ask_feedback=ask_feedback)
    return [SlotSet("answered_topic", topic.id)]


async def wants_ticket(tracker: Tracker) -> bool:
    """ "我要报修", "帮我登记一下维修": the merchant asks to file a repair request now
    (words: vocabulary.yml ``ticket_requests``); the action then hands over to ticket_form."""
    text = latest_text(tracker)
    if not text.strip() or text.startswith("/"):
        return False
    return await query(lambda store: store.mentions(text, "ticket_requests"))


async def declines_other_finance(dispatcher: CollectingDispatcher, tracker: Tracker) -> bool:
    """ "买股票手续费怎么算", "花呗怎么还款": finance outside card acquiring gets the polite
    out-of-scope answer, never the POS fee formula or a POS topic (words: vocabulary.yml)."""
    text = latest_text(tracker)
    if not text.strip() or text.startswith("/"):
        return False
    if not await query(lambda store: store.is_other_finance(text)):
        return False
    dispatcher.utter_message(response="utter_out_of_scope")
    return True


#: The family of the generic fault answers ("POS机硬件坏了怎么办", kb/content/topics/core.yml).
OVERVIEW = "overview"


def walk_does_better(topic: TopicView, asking: bool = False) -> bool:
    """For a fault report the guided walk, which asks what exactly is wrong, helps more than a
    generic overview of faults (family ``overview``); a question about causes or what to do in
    general ("通讯失败一般是什么原因", ``asking``) gets the overview."""
    return topic.family == OVERVIEW and not asking
