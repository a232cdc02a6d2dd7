"""Reading the merchant's latest message: intent, entities, buttons and the KB's word lists.

The words that tell "stop" from "not solved yet", "read" from "tried", or a brand statement from
a question are merchant language: they live in kb/content/vocabulary.yml (kb/vocabulary.py names
the lists) and are read from the KB that `posbot kb build` loaded.
"""

from __future__ import annotations

from typing import Any, Optional

from rasa_sdk import Tracker

from actions.store import query
from kb.vocabulary import (
    ACKNOWLEDGEMENTS,
    FLOW_STOP_WORDS,
    TRIED_MARKERS,
    WILL_TRY_MARKERS,
)

#: Below this confidence a message is an attempt at an answer, not a new question.
NEW_QUESTION_CONFIDENCE = 0.6
NOT_A_NEW_QUESTION = ("affirm", "deny", "nlu_fallback")


def entity_values(tracker: Tracker, entity: str) -> list[str]:
    """Values of ``entity`` in the latest message, in order."""
    return [str(value) for value in tracker.get_latest_entity_values(entity) if value is not None]


def current_or_slot(tracker: Tracker, name: str) -> Optional[str]:
    """The entity in this message if there is one, else what the slot remembers."""
    values = entity_values(tracker, name)
    if values:
        return values[-1]
    value = tracker.get_slot(name)
    return str(value) if value else None


def numbered(steps: list[str]) -> str:
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


def latest_text(tracker: Tracker) -> str:
    return str(tracker.latest_message.get("text") or "")


def intent_of(tracker: Tracker) -> str:
    """The intent of the latest message ("" when there is none). ``nlu_fallback`` is kept: it
    means the NLU was unsure, which the flows answer differently from any intent."""
    ranked = tracker.get_intent_of_latest_message(skip_fallback_intent=False)
    if ranked is not None:
        return str(ranked)
    # An intent Rasa triggered itself (reminders, /trigger_intent) comes without a ranking.
    return str((tracker.latest_message.get("intent") or {}).get("name") or "")


def intent_confidence(tracker: Tracker) -> float:
    return float((tracker.latest_message.get("intent") or {}).get("confidence") or 0.0)


def is_payload(tracker: Tracker) -> bool:
    """A button (or a typed "/intent"), not words."""
    return latest_text(tracker).startswith("/")


def _bare(text: str) -> str:
    """Lower-case letters, digits and Chinese characters only: "好的！🙏" → "好的"."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


async def wants_to_stop(tracker: Tracker) -> bool:
    """ "算了" / "不用了" (vocabulary.yml ``flow_stop_words``): typed words only, a button never
    means stop."""
    text = latest_text(tracker)
    if not text.strip() or is_payload(tracker):
        return False
    return await query(lambda kb: kb.mentions(text, FLOW_STOP_WORDS))


async def only_acknowledges(tracker: Tracker) -> bool:
    """A typed "好的" / "谢谢" / "我去试试": the steps were read, there is no result yet."""
    if is_payload(tracker):
        return False  # the 解决了 button
    bare = _bare(latest_text(tracker))
    if not bare:
        return False
    if bare in await query(lambda kb: kb.words(ACKNOWLEDGEMENTS)):
        return True
    return await query(lambda kb: kb.mentions(bare, WILL_TRY_MARKERS)) and not await query(
        lambda kb: kb.mentions(bare, TRIED_MARKERS)
    )


def asks_something_else(tracker: Tracker, text: str) -> bool:
    """A confident other intent and no digits: a new question, not a (wrong) phone or SN."""
    return (
        intent_of(tracker) not in NOT_A_NEW_QUESTION
        and intent_confidence(tracker) >= NEW_QUESTION_CONFIDENCE
        and not any(ch.isdigit() for ch in text)
    )


def is_new_answer(tracker: Tracker) -> bool:
    """True when a form validates a message the merchant just sent.

    The form also validates when it is re-entered after action_start_troubleshooting (a new fault
    while the form is active); then the message was already handled and must not count as an
    answer. Rasa inserts the form's own ActionExecuted before calling the validation action, so a
    fresh answer has exactly one action after the latest user message.
    """
    actions = 0
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return actions <= 1
        if event.get("event") == "action" and event.get("name") != "action_listen":
            actions += 1
    return False


async def is_brand_statement(tracker: Tracker) -> bool:
    """True for "我用的是拉卡拉": a brand and nothing else worth answering (what is left once the
    brand is removed are words of vocabulary.yml ``brand_statement_fillers``, punctuation and
    spaces)."""
    entities: list[dict[str, Any]] = tracker.latest_message.get("entities", [])
    brands = [e for e in entities if e.get("entity") == "brand"]
    if not brands or len(entities) != len(brands) or is_payload(tracker):
        return False
    text = latest_text(tracker)
    spans = [(int(e["start"]), int(e["end"])) for e in brands]
    return bool(await query(lambda kb: kb.is_brand_statement(text, spans)))


def previous_turn(tracker: Tracker) -> list[dict[str, Any]]:
    """The events between the merchant's previous message and the latest one, newest first:
    what the bot did in answer to the message before this one."""
    turn: list[dict[str, Any]] = []
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            if seen_user:
                break
            seen_user = True
        elif seen_user:
            turn.append(event)
    return turn


def last_response(tracker: Tracker) -> Optional[str]:
    """The domain response (``utter_…``) of the bot's last message before the latest one."""
    said = next((e for e in previous_turn(tracker) if e.get("event") == "bot"), None)
    return (said.get("metadata") or {}).get("utter_action") if said is not None else None


def value_before_message(tracker: Tracker, slot: str) -> Any:
    """The slot's value before the latest user message (None if it was never set)."""
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            seen_user = True
        elif seen_user and event.get("event") == "slot" and event.get("name") == slot:
            return event.get("value")
    return None
