"""``make cluster`` for real: nginx in front of two Rasa servers (issue 17).

One cluster is started for the module by ops/cluster.py, the way ``make cluster`` starts it,
with bot/endpoints.production.yml against the machine's PostgreSQL (a fresh tracker database)
and Redis (a key prefix and socket.io channel of its own), on free ports. nginx adds the address
of the server that answered (``X-Posbot-Upstream``) so that the tests know which one it was.

In order (the last test kills a server): every channel answers through the balancer; an agent's
message emitted on server A reaches a widget connected to server B; 20 merchants at once use
the fee calculator, their turns spread over both servers; Redis restarted and PostgreSQL cut in
the middle of the calculator (a polite "请稍后再发一次" on REST and the widget, then the
conversation goes on, nothing lost or doubled); then the server that answered a
merchant's last turn is killed (SIGKILL) in the middle of the calculator and the merchant goes
on with the other one. PostgreSQL must hold every message exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
import requests
import socketio
import websockets
from sqlalchemy import create_engine, text

from bot.outage import SERVICE_UNAVAILABLE
from ops.cluster import Cluster, start_cluster
from ops.launcher import DEFAULT_MODEL, PROJECT_ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
PG = "postgresql://postgres@127.0.0.1:5432"
FEE_RESULT = "10,000 元 × 0.6% = 60 元"


class TcpProxy:
    """A TCP relay between the Rasa servers and PostgreSQL that a test can cut: ``cut`` closes
    every relayed connection and stops listening (new connections are refused), ``restore``
    listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
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
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            open_now, self._open = self._open, []
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class PrivateRedis:
    """A redis-server of this test module on a free port (the machine's Redis is never
    restarted): ``stop`` kills it, ``start`` starts an empty one on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is missing (Debian package redis-server)")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.1)
        raise TimeoutError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def texts(messages: list[dict]) -> str:
    return "\n".join(m.get("text") or "" for m in messages)


def upstreams(response: requests.Response) -> list[str]:
    """The servers nginx tried for this request, the one that answered last."""
    return [part.strip() for part in response.headers["X-Posbot-Upstream"].split(",")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not DEFAULT_MODEL.exists():
        pytest.fail(f"{DEFAULT_MODEL} is missing: run `make train` (make test does it for you)")
    tmp = tmp_path_factory.mktemp("cluster")
    tracker_db = f"posbot_cluster_{uuid.uuid4().hex[:8]}"
    endpoints = PROJECT_ROOT / "bot" / "endpoints.production.yml"
    private_redis = PrivateRedis(tmp)
    pg_proxy = TcpProxy(("127.0.0.1", 5432))
    env = {
        "POSBOT_PG_HOST": "127.0.0.1",
        "POSBOT_PG_PORT": str(pg_proxy.port),
        "POSBOT_PG_DB": tracker_db,
        "POSBOT_PG_USER": "postgres",
        "POSBOT_PG_PASSWORD": "",
        "POSBOT_PG_LOGIN_DB": "test",
        "POSBOT_REDIS_HOST": "127.0.0.1",
        "POSBOT_REDIS_PORT": str(private_redis.port),
        "POSBOT_REDIS_DB": "0",
        "POSBOT_REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/0",
    }
    # The KB as `make kb` built it (copied: `posbot kb build` then finds it current and takes
    # seconds instead of minutes); the records tables emptied.
    kb = tmp / "posbot.sqlite3"
    if (PROJECT_ROOT / "var" / "posbot.sqlite3").exists():
        with (
            contextlib.closing(sqlite3.connect(PROJECT_ROOT / "var" / "posbot.sqlite3")) as src,
            contextlib.closing(sqlite3.connect(kb)) as dst,
        ):
            src.backup(dst)
            for (table,) in dst.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' " "AND name NOT LIKE 'kb_%'"
            ).fetchall():
                dst.execute(f'DELETE FROM "{table}"')
            dst.commit()
    env["POSBOT_DATABASE_URL"] = f"sqlite:///{kb}"
    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    started: Cluster | None = None
    try:
        started = start_cluster(
            tmp / "var-cluster",
            port=free_port(),
            env=env,
            endpoints=endpoints,
            upstream_header=True,
            timeout=300,
        )
        yield {"cluster": started, "tracker_db": tracker_db, "redis": private_redis, "pg_proxy": pg_proxy}
    finally:
        if started is not None:
            started.stop()
        private_redis.stop()
        pg_proxy.cut()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{tracker_db}" WITH (FORCE)'))
        admin.dispose()


def stored(tracker_db: str, sender: str) -> list[tuple[int, str, str | None, dict]]:
    """The conversation's rows in PostgreSQL: (id, type, action, event), in id order."""
    engine = create_engine(f"{PG}/{tracker_db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, type_name, action_name, data FROM events " "WHERE sender_id = :s ORDER BY id"
                ),
                {"s": sender},
            ).all()
    finally:
        engine.dispose()
    return [(row[0], row[1], row[2], json.loads(row[3])) for row in rows]


def assert_turns_in_order(rows: list[tuple[int, str, str | None, dict]], sent: list[str]) -> None:
    """Each message once, in the order sent; each turn ends listening before the next
    message; time never goes backwards."""
    users = [event["text"] for _, kind, _, event in rows if kind == "user"]
    assert users == sent, users
    times = [event["timestamp"] for _, _, _, event in rows]
    assert times == sorted(times), "events out of order"
    last_action = None
    for _, kind, action, _ in rows:
        if kind == "user":
            assert last_action in (None, "action_listen"), rows
        if kind == "action":
            last_action = action
    assert last_action == "action_listen"


def test_every_channel_answers_through_the_balancer(cluster: dict[str, Any]) -> None:
    c: Cluster = cluster["cluster"]
    for name in ("nginx", "actions", *c.names):
        assert int((c.directory / f"{name}.pid").read_text()) == c.processes()[name].pid
    assert "posbot" in requests.get(f"{c.url}/webhooks/web/", timeout=20).text.lower()
    assert requests.get(f"{c.url}/staff/", timeout=20).status_code == 200
    assert requests.get(f"{c.url}/", timeout=20).text.startswith("Hello from Rasa")
    wechat = requests.get(f"{c.url}/webhooks/wechat/webhook", timeout=20)
    assert (wechat.status_code, wechat.text) == (403, "channel not configured")
    assert requests.get(f"{c.url}/status", timeout=20).status_code == 401  # API needs the token
    assert "交易的金额" in texts(c.send(f"rest-{uuid.uuid4().hex}", "算一下手续费").json())

    async def polling_widget() -> list[Any]:
        """The widget's first transport: HTTP long-polling, sticky through nginx."""
        client = socketio.AsyncClient(reconnection=False)
        got: asyncio.Queue = asyncio.Queue()
        client.on("session_confirm", lambda data: got.put_nowait(data))
        client.on("bot_uttered", lambda data: got.put_nowait(data))
        session = "w-" + uuid.uuid4().hex
        await client.connect(c.url, transports=["polling"])
        try:
            await client.emit("session_request", {"session_id": session})
            confirmed = await asyncio.wait_for(got.get(), 20)
            await client.emit("user_uttered", {"message": "刷一万块扣多少手续费", "session_id": session})
            reply = await asyncio.wait_for(got.get(), 60)
        finally:
            await client.disconnect()
        return [confirmed == session, reply]

    confirmed, reply = asyncio.run(polling_widget())
    assert confirmed and "费率是多少" in reply["text"]
    ws_reply = asyncio.run(websocket_widget(c.url, "算一下手续费"))
    assert "交易的金额" in ws_reply["text"]


async def websocket_widget(url: str, message: str) -> dict:
    """The widget after its upgrade: socket.io over a WebSocket through nginx, spoken by hand
    (engine.io 4 / socket.io 5 packets: 0 open, 2/3 ping/pong, 40 connect, 42 event)."""
    session = "w-" + uuid.uuid4().hex
    uri = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(uri, open_timeout=20) as ws:

        async def event(name: str) -> Any:
            while True:
                packet = await asyncio.wait_for(ws.recv(), 60)
                if packet == "2":
                    await ws.send("3")
                elif packet.startswith("42"):
                    kind, data = json.loads(packet[2:])
                    if kind == name:
                        return data

        assert (await asyncio.wait_for(ws.recv(), 20)).startswith("0{")
        await ws.send("40")
        assert (await asyncio.wait_for(ws.recv(), 20)).startswith("40")
        await ws.send("42" + json.dumps(["session_request", {"session_id": session}]))
        assert await event("session_confirm") == session
        await ws.send(
            "42"
            + json.dumps(["user_uttered", {"message": message, "session_id": session}], ensure_ascii=False)
        )
        return await event("bot_uttered")


def test_an_agent_message_sent_on_one_server_reaches_a_widget_on_the_other(cluster: dict[str, Any]) -> None:
    c: Cluster = cluster["cluster"]
    a, b = c.bots
    session = "w-" + uuid.uuid4().hex

    async def scenario() -> list[Any]:
        client = socketio.AsyncClient(reconnection=False)
        got: asyncio.Queue = asyncio.Queue()
        client.on("session_confirm", lambda data: got.put_nowait(data))
        client.on("bot_uttered", lambda data: got.put_nowait(data))
        await client.connect(b.url, transports=["polling"])  # the widget is on B
        try:
            await client.emit("session_request", {"session_id": session})
            assert await asyncio.wait_for(got.get(), 20) == session
            await client.emit("user_uttered", {"message": "你好", "session_id": session})
            greeting = await asyncio.wait_for(got.get(), 60)
            # The staff console's agent reply, written through A's API (as push_in_rasa does).
            response = await asyncio.to_thread(
                a.api,
                "POST",
                f"/conversations/{session}/tracker/events",
                json={
                    "event": "bot",
                    "text": "您好，我是客服小王，马上为您处理。",
                    "data": {"custom": {"posbot": {"agent": "小王"}}},
                },
                params={"execute_side_effects": "true", "output_channel": "latest", "include_events": "NONE"},
            )
            assert response.status_code == 200, response.text
            pushed = await asyncio.wait_for(got.get(), 20)
        finally:
            await client.disconnect()
        return [greeting, pushed]

    greeting, pushed = asyncio.run(scenario())
    assert greeting.get("text")
    assert pushed.get("text") == "您好，我是客服小王，马上为您处理。"


def test_twenty_merchants_at_once_spread_over_both_servers(cluster: dict[str, Any]) -> None:
    c: Cluster = cluster["cluster"]
    flow = ["刷一万块扣多少手续费", "0.6", "信用卡"]
    senders = [f"crowd-{i}-{uuid.uuid4().hex[:8]}" for i in range(20)]
    served: dict[str, list[str]] = {s: [] for s in senders}
    answers: dict[str, list[str]] = {s: [] for s in senders}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(senders), timeout=120)

    def merchant(sender: str) -> None:
        try:
            barrier.wait()
            for turn, message in enumerate(flow):
                if turn == 1:
                    # The second turn straight to the server that did not answer the first:
                    # every conversation moves at least once (the balancer rarely moves one by
                    # itself: least_conn favours the server that has just answered).
                    other = next(
                        bot for name, bot in zip(c.names, c.bots, strict=True) if name != served[sender][0]
                    )
                    response = requests.post(
                        f"{other.url}/webhooks/rest/webhook",
                        timeout=180,
                        json={"sender": sender, "message": message},
                    )
                    served[sender].append(c.names[c.bots.index(other)])
                else:
                    response = c.send(sender, message, timeout=180)
                    served[sender].append(c.instance(upstreams(response)[-1]))
                assert response.status_code == 200, (response.status_code, response.text)
                answers[sender].append(texts(response.json()))
        except BaseException as error:  # reported below
            errors.append(error)
            barrier.abort()

    started = time.monotonic()
    threads = [threading.Thread(target=merchant, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=400)
    elapsed = time.monotonic() - started
    assert not errors, errors
    for sender in senders:
        assert "费率是多少" in answers[sender][0], answers[sender]
        assert "借记卡（储蓄卡）还是信用卡" in answers[sender][1], answers[sender]
        assert FEE_RESULT in answers[sender][2], answers[sender]
        assert_turns_in_order(stored(cluster["tracker_db"], sender), flow)
    balanced = [names[i] for names in served.values() for i in (0, 2)]
    assert set(balanced) == set(c.names), balanced  # nginx used both servers
    assert all(names[0] != names[1] for names in served.values())
    print(
        f"20 merchants × 3 turns in {elapsed:.1f} s; turns the balancer sent per server: "
        f"{ {n: balanced.count(n) for n in c.names} }"
    )


def test_redis_restarted_mid_conversation_then_the_conversation_goes_on(cluster: dict[str, Any]) -> None:
    """Redis (locks, socket.io, WeChat state) is killed and comes back empty."""
    c: Cluster = cluster["cluster"]
    merchant = f"redis-{uuid.uuid4().hex[:8]}"
    assert "交易的金额" in texts(c.send(merchant, "算一下手续费").json())
    cluster["redis"].stop()
    try:
        during = c.send(merchant, "10000元")
        # No lock, no turn: one polite "请稍后再发一次", nothing stored, servers up (no 5xx).
        assert during.status_code == 200, during.text
        assert [m.get("text") for m in during.json()] == [SERVICE_UNAVAILABLE]
        widget = asyncio.run(websocket_widget(c.url, "算一下手续费"))  # the widget likewise
        assert widget == {"text": SERVICE_UNAVAILABLE}
        assert all(proc.poll() is None for proc in c.processes().values())
    finally:
        cluster["redis"].start()
    # The merchant sends it again: the calculator goes on with what it had.
    assert "费率是多少" in texts(c.send(merchant, "10000元").json())
    assert "借记卡（储蓄卡）还是信用卡" in texts(c.send(merchant, "0.6%").json())
    sent = ["算一下手续费", "10000元", "0.6%"]
    rows = stored(cluster["tracker_db"], merchant)
    assert_turns_in_order(rows, sent)


def test_postgresql_briefly_unreachable_then_the_conversation_goes_on(cluster: dict[str, Any]) -> None:
    """Every connection to PostgreSQL is cut and refused for a moment, then comes back."""
    c: Cluster = cluster["cluster"]
    merchant = f"pg-{uuid.uuid4().hex[:8]}"
    assert "交易的金额" in texts(c.send(merchant, "算一下手续费").json())
    cluster["pg_proxy"].cut()
    try:
        with contextlib.closing(socket.socket()) as probe:
            assert probe.connect_ex(("127.0.0.1", cluster["pg_proxy"].port)) != 0, "not cut"
        during = [c.send(merchant, "10000元") for _ in range(2)]  # both servers, likely
        assert all(r.status_code == 200 for r in during), [r.text for r in during]
        # Not an answer from an empty conversation: one polite "请稍后再发一次" each time.
        assert [[m.get("text") for m in r.json()] for r in during] == [[SERVICE_UNAVAILABLE]] * 2
        widget = asyncio.run(websocket_widget(c.url, "算一下手续费"))  # the widget likewise
        assert widget == {"text": SERVICE_UNAVAILABLE}
        assert all(proc.poll() is None for proc in c.processes().values())
    finally:
        cluster["pg_proxy"].restore()
    # The merchant sends it again: the calculator goes on with the amount it asked for.
    after = c.send(merchant, "10000元")
    assert "费率是多少" in texts(after.json()), after.text
    assert "借记卡（储蓄卡）还是信用卡" in texts(c.send(merchant, "0.6%").json())
    assert_turns_in_order(stored(cluster["tracker_db"], merchant), ["算一下手续费", "10000元", "0.6%"])


def test_a_server_killed_mid_calculation_the_merchant_goes_on_with_the_other(cluster: dict[str, Any]) -> None:
    c: Cluster = cluster["cluster"]
    merchant = f"failover-{uuid.uuid4().hex[:8]}"
    first = c.send(merchant, "算一下手续费")
    assert "交易的金额" in texts(first.json())
    second = c.send(merchant, "10000元")
    assert "费率是多少" in texts(second.json())
    victim = c.instance(upstreams(second)[-1])
    survivor = next(name for name in c.names if name != victim)

    os.kill(c.processes()[victim].pid, signal.SIGKILL)
    c.processes()[victim].wait(timeout=10)

    third = c.send(merchant, "0.6%")
    assert third.status_code == 200
    assert c.instance(upstreams(third)[-1]) == survivor
    assert "借记卡（储蓄卡）还是信用卡" in texts(third.json())  # the amount was kept
    fourth = c.send(merchant, "信用卡")
    assert FEE_RESULT in texts(fourth.json())  # amount and rate were kept
    assert c.instance(upstreams(fourth)[-1]) == survivor
    # Another merchant starting now is not sent to the dead server either.
    other = c.send(f"after-{uuid.uuid4().hex[:8]}", "算一下手续费")
    assert other.status_code == 200 and "交易的金额" in texts(other.json())

    assert_turns_in_order(
        stored(cluster["tracker_db"], merchant), ["算一下手续费", "10000元", "0.6%", "信用卡"]
    )
    # No merchant ever got an error from the balancer (nginx's log: "POST /path" status …).
    log = (c.directory / "logs" / "access.log").read_text("utf-8")
    statuses = re.findall(r'"POST /webhooks/rest/webhook" (\d{3}) ', log)
    assert statuses and set(statuses) == {"200"}, statuses
