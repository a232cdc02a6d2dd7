"""The caches of one Rasa server stay correct when a conversation moves between servers.

In production (make cluster, docs/deploy.md) two or more Rasa servers share one PostgreSQL
tracker store, and nginx sends each message of a merchant to whichever server is least busy.
Each server keeps the sessions it wrote (bot/stores.py) and the dialogue-state folds
(bot/speedups/states.py) in memory. Here two "servers" (two stores, two fold caches) serve the recorded
conversations in turns A, A, B, B, A, A …: at every turn the serving server must see exactly
what PostgreSQL holds (Rasa's own SQL store reading it), and compute Rasa's own dialogue states,
whether its memory is current (a hit) or the other server wrote since (must be a miss).
"""

from __future__ import annotations

import json
import uuid
from typing import Iterator

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from sqlalchemy import create_engine, text

from bot.settings import PROJECT_ROOT
from bot.speedups import states
from bot.stores import CachedSQLTrackerStore

pytestmark = pytest.mark.postgres
PG = "postgresql://postgres@127.0.0.1:5432"
CONVERSATIONS = json.loads(
    (PROJECT_ROOT / "tests" / "data" / "conversations.json").read_text(encoding="utf-8")
)
SETTINGS = [
    {"ignore_rule_only_turns": False, "rule_only_data": None},
    {"ignore_rule_only_turns": True, "rule_only_data": {"rule_only_slots": [], "rule_only_loops": []}},
]


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(PROJECT_ROOT / "bot" / "domain"))


@pytest.fixture()
def tracker_db() -> Iterator[str]:
    name = f"posbot_caches_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _store(cls: type, domain: Domain, db: str) -> SQLTrackerStore:
    return cls(
        domain=domain,
        dialect="postgresql",
        host="127.0.0.1",
        port=5432,
        db=db,
        username="postgres",
        password="",
        login_db="test",
    )


def full_state(tracker: DialogueStateTracker) -> dict:
    return {
        **tracker.current_state(EventVerbosity.ALL),
        "slots_set": {n: s.has_been_set for n, s in tracker.slots.items()},
        "paused": tracker.is_paused(),
        "followup": tracker.followup_action,
        "latest_bot": tracker.latest_bot_utterance,
        "loop": tracker.active_loop,
    }


class Server:
    """What one Rasa process keeps: its tracker store and its own dialogue-state folds."""

    def __init__(self, domain: Domain, db: str) -> None:
        self.store = _store(CachedSQLTrackerStore, domain, db)
        self.folds = states._Folds()

    def states(
        self, domain: Domain, tracker: DialogueStateTracker, settings: dict, monkeypatch: pytest.MonkeyPatch
    ) -> list:
        monkeypatch.setattr(states, "FOLDS", self.folds)
        return states.states_for_tracker_history(domain, tracker, **settings)


@pytest.mark.asyncio
async def test_two_servers_taking_turns_see_every_event_of_the_other(
    domain: Domain, tracker_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = [Server(domain, tracker_db), Server(domain, tracker_db)]
    rasas = _store(SQLTrackerStore, domain, tracker_db)
    turns = after_other = 0
    for sender, raw in sorted(CONVERSATIONS.items()):
        events = [Event.from_parameters(e) for e in raw]
        cuts = [i for i, e in enumerate(events) if isinstance(e, UserUttered)] + [len(events)]
        saved, last = 0, None
        for index, cut in enumerate(cuts[1:]):
            serving = index // 2 % 2  # A, A, B, B, …: hits and moves both happen
            server = servers[serving]
            misses = server.store.misses
            live = await server.store.retrieve(sender) or DialogueStateTracker(sender, domain.slots)
            stored = await rasas.retrieve(sender)
            if stored is not None:
                assert full_state(live) == full_state(stored), (sender, cut, serving)
                for settings in SETTINGS:
                    assert server.states(domain, live, settings, monkeypatch) == states._original(
                        domain, live, **settings
                    ), (sender, cut, serving)
            if last is not None and last != serving:
                after_other += 1
                assert server.store.misses == misses + 1, "a stale session served from memory"
            for event in events[saved:cut]:
                live.update(event)
            saved, last = cut, serving
            live.clear_followup_action()
            await server.store.save(live)
            turns += 1
        final = await rasas.retrieve(sender)
        assert [e.as_dict() for e in final.events] == [
            e.as_dict() for e in DialogueStateTracker.from_events(sender, events, domain.slots).events
        ][-len(final.events) :], sender
    assert turns > 30 and after_other > 10
    assert all(s.store.hits > 5 and s.store.fast_saves > 5 for s in servers), [
        (s.store.hits, s.store.fast_saves) for s in servers
    ]


@pytest.mark.asyncio
async def test_a_session_written_elsewhere_between_two_reads_is_not_served_from_memory(
    domain: Domain, tracker_db: str
) -> None:
    """A writes, B appends a turn, A reads: A must return B's turn (PostgreSQL ids)."""
    a, b = (_store(CachedSQLTrackerStore, domain, tracker_db) for _ in range(2))
    events = [Event.from_parameters(e) for e in CONVERSATIONS[sorted(CONVERSATIONS)[0]]]
    users = [i for i, e in enumerate(events) if isinstance(e, UserUttered)]
    first = DialogueStateTracker.from_events("m-pg", events[: users[1]], domain.slots)
    await a.save(first)
    assert (await a.retrieve("m-pg")) is not None and a.hits == 1

    theirs = await b.retrieve("m-pg")
    for event in events[users[1] : users[2]]:
        theirs.update(event)
    await b.save(theirs)
    seen = await a.retrieve("m-pg")

    assert a.misses == 1
    assert [e.text for e in seen.events if isinstance(e, UserUttered)] == [
        e.text for e in events[: users[2]] if isinstance(e, UserUttered)
    ]
