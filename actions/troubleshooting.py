"""Guided troubleshooting: from a fault message to the KB's stages, one at a time, then a ticket.

The walk is a Rasa form (``troubleshoot_form``, required slots ``symptom`` and ``ts_solved``):

* ``action_start_troubleshooting`` runs on every fault message and on error codes. It resets the
  previous walk, picks the symptom from the message (button payload, KB keywords, component) and
  sets ``ts_start``; the rules start the form only when ``ts_start`` is true. An error code that
  the merchant has to act on (KB group operator/system) starts the walk of the error-code symptom
  with its first stage ("read the code") already done by the code's explanation.
* ``validate_troubleshoot_form`` reads each answer: 解决了/谢谢 → ``solved``; 还没有/还是不行 → the
  next stage, or ``unsolved`` after the last one; 算了/不用了 → ``stopped``; a new fault
  description switches the symptom; a brand alone ("拉卡拉的") is noted and the question asked
  again; anything else rejects the form so the rules in data/rules/leave_flows.yml answer the
  new question instead.
* ``ts_solved`` picks the ending (rules): a prevention tip, an offer of a ticket or a human, or a
  short "ok".

An unsolved walk ends in ``action_offer_repair``: a repair ticket (``ticket_form``, actions/
ticket.py) or a human. The helpers that read the merchant's message (intent, buttons, stop words,
"好的" after the steps) are in actions/common.py.
"""

from __future__ import annotations

import logging
from operator import methodcaller
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.answers import brands_named
from actions.common import (
    NEW_QUESTION_CONFIDENCE,
    current_or_slot,
    entity_values,
    intent_confidence,
    intent_of,
    is_brand_statement,
    is_new_answer,
    is_payload,
    latest_text,
    numbered,
    only_acknowledges,
    value_before_message,
    wants_to_stop,
)
from actions.faq import (
    TICKET_FORM,
    answer,
    chosen_topic,
    is_confident,
    retrieve,
    walk_does_better,
    wants_ticket,
)
from actions.store import query
from kb.retrieval import SYMPTOM_AT, VAGUE, WALK, Match, sure
from kb.store import CATEGORY_INTENTS, SymptomView, TopicView

logger = logging.getLogger(__name__)

INTENT_CATEGORIES = {intent: category for category, intent in CATEGORY_INTENTS.items()}
#: The KB symptom walked after an error code. Its first two stages ("read the code, send it to
#: me"; each code's own advice: 重新签到 for A0, wait and check the network for 96) are what the
#: code's explanation already said, so a walk after an explanation resumes at the third.
CODE_SYMPTOM = "screen_error"
CODE_STAGES_EXPLAINED = 2
#: Error-code groups (kb/content/error_codes.yml) where the merchant, not the card holder, acts.
CODE_GROUPS_NEEDING_ACTION = ("operator", "system")

SOLVED, UNSOLVED, STOPPED = "solved", "unsolved", "stopped"
SOLVED_INTENTS = ("affirm", "thanks")
#: "好的" / "收到" / "谢谢" right after a stage's steps (vocabulary.yml ``acknowledgements``): the
#: merchant has read them, not tried them. Ending the walk on these ("太好了，问题解决了！") would
#: leave a broken terminal without its next steps; asking once more costs a click on 解决了.
#: NLU has no "about to try" intent: "好的 我去试试" comes as affirm, thanks, out_of_scope …
#: but never as deny ("还是不行 我再试试") or a fault ("试试重启 还是一样"), which are results.
ACK_INTENTS = (*SOLVED_INTENTS, "out_of_scope", "nlu_fallback", "goodbye", "greet")

FLOW_RESET: Dict[str, Any] = {"ts_stage": 0, "ts_shown": None, "ts_solved": None, "ts_code": None}


# ---------------------------------------------------------------- stages
def stage_index(value: Any) -> int:
    try:
        return max(int(float(value)), 0)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------- the knowledge base
async def find_symptom(
    tracker: Tracker, *, restrict_to_intent: bool = True, by_meaning: bool = True
) -> Optional[SymptomView]:
    """The symptom of the latest message: a button's id, else KB keywords, else (``by_meaning``)
    the symptom whose reports the message is clearly nearest to, else the component."""
    for value in reversed(entity_values(tracker, "symptom")):
        found = await query(methodcaller("symptom", value))
        if found is not None:
            return found
    if is_payload(tracker):
        return None
    text = latest_text(tracker)
    component = next(iter(reversed(entity_values(tracker, "component"))), None)
    category = INTENT_CATEGORIES.get(intent_of(tracker)) if restrict_to_intent else None
    found = await query(lambda kb: kb.symptom_for(text, None, category))
    if found is None and category is not None:
        found = await query(lambda kb: kb.symptom_for(text, None, None))
    if found is None and by_meaning:
        found = await _symptom_by_meaning(text)
    if found is None and component:
        found = await query(lambda kb: kb.symptom_for(text, component, category))
    return found


async def _symptom_by_meaning(text: str) -> Optional[SymptomView]:
    """No keyword: the symptom whose reports the message is nearest to, when clearly so."""
    matches = await query(lambda kb: kb.symptom_index().rank(text, limit=1))
    if not matches or matches[0].score < SYMPTOM_AT or matches[0].topic_id == VAGUE:
        return None
    return await query(lambda kb: kb.symptom(matches[0].topic_id))


async def _symptom_of_nearest_topics(matches: List[Match]) -> Optional[SymptomView]:
    """No keyword named the symptom: the walk of a topic the message clearly matches."""
    if not sure(matches):
        return None
    topic = await query(lambda kb: kb.topic(matches[0].topic_id))
    if topic is not None and (topic.flow or "").startswith("walk:"):
        return await query(lambda kb: kb.symptom(str(topic.flow)[5:]))
    return None


async def symptom_of(tracker: Tracker) -> Optional[SymptomView]:
    symptom_id = tracker.get_slot("symptom")
    if not symptom_id:
        return None
    return await query(lambda kb: kb.symptom(str(symptom_id)))


def events_from(values: Dict[str, Any]) -> List[EventType]:
    return [SlotSet(name, value) for name, value in values.items()]


# ---------------------------------------------------------------- starting a walk
class ActionStartTroubleshooting(Action):
    """Reset the previous walk and say whether this message starts a new one (slot ts_start)."""

    def name(self) -> Text:
        return "action_start_troubleshooting"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        if intent_of(tracker) == "error_code":
            return await self._from_error_code(tracker)
        if await wants_ticket(tracker):  # "机器坏了 帮我登记一下维修": no walk, the ticket
            return [*events_from({**FLOW_RESET, "ts_start": False}), FollowupAction(TICKET_FORM)]
        # Words first: a symptom named by its keywords, or a topic that answers the message
        # ("屏幕显示终端已锁定" is the lock topic, not a walk); only then the walk whose reports
        # the message means, or of the topic it clearly matches.
        symptom = await find_symptom(tracker, by_meaning=False)
        matches = [] if is_payload(tracker) else await retrieve(tracker)
        decided = await self._by_answer_index(tracker, symptom, matches)
        if isinstance(decided, SymptomView) or decided == VAGUE:
            found = decided.id if isinstance(decided, SymptomView) else None
            return events_from({**FLOW_RESET, "symptom": found, "ts_start": True})
        topic = decided or await self._question_not_fault(tracker, symptom, matches)
        if topic is not None:
            await answer(dispatcher, topic, brands_named(tracker), matches, domain, ask_feedback=False)
            return [*events_from({**FLOW_RESET, "ts_start": False}), SlotSet("answered_topic", topic.id)]
        if symptom is None:
            symptom = await _symptom_of_nearest_topics(matches)
        if symptom is None and not is_payload(tracker):
            symptom = await _symptom_by_meaning(latest_text(tracker))
        return events_from({**FLOW_RESET, "symptom": symptom.id if symptom else None, "ts_start": True})

    @staticmethod
    async def _by_answer_index(tracker: Tracker, symptom: Optional[SymptomView], matches: List[Match]) -> Any:
        """Topic or walk, decided by one classifier over both (kb/store.py ``answer_index``):
        the walk's symptom, ``VAGUE`` (ask which symptom), the topic to answer, or None when it
        is unsure (then the keyword and topic rules below decide). Not for buttons; a how/
        whether question the topic index is sure of stays with the rules."""
        if is_payload(tracker) or entity_values(tracker, "symptom") or entity_values(tracker, "kb_topic"):
            return None
        text = latest_text(tracker)
        ranked = await query(lambda kb: kb.answer_index().rank(text, limit=5))
        if not ranked:
            return None
        best = ranked[0].topic_id
        asking = await query(lambda kb: kb.is_info_question(text))
        if best.startswith(WALK):
            if asking and (is_confident(matches) or ranked[0].score < SYMPTOM_AT):
                return None  # "更新到一半能拔电吗": a question, not a report; the rules decide
            if best[len(WALK) :] == VAGUE:
                return symptom or VAGUE
            return await query(lambda kb: kb.symptom(best[len(WALK) :])) or None
        if not is_confident(ranked):
            return None
        topic = await query(lambda kb: kb.topic(best))
        return None if topic is None or walk_does_better(topic, asking) else topic

    @staticmethod
    async def _question_not_fault(
        tracker: Tracker, symptom: Optional[SymptomView], matches: List[Match]
    ) -> Optional[TopicView]:
        """The topic to answer instead of a walk: a button's topic; else the confident nearest
        topic when the message asks how/whether/how long ("打印头多久清洁一次"), when no walk
        fits it, or when the topic is the specific answer for the walk's own symptom ("小票是
        白纸" → the paper's side, whose answer offers the printer walk as a button) — never the
        generic overview of faults, which the walk does better."""
        chosen = await chosen_topic(tracker)
        if chosen is not None or entity_values(tracker, "symptom") or is_payload(tracker):
            return chosen
        if not is_confident(matches):
            return None
        topic = await query(lambda kb: kb.topic(matches[0].topic_id))
        text = latest_text(tracker)
        asking = await query(lambda kb: kb.is_info_question(text))
        if topic is None or walk_does_better(topic, asking):
            return None
        if symptom is None or asking or (topic.flow == f"walk:{symptom.id}" and sure(matches)):
            return topic
        return None

    async def _from_error_code(self, tracker: Tracker) -> List[EventType]:
        for code in reversed(entity_values(tracker, "error_code")):
            entry = await query(methodcaller("error_code", code))
            if entry is None or entry.high_risk or entry.group not in CODE_GROUPS_NEEDING_ACTION:
                continue
            if await query(lambda kb: kb.symptom(CODE_SYMPTOM)) is None:
                logger.error("KB symptom %r is missing: run `posbot kb build`", CODE_SYMPTOM)
                break
            # The explanation did the symptom's first stages, so the first question is "did that
            # help?" (ts_shown == ts_stage) without new steps; 还没有 goes on to the next stage.
            shown = CODE_STAGES_EXPLAINED - 1
            return events_from(
                {
                    **FLOW_RESET,
                    "symptom": CODE_SYMPTOM,
                    "ts_stage": shown,
                    "ts_shown": shown,
                    "ts_code": entry.code,
                    "ts_start": True,
                }
            )
        return [SlotSet("ts_start", False)]


# ---------------------------------------------------------------- the form's questions
class ActionAskSymptom(Action):
    """Quick replies with every KB symptom label; each button names its symptom id."""

    def name(self) -> Text:
        return "action_ask_symptom"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        symptoms = await query(lambda kb: kb.symptoms())
        buttons = [
            {
                "title": s.label,
                "payload": f'/{CATEGORY_INTENTS.get(s.category, "fault_hardware")}{{"symptom": "{s.id}"}}',
            }
            for s in symptoms
        ]
        dispatcher.utter_message(response="utter_ask_symptom", buttons=buttons)
        return []


class ActionAskTsSolved(Action):
    """Show the current stage's steps (once) and ask whether the problem is solved."""

    def name(self) -> Text:
        return "action_ask_ts_solved"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        symptom = await symptom_of(tracker)
        stage = stage_index(tracker.get_slot("ts_stage"))
        shown = tracker.get_slot("ts_shown")
        if symptom is None or not symptom.stages:
            dispatcher.utter_message(response="utter_ask_ts_solved")
            return []
        stage = min(stage, len(symptom.stages) - 1)
        if shown is not None and stage_index(shown) == stage:
            # Right after an error code's explanation ("……可以再试一次。"): "再试以后……".
            dispatcher.utter_message(
                response="utter_ask_code_solved"
                if intent_of(tracker) == "error_code"
                else "utter_ask_ts_solved"
            )
            return []
        current = symptom.stages[stage]
        if stage == 0:
            dispatcher.utter_message(response="utter_troubleshoot_intro", label=symptom.label)
        if current.data_loss:
            dispatcher.utter_message(response="utter_backup_first")
        if stage == len(symptom.stages) - 1:
            await _brand_hotline_hint(dispatcher, tracker)
        dispatcher.utter_message(
            response="utter_troubleshoot_stage",
            number=stage + 1,
            total=len(symptom.stages),
            title=current.title,
            steps=numbered(current.steps),
        )
        return [SlotSet("ts_shown", stage)]


async def _brand_hotline_hint(dispatcher: CollectingDispatcher, tracker: Tracker) -> None:
    name = current_or_slot(tracker, "brand")
    if not name:
        return
    brand = await query(lambda kb: kb.brand(name))
    if brand is not None and brand.hotline:
        dispatcher.utter_message(response="utter_brand_hotline_hint", brand=brand.name, hotline=brand.hotline)


# ---------------------------------------------------------------- reading the answers
class ValidateTroubleshootForm(FormValidationAction):
    """Turn each answer into the next stage, an ending, a new symptom — or reject the form."""

    def name(self) -> Text:
        return "validate_troubleshoot_form"

    async def extract_symptom(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        requested = tracker.get_slot("requested_slot")
        if requested is None or not is_new_answer(tracker) or entity_values(tracker, "symptom"):
            return {}  # activation, a re-entry, or a button (mapped from the entity)
        intent = intent_of(tracker)
        if requested == "symptom":
            if await is_brand_statement(tracker):
                self._note_brand(dispatcher, tracker)
                return {"symptom": None}  # the symptom buttons again
            if intent in INTENT_CATEGORIES or intent == "nlu_fallback":
                symptom = await find_symptom(tracker)
                if symptom is not None:
                    return {"symptom": symptom.id}
                dispatcher.utter_message(response="utter_symptom_not_found")
                return {"symptom": None}
            if intent == "deny":
                # 算了 → stop; "都不是/不是这些" → none of the listed symptoms: offer a ticket/human.
                return {"ts_solved": STOPPED if await wants_to_stop(tracker) else UNSOLVED}
            if intent == "affirm":
                return {"symptom": None}  # "好的" is not a choice: ask again
            return {}
        if requested == "ts_solved" and intent in INTENT_CATEGORIES:
            # Only a symptom named by its words switches the walk ("现在是打印机不出纸"); "重启了
            # 还是一样" is a result of the current walk, however near it is to 死机.
            symptom = await find_symptom(tracker, by_meaning=False)
            if symptom is not None and symptom.id != tracker.get_slot("symptom"):
                return {"symptom": symptom.id}  # "现在是打印机不出纸": walk the new symptom
        return {}

    async def extract_ts_solved(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "ts_solved" or not is_new_answer(tracker):
            return {}
        if tracker.get_slot("symptom") != value_before_message(tracker, "symptom"):
            return {}  # the symptom just changed: its first stage is asked next
        if await is_brand_statement(tracker):
            self._note_brand(dispatcher, tracker)
            return {"ts_solved": None}  # the form asks again: no stage is skipped
        intent = intent_of(tracker)
        if intent in ACK_INTENTS and await only_acknowledges(tracker):
            dispatcher.utter_message(response="utter_ts_try_first")
            return {"ts_solved": None}  # the form asks again, with the 解决了 / 还没有 buttons
        if intent in SOLVED_INTENTS:
            return {"ts_solved": SOLVED}
        if intent == "deny":
            return {"ts_solved": STOPPED if await wants_to_stop(tracker) else UNSOLVED}
        if intent in INTENT_CATEGORIES and intent_confidence(tracker) >= NEW_QUESTION_CONFIDENCE:
            return {"ts_solved": UNSOLVED}  # "重启了还是一样": still broken
        if intent == "nlu_fallback" or intent in INTENT_CATEGORIES:  # unsure ("正常了" → fault?)
            dispatcher.utter_message(response="utter_ts_not_understood")
            return {"ts_solved": None}
        return {}  # another question: the form is rejected and the rules answer it

    @staticmethod
    def _note_brand(dispatcher: CollectingDispatcher, tracker: Tracker) -> None:
        """ "拉卡拉的" mid-walk: not an answer and not a new question. Rasa's slot mapping
        (from_entity, bot/domain/core.yml) has put the brand in its slot before the form runs;
        its hotline comes with the last stage. The merchant hears that it is noted."""
        dispatcher.utter_message(
            response="utter_brand_noted_in_walk", brand=current_or_slot(tracker, "brand")
        )

    async def validate_symptom(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        if value is None:
            return {"symptom": None}
        symptom = await query(lambda kb: kb.symptom(str(value)))
        if symptom is None:
            return {"symptom": None}
        if tracker.get_slot("requested_slot") is None:
            return {"symptom": symptom.id}  # activation: action_start_troubleshooting set it up
        return {"symptom": symptom.id, "ts_stage": 0, "ts_shown": None, "ts_code": None}

    async def validate_ts_solved(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") == "symptom" and value is not None:
            # 算了 / 都不是 while choosing a symptom: end the form without a symptom.
            return {"ts_solved": value, "requested_slot": None}
        if value != UNSOLVED or tracker.get_slot("requested_slot") != "ts_solved":
            return {"ts_solved": value}
        symptom = await symptom_of(tracker)
        following = stage_index(tracker.get_slot("ts_stage")) + 1
        if symptom is not None and following < len(symptom.stages):
            return {"ts_solved": None, "ts_stage": following}
        return {"ts_solved": UNSOLVED}


# ---------------------------------------------------------------- endings
class ActionTroubleshootSolved(Action):
    """Close a solved walk with the symptom's prevention tip."""

    def name(self) -> Text:
        return "action_troubleshoot_solved"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        symptom = await symptom_of(tracker)
        if symptom is not None and symptom.prevention:
            dispatcher.utter_message(response="utter_troubleshoot_solved", prevention=symptom.prevention)
        else:
            dispatcher.utter_message(response="utter_feedback_helpful")
        return []


class ActionOfferRepair(Action):
    """Every stage tried (or no stages fit): a repair ticket, a human, or nothing for now."""

    def name(self) -> Text:
        return "action_offer_repair"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        symptom = await symptom_of(tracker)
        await _brand_hotline_hint(dispatcher, tracker)
        dispatcher.utter_message(
            response="utter_offer_repair" if symptom is not None else "utter_offer_repair_unlisted"
        )
        return [SlotSet("contact_phone", None), SlotSet("terminal_sn", None)]


class ActionLeaveFlow(Action):
    """The merchant asked something else mid-flow: end the form quietly; the rules answer next."""

    def name(self) -> Text:
        return "action_leave_flow"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        logger.debug("leaving %s for intent %s", tracker.active_loop.get("name"), intent_of(tracker))
        return [
            ActiveLoop(None),
            SlotSet("requested_slot", None),
            SlotSet("ts_solved", None),
            SlotSet("contact_phone", None),
            SlotSet("terminal_sn", None),
        ]
