"""bot/lock_store.py against the local Redis: one conversation, several instances, one at a time.

Each "instance" is a lock store object with its own Redis connections, running in its own thread
with its own event loop, as two Rasa servers would. The same checker runs against Rasa's own
RedisLockStore with a little network latency, to show that it does find the race of
RasaHQ/rasa#9213 (so passing it means something).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from rasa.core.lock_store import LockError, LockStore, RedisLockStore
from rasa.utils.endpoints import EndpointConfig, read_endpoint_config

from bot.lock_store import TicketLockStore
from ops.launcher import PROJECT_ROOT, free_port

REDIS_DB = 13


@pytest.fixture()
def prefix() -> Iterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    red = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    keys = list(red.scan_iter(f"{prefix}:*"))
    if keys:
        red.delete(*keys)
    red.close()


def instance(prefix: str, **settings: Any) -> TicketLockStore:
    return TicketLockStore(host="127.0.0.1", port=6379, db=REDIS_DB, key_prefix=prefix, **settings)


@dataclass
class Journal:
    """What happened inside the lock, seen from every instance at once."""

    guard: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    most_active: int = 0
    entries: list[tuple[str, int]] = field(default_factory=list)  # (message, ticket) in order
    errors: list[BaseException] = field(default_factory=list)

    def enter(self, message: str, ticket: int) -> None:
        with self.guard:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.entries.append((message, ticket))

    def leave(self) -> None:
        with self.guard:
            self.active -= 1

    def problems(self, messages: list[str]) -> list[str]:
        found = []
        if self.errors:
            found.append(f"errors: {self.errors!r}")
        if self.most_active > 1:
            found.append(f"{self.most_active} messages inside the lock at once")
        if sorted(m for m, _ in self.entries) != sorted(messages):
            found.append(f"not every message exactly once: {self.entries}")
        tickets = [t for _, t in self.entries]
        if tickets != sorted(set(tickets)):
            found.append(f"not in ticket order: {tickets}")
        return found


def run_instances(
    stores: list[LockStore],
    conversation: str,
    per_instance: int = 5,
    hold_s: float = 0.02,
    timeout_s: float = 30,
) -> tuple[Journal, list[str]]:
    """Every store (own thread, own event loop) sends ``per_instance`` messages at once.

    A message not handled within ``timeout_s`` is an error (a lost ticket waits forever)."""
    journal = Journal()
    start = threading.Barrier(len(stores))
    messages = [f"{i}-{k}" for i in range(len(stores)) for k in range(per_instance)]

    async def locked(store: LockStore, message: str) -> None:
        async with store.lock(conversation, 30, 0.01) as held:
            journal.enter(message, held.now_serving)
            await asyncio.sleep(hold_s)
            journal.leave()

    async def handle(store: LockStore, message: str) -> None:
        try:
            await asyncio.wait_for(locked(store, message), timeout_s)
        except Exception as error:
            journal.errors.append(error)

    def serve(index: int, store: LockStore) -> None:
        async def all_at_once() -> None:
            start.wait()
            await asyncio.gather(*(handle(store, f"{index}-{k}") for k in range(per_instance)))

        asyncio.run(all_at_once())

    threads = [threading.Thread(target=serve, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return journal, messages


def test_two_instances_take_turns_in_ticket_order(prefix: str) -> None:
    for round_ in range(3):
        stores = [instance(prefix), instance(prefix)]
        journal, messages = run_instances(stores, f"merchant-{round_}")
        assert journal.problems(messages) == []
        assert journal.most_active == 1
        instances = {message.split("-")[0] for message, _ in journal.entries}
        assert instances == {"0", "1"}
        assert stores[0].get_lock(f"merchant-{round_}") is None, "all tickets released"


class SlowRedis:
    """A Redis client whose replies take 5 ms, like a Redis on another machine."""

    def __init__(self, red: redis.Redis) -> None:
        self._red = red

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._red, name)

        def slow(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            time.sleep(0.005)
            return result

        return slow


def test_the_checker_catches_the_race_of_rasas_redis_lock_store(prefix: str) -> None:
    """RasaHQ/rasa#9213: read-change-write of one JSON value lets two instances in at once."""
    found: list[str] = []
    for round_ in range(3):
        stores = []
        for _ in range(2):
            store = RedisLockStore(host="127.0.0.1", port=6379, db=REDIS_DB, key_prefix=prefix)
            store.red = SlowRedis(store.red)
            stores.append(store)
        journal, messages = run_instances(stores, f"naive-{round_}", timeout_s=3)
        found += journal.problems(messages)
        if found:
            break
    assert found, "the same checker must fail Rasa's RedisLockStore"


def test_a_vanished_holder_expires_after_its_lifetime(prefix: str) -> None:
    killed, alive = instance(prefix), instance(prefix)
    ticket = killed.issue_ticket("merchant", 1.0)
    assert killed.poll("merchant", ticket, 1.0) == 0  # holds the lock, then the server dies

    async def next_message() -> float:
        started = time.monotonic()
        async with alive.lock("merchant", 1.0, 0.05) as held:
            assert held.now_serving > ticket
            return time.monotonic() - started

    waited = asyncio.run(next_message())
    assert 0.7 <= waited < 5, waited
    assert alive.get_lock("merchant") is None


def test_a_vanished_waiter_does_not_block_the_queue(prefix: str) -> None:
    killed, alive = instance(prefix), instance(prefix)
    holder = alive.issue_ticket("merchant", 30)
    killed.issue_ticket("merchant", 1.0)  # waits behind `holder`, then its server dies
    after = alive.issue_ticket("merchant", 30)
    assert alive.poll("merchant", after, 30) == 2
    alive.cleanup("merchant", holder)
    assert alive.poll("merchant", after, 30) == 1  # the dead waiter is next ...
    time.sleep(1.2)
    assert alive.poll("merchant", after, 30) == 0  # ... until its ticket expires
    alive.cleanup("merchant", after)


def test_a_working_holder_keeps_the_lock_past_its_lifetime(prefix: str) -> None:
    """The holder renews its ticket while it works: only a dead holder's ticket expires."""
    first, second = instance(prefix), instance(prefix)
    order: list[str] = []

    async def slow_message() -> None:
        async with first.lock("merchant", 0.6, 0.02):
            order.append("first in")
            await asyncio.sleep(1.5)
            order.append("first out")

    async def next_message() -> None:
        await asyncio.sleep(0.1)
        async with second.lock("merchant", 0.6, 0.02):
            order.append("second in")

    async def both() -> None:
        await asyncio.gather(slow_message(), next_message())

    asyncio.run(both())
    assert order == ["first in", "first out", "second in"]


def test_other_conversations_are_not_blocked(prefix: str) -> None:
    one, other = instance(prefix), instance(prefix)

    async def run() -> float:
        async with one.lock("merchant-1", 30, 0.05):
            started = time.monotonic()
            async with other.lock("merchant-2", 30, 0.05):
                return time.monotonic() - started

    assert asyncio.run(run()) < 0.2


def test_a_ticket_that_expired_while_waiting_raises_lock_error(prefix: str) -> None:
    store = instance(prefix)
    holder = store.issue_ticket("merchant", 30)
    waiter = store.issue_ticket("merchant", 0.3)
    time.sleep(0.5)  # the waiter's server stalled and did not renew its ticket
    assert store.poll("merchant", waiter, 0.3) == -1
    store.cleanup("merchant", holder)


def test_one_instance_behaves_like_rasas_lock_store(prefix: str) -> None:
    store = instance(prefix)
    assert store.get_lock("merchant") is None
    assert not store.is_someone_waiting("merchant")
    first = store.issue_ticket("merchant")
    second = store.issue_ticket("merchant")
    assert second == first + 1
    lock = store.get_lock("merchant")
    assert lock is not None and [t.number for t in lock.tickets] == [first, second]
    assert not lock.is_locked(first) and lock.is_locked(second)
    assert store.is_someone_waiting("merchant")
    store.finish_serving("merchant", first)
    assert store.get_lock("merchant").now_serving == second
    store.cleanup("merchant", second)
    assert store.get_lock("merchant") is None

    async def twice() -> list[int]:
        served = []
        for _ in range(2):
            async with store.lock("merchant") as held:
                served.append(held.now_serving)
        return served

    served = asyncio.run(twice())
    assert served[1] > served[0] > second
    red = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    assert not red.exists(f"{prefix}:ticketlock:{{merchant}}:tickets")
    assert 0 < red.pttl(f"{prefix}:ticketlock:{{merchant}}:last") <= 2 * store.lock_lifetime * 1000


def test_save_and_delete_lock(prefix: str) -> None:
    store = instance(prefix)
    ticket = store.issue_ticket("merchant")
    lock = store.get_lock("merchant")
    lock.issue_ticket(30)
    store.save_lock(lock)
    assert [t.number for t in store.get_lock("merchant").tickets] == [ticket, ticket + 1]
    assert store.issue_ticket("merchant") == ticket + 2
    store.delete_lock("merchant")
    assert store.get_lock("merchant") is None


def test_redis_down_is_a_lock_error_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = TicketLockStore(host="127.0.0.1", port=free_port(), socket_timeout=2)

    async def message() -> None:
        async with store.lock("merchant"):
            raise AssertionError("must not be served without a lock")

    with caplog.at_level(logging.WARNING, logger="bot.lock_store"):
        for _ in range(3):
            with pytest.raises(LockError, match="not usable"):
                asyncio.run(message())
    errors = [r for r in caplog.records if r.name == "bot.lock_store" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]


def test_rasa_loads_it_from_the_production_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "POSBOT_ACTION_URL": "http://127.0.0.1:1/webhook",
        "POSBOT_PG_HOST": "127.0.0.1",
        "POSBOT_PG_PORT": "5432",
        "POSBOT_PG_DB": "x",
        "POSBOT_PG_LOGIN_DB": "x",
        "POSBOT_PG_USER": "x",
        "POSBOT_PG_PASSWORD": "",
        "POSBOT_REDIS_HOST": "127.0.0.1",
        "POSBOT_REDIS_PORT": "6379",
        "POSBOT_REDIS_DB": str(REDIS_DB),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = read_endpoint_config(str(PROJECT_ROOT / "bot" / "endpoints.production.yml"), "lock_store")
    store = LockStore.create(config)
    assert isinstance(store, TicketLockStore)
    assert store.key_prefix == "posbot:ticketlock:"
    assert store.red.connection_pool.connection_kwargs["db"] == REDIS_DB

    custom = LockStore.create(
        EndpointConfig(
            url="127.0.0.1",
            type="bot.lock_store.TicketLockStore",
            port="6379",
            db="3",
            key_prefix="shop",
            password="secret",
            lock_lifetime="20",
            wait_time="0.5",
        )
    )
    assert custom.key_prefix == "shop:ticketlock:" and custom.lock_lifetime == 20
    assert custom.wait_time == 0.5
    assert custom.red.connection_pool.connection_kwargs["password"] == "secret"


def test_a_failed_release_does_not_fail_the_message(prefix: str) -> None:
    store = instance(prefix, lock_lifetime=1)

    def down(**_: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    async def message() -> str:
        async with store.lock("merchant"):
            store._release = down  # Redis fails while the message is being handled
            return "answered"

    assert asyncio.run(message()) == "answered"
    time.sleep(1.1)
    assert store.get_lock("merchant") is None, "the unreleased ticket expired"
