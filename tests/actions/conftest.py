"""Helpers for the conversation-flow action tests (troubleshooting, ticket, handoff, feedback).

The forms' validation actions need the domain's forms and slots, not only its responses, and a
validation call carries what Rasa's FormAction appends to the tracker (the form's ActionExecuted
and the slot candidates): ``answer`` rewrites a snapshot's last merchant message consistently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
from rasa_sdk import Tracker
from sqlalchemy.engine import Engine

from kb.store import KnowledgeStore
from records.store import RecordStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def flow_domain(domain: dict) -> dict:
    """The merged domain (tests/conftest.py), under the name the flow tests use."""
    return domain


@pytest.fixture()
def records(action_store: KnowledgeStore) -> RecordStore:
    """The records tables in the same in-memory database the actions use in this test."""
    engine: Engine = action_store.engine
    return RecordStore(engine)


def answer(
    name: str,
    text: Optional[str] = None,
    intent: Optional[str] = None,
    confidence: float = 0.98,
    entities: Optional[list[dict]] = None,
    candidate: Optional[tuple[str, Any]] = None,
    **slots: Any,
) -> Tracker:
    """Snapshot ``name`` with its last merchant message replaced by ``text``/``intent``.

    ``candidate`` replaces the slot candidate Rasa appended for the validation call (from_text
    slots carry the message text); ``slots`` override slot values.
    """
    state = json.loads((ROOT / "tests" / "data" / f"{name}.json").read_text(encoding="utf-8"))
    events = state["events"]
    if text is not None or intent is not None:
        user = next(e for e in reversed(events) if e["event"] == "user")
        parse = user["parse_data"]
        if text is not None:
            user["text"] = parse["text"] = text
        if intent is not None:
            parse["intent"] = {"name": intent, "confidence": confidence}
            parse["intent_ranking"] = [parse["intent"]]
        if entities is not None:
            parse["entities"] = entities
        state["latest_message"] = parse
    if candidate is not None:
        slot, value = candidate
        last = events[-1]
        if last["event"] == "slot" and last["name"] == slot:
            last["value"] = value
        else:
            events.append({"event": "slot", "name": slot, "value": value, "timestamp": 0})
        state["slots"][slot] = value
    for slot, value in slots.items():
        state["slots"][slot] = value
    return Tracker.from_dict(state)


def buttons(message: dict) -> list[tuple[str, str]]:
    return [(b["title"], b["payload"]) for b in message.get("buttons") or []]


def response_buttons(domain: dict, message: dict) -> list[tuple[str, str]]:
    """Buttons the merchant sees: the response's own (domain) plus the ones the action added."""
    own = []
    if message.get("response"):
        own = domain["responses"][message["response"]][0].get("buttons") or []
    return [(b["title"], b["payload"]) for b in own] + buttons(message)
