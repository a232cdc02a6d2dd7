"""The cached SQL tracker store returns exactly what Rasa's SQL store reads from the database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rasa.core.tracker_store import FailSafeTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity

from bot.outage import StoreUnavailable
from bot.settings import PROJECT_ROOT, SettingsError
from bot.speedups import registry
from bot.stores import CachedSQLTrackerStore


@pytest.fixture(scope="module")
def rasa_domain() -> Domain:
    return Domain.load(str(PROJECT_ROOT / "bot" / "domain"))


def cached(domain: Domain, db: Path, **kwargs) -> CachedSQLTrackerStore:
    return CachedSQLTrackerStore(domain=domain, dialect="sqlite", db=str(db), **kwargs)


def turn(text: str, intent: str, answer: str) -> list[Event]:
    now = time.time()
    return [
        UserUttered(text, {"name": intent, "confidence": 0.9}, timestamp=now),
        ActionExecuted("utter_greet", timestamp=now + 0.001),
        BotUttered(answer, timestamp=now + 0.002),
        ActionExecuted("action_listen", timestamp=now + 0.003),
    ]


def conversation(domain: Domain, sender: str, *events: Event) -> DialogueStateTracker:
    return DialogueStateTracker.from_events(sender, list(events), domain.slots)


async def save_and_read_back(
    domain: Domain, db: Path, tracker: DialogueStateTracker
) -> tuple[CachedSQLTrackerStore, dict, dict]:
    """Save through the cached store; read back from its memory and with Rasa's own SQL store."""
    store = cached(domain, db)
    await store.save(tracker)
    from_memory = await store.retrieve(tracker.sender_id)
    from_database = await SQLTrackerStore(domain, dialect="sqlite", db=str(db)).retrieve(tracker.sender_id)
    return store, state(from_memory), state(from_database)


def state(tracker: DialogueStateTracker) -> dict:
    current = tracker.current_state(EventVerbosity.ALL)
    return {
        "events": current["events"],
        "slots": current["slots"],
        "latest_message": current["latest_message"],
    }


@pytest.mark.asyncio
async def test_a_remembered_conversation_equals_the_database_copy(rasa_domain, tmp_path) -> None:
    tracker = conversation(
        rasa_domain,
        "m1",
        *turn("你好", "greet", "您好"),
        SlotSet("brand", "拉卡拉"),
        *turn("打印机不出纸", "fault_hardware", "请…"),
    )

    store, from_memory, from_database = await save_and_read_back(rasa_domain, tmp_path / "t.db", tracker)

    assert store.hits == 1
    assert from_memory == from_database
    assert from_memory["slots"]["brand"] == "拉卡拉"


@pytest.mark.asyncio
async def test_only_the_latest_session_comes_back_as_from_the_database(rasa_domain, tmp_path) -> None:
    old = turn("刷卡显示A0", "error_code", "A0 是…")
    time.sleep(0.01)
    tracker = conversation(
        rasa_domain,
        "m2",
        *old,
        ActionExecuted("action_session_start"),
        SessionStarted(),
        SlotSet("brand", "银联"),
        ActionExecuted("action_listen"),
        *turn("谢谢", "thanks", "不客气"),
    )

    store, from_memory, from_database = await save_and_read_back(rasa_domain, tmp_path / "t.db", tracker)

    assert store.hits == 1
    assert from_memory == from_database
    assert "刷卡显示A0" not in [e.get("text") for e in from_memory["events"]]


@pytest.mark.asyncio
async def test_events_written_by_another_server_are_read_from_the_database(rasa_domain, tmp_path) -> None:
    first, second = cached(rasa_domain, tmp_path / "t.db"), cached(rasa_domain, tmp_path / "t.db")
    await first.save(conversation(rasa_domain, "m3", *turn("你好", "greet", "您好")))

    elsewhere = await second.retrieve("m3")
    elsewhere.update_with_events(turn("转人工", "human_handoff", "好的"), rasa_domain)
    await second.save(elsewhere)
    seen = await first.retrieve("m3")

    assert first.misses == 1 and first.hits == 0
    assert [e.get("text") for e in state(seen)["events"] if e["event"] == "user"] == ["你好", "转人工"]


@pytest.mark.asyncio
async def test_memory_is_bounded_and_can_be_switched_off(rasa_domain, tmp_path, monkeypatch) -> None:
    store = cached(rasa_domain, tmp_path / "t.db", cached_conversations=2)
    for sender in ("a", "b", "c"):
        await store.save(conversation(rasa_domain, sender, *turn("你好", "greet", "您好")))
    assert list(store._sessions) == ["b", "c"]
    assert (await store.retrieve("a")).sender_id == "a" and store.misses == 1

    monkeypatch.setenv("POSBOT_TRACKER_CACHE", "0")
    off = cached(rasa_domain, tmp_path / "t.db")
    await off.save(conversation(rasa_domain, "d", *turn("你好", "greet", "您好")))
    assert (await off.retrieve("d")).latest_message.text == "你好"
    assert (off.hits, off.misses) == (0, 1)


def test_a_bad_memory_setting_stops_the_store_naming_it(rasa_domain, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POSBOT_TRACKER_CACHE", "lots")
    with pytest.raises(SettingsError, match="POSBOT_TRACKER_CACHE='lots'"):
        cached(rasa_domain, tmp_path / "t.db")


@pytest.mark.asyncio
async def test_the_store_brings_the_outage_fix_wherever_it_is_built(rasa_domain, tmp_path) -> None:
    """Without bot/serve.py (``rasa shell``, a test): an unreachable database still reaches the
    channels as ``StoreUnavailable`` instead of Rasa's empty conversation."""
    registry.revert()
    try:
        store = cached(rasa_domain, tmp_path / "t.db")
        failsafe = FailSafeTrackerStore(store)
        store.engine.dispose()
        (tmp_path / "t.db").unlink()
        (tmp_path / "t.db").mkdir()  # the database file cannot be opened any more
        with pytest.raises(StoreUnavailable):
            await failsafe.retrieve("m")
        assert registry.installed() == ["outage-save", "outage-read"]
    finally:
        registry.install()


@pytest.mark.asyncio
async def test_sqlite_runs_in_write_ahead_log_mode(rasa_domain, tmp_path) -> None:
    store = cached(rasa_domain, tmp_path / "t.db")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


async def stored_texts(domain: Domain, db: Path, sender: str) -> list[str]:
    """The user messages of the latest session, as Rasa's own SQL store reads them."""
    tracker = await SQLTrackerStore(domain, dialect="sqlite", db=str(db)).retrieve(sender)
    return [e.text for e in tracker.events if isinstance(e, UserUttered)]


@pytest.mark.asyncio
async def test_later_turns_append_exactly_the_new_events(rasa_domain, tmp_path) -> None:
    store = cached(rasa_domain, tmp_path / "t.db")
    await store.save(conversation(rasa_domain, "m5", *turn("你好", "greet", "您好")))
    for text in ("打印机不出纸", "谢谢"):
        tracker = await store.retrieve("m5")
        tracker.update_with_events(turn(text, "thanks", "好的"), rasa_domain)
        await store.save(tracker)
    await store.save(tracker)  # nothing new: nothing written twice

    assert store.fast_saves == 3
    assert await stored_texts(rasa_domain, tmp_path / "t.db", "m5") == ["你好", "打印机不出纸", "谢谢"]
    _, from_memory, from_database = await save_and_read_back(
        rasa_domain, tmp_path / "t.db", await store.retrieve("m5")
    )
    assert from_memory == from_database


@pytest.mark.asyncio
async def test_a_write_between_reading_and_saving_takes_rasas_own_path(rasa_domain, tmp_path) -> None:
    first, second = cached(rasa_domain, tmp_path / "t.db"), cached(rasa_domain, tmp_path / "t.db")
    await first.save(conversation(rasa_domain, "m6", *turn("你好", "greet", "您好")))
    mine = await first.retrieve("m6")
    theirs = await second.retrieve("m6")
    theirs.update_with_events(turn("转人工", "human_handoff", "好的"), rasa_domain)
    await second.save(theirs)

    mine.update_with_events(turn("谢谢", "thanks", "不客气"), rasa_domain)
    await first.save(mine)

    assert first.fast_saves == 0
    # Rasa's rule for a stale tracker: the rows after the stored count are appended.
    texts = await stored_texts(rasa_domain, tmp_path / "t.db", "m6")
    assert texts.count("你好") == 1 and "转人工" in texts


def full_state(tracker: DialogueStateTracker) -> dict:
    return {
        **tracker.current_state(EventVerbosity.ALL),
        "slots_set": {n: s.has_been_set for n, s in tracker.slots.items()},
        "paused": tracker.is_paused(),
        "followup": tracker.followup_action,
        "latest_bot": tracker.latest_bot_utterance,
        "loop": tracker.active_loop,
    }


@pytest.mark.asyncio
async def test_recorded_conversations_come_back_turn_by_turn_as_rasa_reads_them(
    rasa_domain, tmp_path
) -> None:
    """Forms, a handoff pause, a restart: saved after every user turn, read back each time."""
    import json

    recorded = json.loads(
        (PROJECT_ROOT / "tests" / "data" / "conversations.json").read_text(encoding="utf-8")
    )
    store = cached(rasa_domain, tmp_path / "t.db")
    rasas = SQLTrackerStore(rasa_domain, dialect="sqlite", db=str(tmp_path / "t.db"))
    compared = 0
    for sender, raw in recorded.items():
        events = [Event.from_parameters(e) for e in raw]
        cuts = [i for i, e in enumerate(events) if isinstance(e, UserUttered)] + [len(events)]
        saved = 0
        for cut in cuts[1:]:
            live = await store.retrieve(sender) or DialogueStateTracker(sender, rasa_domain.slots)
            for event in events[saved:cut]:
                live.update(event)
            saved = cut
            live.clear_followup_action()  # the processor's change without an event
            await store.save(live)
            ours, theirs = await store.retrieve(sender), await rasas.retrieve(sender)
            assert full_state(ours) == full_state(theirs), (sender, cut)
            assert full_state(ours.copy()) == full_state(theirs.copy()), (sender, cut)
            compared += 1
    assert store.hits >= compared > 30
