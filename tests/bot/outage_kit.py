"""What the outage tests share (tests/bot/test_outage.py, tests/channels/test_outage_channels.py).

The stores are the real ones, reached through TCP relays that a test cuts and restores:
``CachedSQLTrackerStore`` on a fresh PostgreSQL database, ``TicketLockStore`` on the machine's
Redis, both inside a real Rasa ``Agent`` (which wraps the tracker store in its
``FailSafeTrackerStore``). Only the dialogue is a stand-in: :class:`FeeProcessor` does what Rasa's
``MessageProcessor`` does around the stores (read the conversation, send the turn's messages
while it runs, save it at the end) with a three-step fee calculator that keeps the amount and
the rate in slots, so a lost context shows.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

import pytest
import redis
from rasa.core.agent import Agent
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SlotSet, UserUttered
from sqlalchemy import create_engine, text

from bot.lock_store import TicketLockStore
from bot.settings import PROJECT_ROOT
from bot.stores import CachedSQLTrackerStore
from ops.launcher import free_port

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_DB = 13
ASK_AMOUNT = "请问交易的金额是多少？"
ASK_RATE = "费率是多少？比如 0.6"


class Relay:
    """A TCP relay a test can cut: ``cut`` closes every relayed connection and stops listening
    (new connections are refused, as when the service is down), ``restore`` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: Optional[socket.socket] = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            open_now, self._open = self._open, []
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _number(text: str) -> Optional[float]:
    found = re.search(r"\d+(?:\.\d+)?", text.replace(",", ""))
    return float(found.group()) if found else None


class FeeProcessor:
    """Rasa's ``MessageProcessor.handle_message`` around the stores, with a tiny fee calculator.

    ``before_save`` (a coroutine function) runs after the turn's messages were sent and before
    the tracker is saved: a test cuts the database there.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.before_save: Optional[Callable[[], Awaitable[None]]] = None
        self.turns = 0  # turns that reached the dialogue (a failed read must not get here)

    async def handle_message(self, message: UserMessage) -> None:
        store = self.agent.tracker_store
        tracker = await store.get_or_create_tracker(message.sender_id)
        self.turns += 1
        said = message.text or ""
        tracker.update(UserUttered(said, input_channel=message.input_channel))
        amount, rate, value = tracker.get_slot("amount"), tracker.get_slot("rate"), _number(said)
        events: list[Any] = [ActionExecuted("action_fee_calculator")]
        if value is None:
            events += [SlotSet("amount", None), SlotSet("rate", None)]
            reply = ASK_AMOUNT
        elif amount is None:
            events.append(SlotSet("amount", value))
            reply = ASK_RATE
        elif rate is None:
            events.append(SlotSet("rate", value))
            reply = f"{amount:,.0f} 元 × {value:g}% = {amount * value / 100:,.0f} 元"
        else:
            reply = "还有别的要算吗？"
        for event in events:
            tracker.update(event)
        if message.output_channel is not None:
            await message.output_channel.send_text_message(message.sender_id, reply)
        tracker.update(BotUttered(reply))
        tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
        if self.before_save is not None:
            await self.before_save()
        await store.save(tracker)


@dataclass
class Outage:
    """A Rasa agent whose PostgreSQL and Redis can be cut and restored."""

    agent: Agent
    processor: FeeProcessor
    store: CachedSQLTrackerStore
    locks: TicketLockStore
    postgres: Relay
    redis: Relay
    tracker_db: str

    async def handle(self, message: UserMessage) -> None:
        """What `rasa run` hands the channels as ``on_new_message``."""
        await self.agent.handle_message(message)

    def users(self, sender: str) -> list[str]:
        """The merchant's messages stored in PostgreSQL (read directly, not through the relay)."""
        engine = create_engine(f"{PG}/{self.tracker_db}")
        try:
            with engine.connect() as conn:
                rows = (
                    conn.execute(
                        text(
                            "SELECT data FROM events WHERE sender_id = :s AND type_name = 'user' "
                            "ORDER BY id"
                        ),
                        {"s": sender},
                    )
                    .scalars()
                    .all()
                )
        finally:
            engine.dispose()
        import json

        return [json.loads(row)["text"] for row in rows]


_DOMAIN: Optional[Domain] = None


def domain() -> Domain:
    """posbot's own domain (its ``amount`` and ``rate`` slots)."""
    global _DOMAIN
    if _DOMAIN is None:
        _DOMAIN = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    return _DOMAIN


@pytest.fixture()
def outage() -> Iterator[Outage]:
    tracker_db = f"posbot_outage_{uuid.uuid4().hex[:8]}"
    prefix = f"o{uuid.uuid4().hex[:10]}"
    postgres, red = Relay(("127.0.0.1", 5432)), Relay(("127.0.0.1", 6379))
    store = CachedSQLTrackerStore(
        domain=domain(),
        dialect="postgresql",
        host="127.0.0.1",
        port=postgres.port,
        db=tracker_db,
        username="postgres",
        password="",
        login_db="test",
    )
    locks = TicketLockStore(host="127.0.0.1", port=red.port, db=REDIS_DB, key_prefix=prefix, socket_timeout=2)
    agent = Agent(domain=domain(), tracker_store=store, lock_store=locks)
    processor = FeeProcessor(agent)
    agent.processor = processor  # type: ignore[assignment]
    try:
        yield Outage(agent, processor, store, locks, postgres, red, tracker_db)
    finally:
        postgres.cut()
        red.cut()
        store.engine.dispose()
        admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{tracker_db}" WITH (FORCE)'))
        admin.dispose()
        direct = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        keys = list(direct.scan_iter(f"{prefix}:*"))
        if keys:
            direct.delete(*keys)
        direct.close()
