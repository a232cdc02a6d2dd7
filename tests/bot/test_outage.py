"""PostgreSQL or Redis unreachable: the failure reaches the channels instead of being swallowed.

bot/outage.py and the stores against the real services through relays that are cut and
restored (tests/bot/outage_kit.py), inside a real Rasa ``Agent`` and its ``FailSafeTrackerStore``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.lock_store import LockError
from rasa.core.tracker_store import FailSafeTrackerStore, InMemoryTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker

from bot.outage import SERVICE_UNAVAILABLE, StoreUnavailable, guard, load_text
from bot.speedups import registry
from tests.bot.outage_kit import ASK_AMOUNT, ASK_RATE, Outage, domain, outage  # noqa: F401

pytestmark = [pytest.mark.postgres]


@pytest.fixture(autouse=True, scope="module")
def _as_served() -> None:
    """Rasa patched as bot/serve.py patches it at start (the outage fix and the speed-ups)."""
    registry.install()


def sender() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


async def say(o: Outage, who: str, text: str) -> list[str]:
    """One merchant message through the guarded agent; what the merchant reads."""
    collector = CollectingOutputChannel()
    await guard(o.handle)(UserMessage(text, collector, who, input_channel="rest"))
    return [m["text"] for m in collector.messages]


@pytest.mark.asyncio
async def test_a_failed_read_is_not_turned_into_an_empty_conversation(outage: Outage) -> None:
    who = sender()
    assert await say(outage, who, "算一下手续费") == [ASK_AMOUNT]
    assert await say(outage, who, "10000元") == [ASK_RATE]
    failsafe = outage.agent.tracker_store
    assert isinstance(failsafe, FailSafeTrackerStore)  # Rasa's wrapper is still there

    outage.postgres.cut()
    with pytest.raises(StoreUnavailable):
        await failsafe.retrieve(who)
    with pytest.raises(StoreUnavailable):
        await failsafe.get_or_create_tracker(who)  # Rasa would create an empty one here
    with pytest.raises(StoreUnavailable):
        await failsafe.save(DialogueStateTracker(who, domain().slots))
    with pytest.raises(StoreUnavailable):
        await failsafe.keys()
    assert failsafe._fallback_tracker_store is None  # nothing went to Rasa's in-memory copy
    with pytest.raises(StoreUnavailable):
        await outage.handle(UserMessage("0.6", CollectingOutputChannel(), who))
    assert outage.processor.turns == 2  # the dialogue never ran on an empty conversation

    outage.postgres.restore()
    tracker = await failsafe.retrieve(who)
    assert tracker is not None and tracker.get_slot("amount") == 10000.0
    assert outage.users(who) == ["算一下手续费", "10000元"]


@pytest.mark.asyncio
async def test_other_errors_keep_rasas_fallback() -> None:
    class Broken(InMemoryTrackerStore):
        async def retrieve(self, sender_id: str) -> None:
            raise ValueError("a bug, not an outage")

    failsafe = FailSafeTrackerStore(Broken(domain()))
    assert await failsafe.retrieve("anyone") is None  # Rasa's behaviour, unchanged
    registry.install()  # idempotent: installing twice does not wrap the hooks twice
    assert await failsafe.retrieve("anyone") is None


@pytest.mark.asyncio
async def test_a_connection_closed_while_pooled_is_read_again_not_an_outage(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL came back: the pooled connection is dead, the next read takes a new one."""
    who = sender()
    assert await say(outage, who, "算一下手续费") == [ASK_AMOUNT]
    outage.postgres.cut()
    outage.postgres.restore()  # no message during the cut: the pool still holds dead connections
    with caplog.at_level(logging.INFO, logger="bot.stores"):
        assert await say(outage, who, "10000元") == [ASK_RATE]
    assert "reading conversation" in caplog.text and "not usable" not in caplog.text
    assert outage.users(who) == ["算一下手续费", "10000元"]


@pytest.mark.asyncio
async def test_the_outage_is_logged_once_then_its_end_and_one_line_per_message(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    who = sender()
    assert await say(outage, who, "算一下手续费") == [ASK_AMOUNT]
    outage.postgres.cut()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert await say(outage, who, "10000元") == [SERVICE_UNAVAILABLE]
        outage.postgres.restore()
        assert await say(outage, who, "10000元") == [ASK_RATE]
    store_lines = [r for r in caplog.records if r.name == "bot.stores"]
    assert [r.levelname for r in store_lines if "not usable" in r.message] == ["ERROR"]
    assert [r.levelname for r in store_lines if "reachable again" in r.message] == ["WARNING"]
    guard_lines = [r for r in caplog.records if r.name == "bot.outage"]
    assert len(guard_lines) == 3 and all(r.levelname == "WARNING" for r in guard_lines)
    assert all(who in r.message and "conversation store" in r.message for r in guard_lines)
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert "SELECT" not in caplog.text and "10000元" not in caplog.text  # no SQL, no messages


@pytest.mark.asyncio
async def test_a_save_that_fails_stores_nothing_and_shows_only_the_apology(outage: Outage) -> None:
    """The database goes away in the middle of the turn: the answer already produced is
    dropped, the merchant reads the apology, and the turn is not in the database."""
    who = sender()
    assert await say(outage, who, "算一下手续费") == [ASK_AMOUNT]

    async def cut() -> None:
        outage.postgres.cut()

    outage.processor.before_save = cut
    assert await say(outage, who, "10000元") == [SERVICE_UNAVAILABLE]
    outage.processor.before_save = None
    outage.postgres.restore()
    assert outage.users(who) == ["算一下手续费"]
    assert await say(outage, who, "10000元") == [ASK_RATE]
    assert await say(outage, who, "0.6") == ["10,000 元 × 0.6% = 60 元"]
    assert outage.users(who) == ["算一下手续费", "10000元", "0.6"]


@pytest.mark.asyncio
async def test_redis_down_the_message_is_not_handled_and_the_merchant_is_asked_again(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    who = sender()
    assert await say(outage, who, "算一下手续费") == [ASK_AMOUNT]
    outage.redis.cut()
    with pytest.raises(LockError):
        await outage.handle(UserMessage("10000元", CollectingOutputChannel(), who))
    with caplog.at_level(logging.WARNING, logger="bot.outage"):
        assert await say(outage, who, "10000元") == [SERVICE_UNAVAILABLE]
    assert "conversation lock (Redis)" in caplog.text
    assert outage.processor.turns == 1 and outage.users(who) == ["算一下手续费"]
    outage.redis.restore()
    assert await say(outage, who, "10000元") == [ASK_RATE]
    assert await say(outage, who, "0.6") == ["10,000 元 × 0.6% = 60 元"]
    assert outage.users(who) == ["算一下手续费", "10000元", "0.6"]


def test_the_text_is_required_and_polite(tmp_path: Path) -> None:
    assert "稍后" in SERVICE_UNAVAILABLE and SERVICE_UNAVAILABLE.startswith("抱歉")
    (tmp_path / "empty.yml").write_text('service_unavailable: "  "\n', encoding="utf-8")
    with pytest.raises(ValueError, match="service_unavailable"):
        load_text(tmp_path / "empty.yml")
    (tmp_path / "other.yml").write_text("something_else: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="service_unavailable"):
        load_text(tmp_path / "other.yml")
