"""What every answering action needs: the current message's entities and the KB's step lists."""

from __future__ import annotations

import re
from typing import Any, Optional

from rasa_sdk import Tracker

#: What is left of "我用的是拉卡拉的机器" once the brand is removed: fillers only.
_FILLER = re.compile(r"[我们的是用了个机器子pos机POS品牌牌子这那台款嗯哦啊呀吧呢,。.!!??~\s]*")


def entity_values(tracker: Tracker, entity: str) -> list[str]:
    """Values of ``entity`` in the latest message, in order."""
    return [str(e.get("value")) for e in tracker.latest_message.get("entities", [])
            if e.get("entity") == entity and e.get("value") is not None]


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


def is_brand_statement(tracker: Tracker) -> bool:
    """True for "我用的是拉卡拉": a brand and nothing else worth answering."""
    entities: list[dict[str, Any]] = tracker.latest_message.get("entities", [])
    brands = [e for e in entities if e.get("entity") == "brand"]
    if not brands or len(entities) != len(brands):
        return False
    text = latest_text(tracker)
    if text.startswith("/"):
        return False
    for entity in sorted(brands, key=lambda e: -int(e.get("start", 0))):
        text = text[: int(entity["start"])] + text[int(entity["end"]):]
    return not _FILLER.sub("", text)


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


def value_before_message(tracker: Tracker, slot: str) -> Any:
    """The slot's value before the latest user message (None if it was never set)."""
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            seen_user = True
        elif seen_user and event.get("event") == "slot" and event.get("name") == slot:
            return event.get("value")
    return None
