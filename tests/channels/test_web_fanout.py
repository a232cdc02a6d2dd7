"""socket.io across several Rasa servers (issue 17): an emit on one server reaches a widget
connected to another through Redis (python-socketio's AsyncRedisManager).

Two in-process servers stand for two Rasa instances behind the balancer: the merchant's widget
is connected to B, the staff console's agent reply (or a release) is emitted on A. Needs the
machine's Redis (127.0.0.1:6379; POSBOT_TEST_REDIS_URL to change), on a channel of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import Any, AsyncIterator, Dict, List

import pytest
import redis
import socketio
from rasa.core.channels.channel import UserMessage
from sanic import Sanic
from socketio import AsyncRedisManager, AsyncServer

from bot.channels.web import WebChatInput, WebChatOutput, client_manager
from bot.settings import Settings

REDIS_URL = os.environ.get("POSBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
AGENT_REPLY = "您好，我是客服小王，请问POS机现在还打印不出小票吗？"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ignore(_: UserMessage) -> None:
    return None


class _QuickPing(WebChatInput):
    """Short ping timings so that a polling client disconnects at once (see test_web.py)."""

    def _build_server(self) -> AsyncServer:
        sio = super()._build_server()
        sio.eio.ping_interval = 1
        sio.eio.ping_timeout = 1
        return sio


@contextlib.asynccontextmanager
async def serve(channel: WebChatInput) -> AsyncIterator[str]:
    app = Sanic(f"fanout_{uuid.uuid4().hex[:12]}")
    app.blueprint(channel.blueprint(_ignore), url_prefix="/webhooks/web")
    port = _free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()
        manager = channel.sio.manager if channel.sio is not None else None
        if isinstance(manager, AsyncRedisManager) and getattr(manager, "thread", None):
            manager.thread.cancel()
            with contextlib.suppress(BaseException):
                await manager.thread


@contextlib.asynccontextmanager
async def widget(url: str, session_id: str) -> AsyncIterator[List[Any]]:
    """A merchant's widget with a persistent session: what it receives as bot_uttered."""
    client = socketio.AsyncClient(reconnection=False)
    received: List[Any] = []
    confirmed: asyncio.Future = asyncio.get_running_loop().create_future()

    @client.on("session_confirm")
    async def on_confirm(data: Any) -> None:
        if not confirmed.done():
            confirmed.set_result(data)

    @client.on("bot_uttered")
    async def on_bot(data: Any) -> None:
        received.append(data)

    await client.connect(url, transports=["polling"])
    try:
        await client.emit("session_request", {"session_id": session_id})
        assert await asyncio.wait_for(confirmed, 5) == session_id
        yield received
    finally:
        await client.disconnect()


async def _until(received: List[Any], count: int, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(received) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


@pytest.fixture()
def redis_env(monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis not reachable at {REDIS_URL}: {exc}")
    env = {"POSBOT_REDIS_URL": REDIS_URL, "POSBOT_SOCKETIO_CHANNEL": f"posbot-test-{uuid.uuid4().hex[:8]}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_the_manager_follows_the_settings() -> None:
    assert client_manager(Settings.from_env({})) is None  # one server: sockets in memory
    manager = client_manager(
        Settings.from_env({"POSBOT_REDIS_URL": REDIS_URL, "POSBOT_SOCKETIO_CHANNEL": "shop-bots"})
    )
    assert isinstance(manager, AsyncRedisManager)
    assert manager.redis_url == REDIS_URL and manager.channel == "shop-bots"
    assert client_manager(Settings.from_env({"POSBOT_REDIS_URL": REDIS_URL})).channel == "posbot-socketio"


@pytest.mark.asyncio
async def test_an_agent_reply_emitted_on_one_server_reaches_a_widget_on_the_other(
    redis_env: Dict[str, str],
) -> None:
    a, b = _QuickPing(session_persistence=True), _QuickPing(session_persistence=True)
    async with serve(a), serve(b) as url_b, widget(url_b, "shop-fanout-1") as received:
        await asyncio.sleep(0.3)  # B subscribes to the channel on its first connection
        output = WebChatOutput(a.sio, "bot_uttered")
        await output.send_text_message("shop-fanout-1", AGENT_REPLY)
        await output.send_custom_json("shop-fanout-1", {"posbot": {"handoff": "released"}})
        await _until(received, 2)
        # Another merchant's room gets nothing of it.
        async with widget(url_b, "shop-fanout-2") as other:
            await output.send_text_message("shop-fanout-1", "第二条")
            await _until(received, 3)
            await asyncio.sleep(0.3)
    assert received == [{"text": AGENT_REPLY}, {"posbot": {"handoff": "released"}}, {"text": "第二条"}]
    assert other == []


@pytest.mark.asyncio
async def test_without_redis_the_emit_stays_on_its_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The situation issue 17 describes (Rasa's server without a client manager): proves the
    test above can fail."""
    monkeypatch.delenv("POSBOT_REDIS_URL", raising=False)
    a, b = _QuickPing(session_persistence=True), _QuickPing(session_persistence=True)
    async with serve(a), serve(b) as url_b, widget(url_b, "shop-alone") as received:
        await WebChatOutput(a.sio, "bot_uttered").send_text_message("shop-alone", AGENT_REPLY)
        await asyncio.sleep(1)
    assert received == []


@pytest.mark.asyncio
async def test_redis_down_still_delivers_on_the_widgets_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Redis (nothing listens on the port): the emit does not fail and the widget connected
    to this very server still gets the bot's answer."""
    dead = _free_port()
    monkeypatch.setenv("POSBOT_REDIS_URL", f"redis://127.0.0.1:{dead}/0")
    a = _QuickPing(session_persistence=True)
    async with serve(a) as url_a, widget(url_a, "shop-no-redis") as received:
        await WebChatOutput(a.sio, "bot_uttered").send_text_message("shop-no-redis", "您好")
        await _until(received, 1)
    assert received == [{"text": "您好"}]
