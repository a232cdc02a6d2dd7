"""Unit tests of the website widget channel (bot/channels/web.py).

Static routes and CORS go through Sanic's test client; the socket.io behaviour that the widget
depends on (session room, metadata, custom JSON) through a real python-socketio client against
an in-process server, because those are exactly the places where Rasa 3.6.21's own channel
breaks with python-socketio 5.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import pytest
import pytest_asyncio
import rasa.core.run
import rasa.server
import rasa.shared.utils.io
import socketio
from rasa.core.channels.channel import UserMessage
from sanic import Sanic
from socketio import AsyncServer

from bot.channels.web import (
    DEMO_PAGE_CSP,
    SOCKETIO_CLIENT_DIR,
    WEB_ROOT,
    OriginPolicy,
    WebChatInput,
    WebChatOutput,
)
from bot.settings import PROJECT_ROOT

HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


async def _ignore(_: UserMessage) -> None:
    return None


def make_app(
    channel: WebChatInput, *, rasa_cors: Optional[str] = None, on_new_message: Any = _ignore
) -> Sanic:
    """Mount the channel the way `rasa run` does (optionally with `--cors`)."""
    app = Sanic(f"web_test_{uuid.uuid4().hex[:12]}")
    if rasa_cors is not None:
        rasa.server.configure_cors(app, rasa_cors)
    app.blueprint(channel.blueprint(on_new_message), url_prefix="/webhooks/web")
    return app


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    """A copy of web/ without node_modules, plus a stand-in socket.io client when asked."""
    for name in ("index.html", "widget.js", "widget.css"):
        (tmp_path / name).write_bytes((WEB_ROOT / name).read_bytes())
    return tmp_path


def install_fake_socketio_client(web_root: Path) -> bytes:
    dist = web_root / SOCKETIO_CLIENT_DIR
    dist.mkdir(parents=True)
    body = b"/* socket.io client stand-in */"
    (dist / "socket.io.min.js").write_bytes(body)
    return body


# ----------------------------------------------------------------------------- channel setup


def test_channel_is_mounted_under_webhooks_web() -> None:
    assert WebChatInput.name() == "web"
    assert WebChatInput(cors_origins=["*"]).url_prefix() == "web"
    assert WebChatOutput.name() == "web"


def test_credentials_yml_builds_the_channel_like_rasa_run() -> None:
    credentials = rasa.shared.utils.io.read_yaml_file(PROJECT_ROOT / "bot" / "credentials.yml")
    key = "bot.channels.web.WebChatInput"
    channel = rasa.core.run._create_single_channel(key, credentials[key])

    assert isinstance(channel, WebChatInput)
    assert channel.user_message_evt == "user_uttered"
    assert channel.bot_message_evt == "bot_uttered"
    assert channel.session_persistence is True
    assert channel.socketio_path == "/socket.io"
    assert channel.metadata_key == "metadata"


def test_allowed_origins_come_from_posbot_cors_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBOT_CORS_ORIGINS", "https://shop.example.com, https://POS.example.com/")
    channel = WebChatInput()
    assert channel.origin_policy.origins == ["https://shop.example.com", "https://pos.example.com"]
    assert not channel.origin_policy.allow_all

    monkeypatch.delenv("POSBOT_CORS_ORIGINS")
    assert WebChatInput().origin_policy.allow_all


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://shop.example.com"])
    same_host = {"HTTP_HOST": "bot.example.com"}

    assert policy("https://shop.example.com", same_host)
    assert policy("HTTPS://Shop.Example.com", same_host)
    assert policy("https://bot.example.com", same_host), "the bot's own pages are always allowed"
    assert policy(None, same_host), "no Origin header: not a cross-site browser request"
    assert not policy("https://evil.example.net", same_host)
    assert not policy("https://shop.example.com.evil.net", same_host)
    assert OriginPolicy(["*"])("https://anything.example", same_host)


# ----------------------------------------------------------------------------- static routes


def test_demo_page(web_root: Path) -> None:
    app = make_app(WebChatInput(cors_origins=["*"], web_root=web_root))
    _, response = app.test_client.get("/webhooks/web/")

    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == DEMO_PAGE_CSP
    html = response.text
    assert html.count("<script") == 1, "the demo embeds the widget with one script tag"
    assert '<script src="/webhooks/web/widget.js"' in html
    assert 'lang="zh-CN"' in html


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/webhooks/web/widget.js", "text/javascript; charset=utf-8", "posbotWidget"),
        ("/webhooks/web/widget.css", "text/css; charset=utf-8", ".posbot-launcher"),
    ],
)
def test_widget_files(web_root: Path, path: str, content_type: str, marker: str) -> None:
    app = make_app(WebChatInput(cors_origins=["*"], web_root=web_root))
    _, response = app.test_client.get(path)

    assert response.status == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert marker in response.text


def test_socketio_client_is_served_from_node_modules(web_root: Path) -> None:
    body = install_fake_socketio_client(web_root)
    app = make_app(WebChatInput(cors_origins=["*"], web_root=web_root))
    _, response = app.test_client.get("/webhooks/web/socket.io.min.js")

    assert response.status == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.body == body


def test_missing_socketio_client_says_to_run_npm_ci(web_root: Path) -> None:
    app = make_app(WebChatInput(cors_origins=["*"], web_root=web_root))
    _, response = app.test_client.get("/webhooks/web/socket.io.min.js")

    assert response.status == 503
    assert response.headers["content-type"].startswith("text/plain")
    assert "npm ci" in response.text


def test_repository_socketio_client_matches_package_lock() -> None:
    """After `npm ci` the served file is the locked socket.io-client 4.x browser build."""
    client = WEB_ROOT / SOCKETIO_CLIENT_DIR / "socket.io.min.js"
    if not client.is_file():
        pytest.skip("web/node_modules missing: run `npm ci` in web/")
    lock = (WEB_ROOT / "package-lock.json").read_text(encoding="utf-8")
    assert '"node_modules/socket.io-client"' in lock
    assert client.read_text(encoding="utf-8").startswith("/*!\n * Socket.IO v4.")


def test_health_moved_off_the_demo_page(web_root: Path) -> None:
    app = make_app(WebChatInput(cors_origins=["*"], web_root=web_root))
    _, response = app.test_client.get("/webhooks/web/health")
    assert response.status == 200
    assert response.json == {"status": "ok"}


# ----------------------------------------------------------------------------- CORS


def test_allowed_origin_gets_its_cors_header() -> None:
    app = make_app(WebChatInput(cors_origins=["https://shop.example.com"]))
    _, response = app.test_client.get(HANDSHAKE, headers={"Origin": "https://shop.example.com"})

    assert response.status == 200
    assert response.headers.get_list("access-control-allow-origin") == ["https://shop.example.com"]


def test_other_origin_is_refused() -> None:
    app = make_app(WebChatInput(cors_origins=["https://shop.example.com"]))
    _, response = app.test_client.get(HANDSHAKE, headers={"Origin": "https://evil.example.net"})

    assert response.status == 400
    assert "access-control-allow-origin" not in response.headers


def test_bot_host_itself_is_allowed_whatever_the_list() -> None:
    app = make_app(WebChatInput(cors_origins=["https://shop.example.com"]))
    _, response = app.test_client.get(
        HANDSHAKE,
        headers={"Origin": "https://bot.example.com", "X-Forwarded-Host": "bot.example.com"},
    )
    assert response.status == 200


def test_wildcard_default_allows_any_origin() -> None:
    app = make_app(WebChatInput(cors_origins=["*"]))
    _, response = app.test_client.get(HANDSHAKE, headers={"Origin": "https://a.example.org"})

    assert response.status == 200
    assert response.headers.get_list("access-control-allow-origin") == ["https://a.example.org"]


def test_rasa_run_cors_does_not_duplicate_the_header() -> None:
    """`rasa run --cors "*"` adds Sanic-CORS; two Allow-Origin headers would break browsers."""
    app = make_app(WebChatInput(cors_origins=["*"]), rasa_cors="*")
    _, response = app.test_client.get(HANDSHAKE, headers={"Origin": "https://shop.example.com"})

    assert response.status == 200
    assert response.headers.get_list("access-control-allow-origin") == ["https://shop.example.com"]


# ----------------------------------------------------------------------------- socket.io


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Recorder:
    """on_new_message stand-in: keeps the messages and answers through the output channel."""

    def __init__(self) -> None:
        self.messages: List[UserMessage] = []

    async def __call__(self, message: UserMessage) -> None:
        self.messages.append(message)
        await message.output_channel.send_response(
            message.sender_id,
            {"text": "1. 第一步\n2. 第二步", "buttons": [{"title": "好的", "payload": "/affirm"}]},
        )
        await message.output_channel.send_response(
            message.sender_id, {"custom": {"posbot": {"handoff": "started"}}}
        )


class _QuickPingWebChatInput(WebChatInput):
    """Short ping timings: a polling client's disconnect waits for the server's pending long
    poll, which engineio only ends after ping_interval + ping_timeout (45 s by default)."""

    def _build_server(self) -> AsyncServer:
        sio = super()._build_server()
        sio.eio.ping_interval = 1
        sio.eio.ping_timeout = 1
        return sio


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Dict[str, Any]]:
    recorder = _Recorder()
    channel = _QuickPingWebChatInput(session_persistence=True, cors_origins=["*"])
    app = make_app(channel, on_new_message=recorder)
    port = _free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield {"url": f"http://127.0.0.1:{port}", "recorder": recorder, "channel": channel}
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()


@pytest.mark.asyncio
async def test_session_persistence_round_trip(served: Dict[str, Any]) -> None:
    """session_request joins the room, answers reach it, metadata and custom JSON survive."""
    client = socketio.AsyncClient(reconnection=False)
    confirmed: asyncio.Future = asyncio.get_running_loop().create_future()
    uttered: List[Any] = []
    got_two = asyncio.Event()

    @client.on("session_confirm")
    async def on_confirm(data: Any) -> None:
        confirmed.set_result(data)

    @client.on("bot_uttered")
    async def on_bot(data: Any) -> None:
        uttered.append(data)
        if len(uttered) >= 2:
            got_two.set()

    await client.connect(served["url"], transports=["polling"])
    try:
        await client.emit("session_request", {"session_id": "merchant-42"})
        assert await asyncio.wait_for(confirmed, 5) == "merchant-42"
        await client.emit(
            "user_uttered",
            {
                "message": "打印机不出纸",
                "session_id": "merchant-42",
                "metadata": {"channel": "web", "page": "/help"},
            },
        )
        await asyncio.wait_for(got_two.wait(), 5)
    finally:
        await client.disconnect()

    message = served["recorder"].messages[0]
    assert message.sender_id == "merchant-42"
    assert message.input_channel == "web"
    assert message.metadata == {"channel": "web", "page": "/help"}
    assert uttered[0] == {
        "text": "1. 第一步\n2. 第二步",
        "quick_replies": [{"content_type": "text", "title": "好的", "payload": "/affirm"}],
    }
    assert uttered[1] == {"posbot": {"handoff": "started"}}


@pytest.mark.asyncio
async def test_session_request_without_id_gets_a_new_one(served: Dict[str, Any]) -> None:
    client = socketio.AsyncClient(reconnection=False)
    confirmed: asyncio.Future = asyncio.get_running_loop().create_future()

    @client.on("session_confirm")
    async def on_confirm(data: Any) -> None:
        confirmed.set_result(data)

    await client.connect(served["url"], transports=["polling"])
    try:
        await client.emit("session_request", {"session_id": None})
        session_id = await asyncio.wait_for(confirmed, 5)
    finally:
        await client.disconnect()
    assert isinstance(session_id, str) and len(session_id) == 32


@pytest.mark.asyncio
async def test_output_channel_keeps_rasa_webchat_custom_convention() -> None:
    """{"data": ...} custom messages are still emitted the way rasa-webchat expects."""

    class FakeServer:
        def __init__(self) -> None:
            self.calls: List[Any] = []

        async def emit(self, event: str, data: Any = None, room: Optional[str] = None) -> None:
            self.calls.append((event, data, room))

    sio = FakeServer()
    output = WebChatOutput(sio, "bot_uttered")  # type: ignore[arg-type]
    await output.send_custom_json("s1", {"data": {"kind": "carousel"}, "room": "someone-else"})
    await output.send_custom_json("s1", {"posbot": {"handoff": "released"}})

    assert sio.calls == [
        ("bot_uttered", {"kind": "carousel"}, "s1"),
        ("bot_uttered", {"posbot": {"handoff": "released"}}, "s1"),
    ]
