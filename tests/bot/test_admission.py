"""The first-come-first-served gate in front of Rasa's message handling (bot/speedups/admission.py)."""

from __future__ import annotations

import asyncio

import pytest
from rasa.core.channels.channel import UserMessage

from bot.settings import Settings, SettingsError
from bot.speedups import admission, registry


async def _run_through(
    gate: admission.FifoGate, names: list[str], entered: list[str], hold: float = 0.01
) -> None:
    async def one(name: str) -> None:
        async with gate:
            entered.append(name)
            assert gate.busy <= gate.slots
            await asyncio.sleep(hold)

    tasks = []
    for name in names:
        tasks.append(asyncio.create_task(one(name)))
        await asyncio.sleep(0)  # arrive in this order
    await asyncio.gather(*tasks)


@pytest.mark.asyncio
async def test_places_go_to_whoever_has_waited_longest() -> None:
    gate = admission.FifoGate(2)
    entered: list[str] = []
    await _run_through(gate, [f"m{i}" for i in range(12)], entered)
    assert entered == [f"m{i}" for i in range(12)]
    assert gate.busy == 0 and gate.waiting == 0


@pytest.mark.asyncio
async def test_a_newcomer_does_not_take_a_place_freed_for_a_waiter() -> None:
    gate = admission.FifoGate(1)
    order: list[str] = []
    await gate.acquire()

    async def waiter() -> None:
        async with gate:
            order.append("waited")

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    gate.release()  # the place is the waiter's now, although it has not run yet
    async with gate:  # arrives after the release, before the waiter runs
        order.append("newcomer")
    await task
    assert order == ["waited", "newcomer"]


@pytest.mark.asyncio
async def test_a_cancelled_wait_loses_no_place() -> None:
    gate = admission.FifoGate(1)
    await gate.acquire()
    gone = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gone.cancel()  # a merchant's request dropped while it waited
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.release()
    assert gate.busy == 0
    handed = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert gate.busy == 1
    later = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # handed to ``later`` ...
    later.cancel()  # ... which is cancelled before it runs: the place passes on
    with pytest.raises(asyncio.CancelledError):
        await later
    await handed
    assert gate.busy == 0 and gate.waiting == 0


@pytest.mark.asyncio
async def test_a_wait_cancelled_just_before_its_turn_is_passed_over_cleanly() -> None:
    """Cancelled, then the place is freed in the same tick, before the waiter runs again."""
    gate = admission.FifoGate(1)
    await gate.acquire()
    gone = asyncio.create_task(gate.acquire())
    after = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)  # the cancellation reaches the waiter's future first
    gate.release()  # skips the cancelled waiter and hands the place to ``after``
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await after is True
    gate.release()
    assert gate.busy == 0 and gate.waiting == 0


@pytest.mark.asyncio
async def test_a_stalled_holder_does_not_stop_everyone() -> None:
    """A message that waited max_wait goes ahead without a place; the places stay counted."""
    gate = admission.FifoGate(1, max_wait=0.05)
    assert await gate.acquire() is True  # held by a message stuck on the action server
    started = asyncio.get_running_loop().time()
    assert await gate.acquire() is False
    # It waited, rather than going ahead at once. uvloop's clock and timers count whole
    # milliseconds, so the wait can read a millisecond short of max_wait.
    assert asyncio.get_running_loop().time() - started >= 0.045
    assert (gate.busy, gate.waiting, gate.went_ahead) == (1, 0, 1)
    gate.release()
    assert await gate.acquire() is True and gate.busy == 1
    with pytest.raises(asyncio.TimeoutError):
        async with gate:
            pass
    gate.release()
    assert gate.busy == 0


@pytest.mark.asyncio
async def test_merchants_behind_a_stalled_message_are_answered(monkeypatch) -> None:
    stalled = asyncio.Event()

    async def rasa(_processor: object, message: UserMessage) -> list[dict]:
        if message.text == "卡住":
            await stalled.wait()  # the action server does not answer
        return [{"text": f"答复 {message.text}"}]

    monkeypatch.setattr(admission, "_rasa_handle_message", rasa)
    monkeypatch.setattr(admission, "SLOTS", 2)
    monkeypatch.setattr(admission, "MAX_WAIT_S", 0.05)
    stuck = [asyncio.create_task(admission.handle_message(None, UserMessage("卡住"))) for _ in range(2)]
    await asyncio.sleep(0)
    answer = await asyncio.wait_for(admission.handle_message(None, UserMessage("你好")), 1)
    assert answer == [{"text": "答复 你好"}]
    stalled.set()
    await asyncio.gather(*stuck)
    assert admission.gate().busy == 0


@pytest.mark.asyncio
async def test_rasa_handles_at_most_the_configured_messages_at_once_in_arrival_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inside: list[int] = []
    answered: list[str] = []
    busy = 0

    async def rasa(_processor: object, message: UserMessage) -> list[dict]:
        nonlocal busy
        busy += 1
        inside.append(busy)
        for _ in range(3):  # a message waits for the action server a few times
            await asyncio.sleep(0.002)
        busy -= 1
        answered.append(message.text)
        return [{"text": f"答复 {message.text}"}]

    monkeypatch.setattr(admission, "_rasa_handle_message", rasa)
    monkeypatch.setattr(admission, "SLOTS", 2)
    replies = await asyncio.gather(
        *[admission.handle_message(None, UserMessage(f"问题{i}", sender_id=f"m{i}")) for i in range(10)]
    )
    assert max(inside) == 2
    assert answered == [f"问题{i}" for i in range(10)]
    assert replies[3] == [{"text": "答复 问题3"}]

    monkeypatch.setattr(admission, "SLOTS", 0)  # off: every message at once
    inside.clear()
    await asyncio.gather(*[admission.handle_message(None, UserMessage(f"问题{i}")) for i in range(10)])
    assert max(inside) == 10


@pytest.mark.parametrize("value, slots", [("2", 2), ("0", 0), (" 5 ", 5)])
def test_the_setting_is_read_as_a_count(value: str, slots: int) -> None:
    assert Settings.from_env({"POSBOT_MAX_INFLIGHT": value}).max_inflight == slots


@pytest.mark.parametrize("value", ["two", "-1", "1.5", ""])
def test_a_wrong_setting_is_named(value: str) -> None:
    with pytest.raises(SettingsError, match="POSBOT_MAX_INFLIGHT"):
        Settings.from_env({"POSBOT_MAX_INFLIGHT": value})


@pytest.mark.parametrize("value", ["soon", "0", "-2"])
def test_a_wrong_wait_is_named(value: str) -> None:
    assert Settings.from_env({"POSBOT_GATE_MAX_WAIT_S": "0.5"}).gate_max_wait_s == 0.5
    with pytest.raises(SettingsError, match="POSBOT_GATE_MAX_WAIT_S"):
        Settings.from_env({"POSBOT_GATE_MAX_WAIT_S": value})


@pytest.mark.asyncio
async def test_installing_the_speed_ups_sets_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate takes its settings when the server installs the speed-ups, not at import."""
    monkeypatch.setattr(admission, "SLOTS", admission.SLOTS)
    monkeypatch.setattr(admission, "MAX_WAIT_S", admission.MAX_WAIT_S)
    registry.configure(Settings.from_env({"POSBOT_MAX_INFLIGHT": "3", "POSBOT_GATE_MAX_WAIT_S": "0.25"}))
    current = admission.gate()
    assert (current.slots, current.max_wait) == (3, 0.25)
    registry.configure(Settings.from_env({"POSBOT_MAX_INFLIGHT": "0"}))
    assert admission.gate() is None
