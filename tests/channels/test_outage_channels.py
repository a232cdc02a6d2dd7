"""What a merchant sees on each channel while PostgreSQL or Redis is unreachable, and after.

REST (Sanic's test client), the widget (a python-socketio client against the channel served on
a port) and WeChat (its signed-XML harness) in front of a real Rasa ``Agent`` whose tracker store
(PostgreSQL) and lock store (Redis) are reached through relays that the test cuts
(tests/bot/outage_kit.py). In the middle of the fee calculator the service goes away: the
merchant gets exactly one polite "请稍后再发一次", never an answer from an empty conversation,
never silence; nothing is stored for that message; once the service is back the merchant sends
it again and the calculator goes on with the amount it had.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio
import socketio
from sanic import Sanic

from bot.channels.rest import RestInput
from bot.channels.wechat import RedisStore
from bot.outage import SERVICE_UNAVAILABLE
from tests.bot.outage_kit import ASK_AMOUNT, ASK_RATE, REDIS_DB, Outage, outage  # noqa: F401
from tests.channels.test_web import _free_port, _QuickPingWebChatInput, make_app
from tests.channels.wechat.kit import USER, harness, reply_content, text_xml

pytestmark = [pytest.mark.postgres]
RESULT = "10,000 元 × 0.6% = 60 元"
SERVICES = ["postgres", "redis"]


@pytest.fixture(autouse=True)
def no_gc_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """The REST channel freezes the garbage collector when its server starts; not in tests."""
    monkeypatch.setenv("POSBOT_GC_FREEZE", "0")


def cut(o: Outage, service: str) -> None:
    (o.postgres if service == "postgres" else o.redis).cut()


def restore(o: Outage, service: str) -> None:
    (o.postgres if service == "postgres" else o.redis).restore()


# ------------------------------------------------------------------------------------ REST


class Rest:
    def __init__(self, o: Outage) -> None:
        self.app = Sanic(f"outage_rest_{uuid.uuid4().hex[:12]}")
        self.app.blueprint(RestInput().blueprint(o.handle), url_prefix="/webhooks/rest")

    async def say(self, sender: str, message: str) -> list[dict[str, Any]]:
        _, response = await self.app.asgi_client.post(
            "/webhooks/rest/webhook", json={"sender": sender, "message": message}
        )
        assert response.status == 200, response.text
        return response.json


@pytest.mark.asyncio
@pytest.mark.parametrize("service", SERVICES)
async def test_rest_outage_polite_reply_then_the_calculator_goes_on(outage: Outage, service: str) -> None:
    rest, who = Rest(outage), f"rest-{uuid.uuid4().hex}"
    assert [m["text"] for m in await rest.say(who, "算一下手续费")] == [ASK_AMOUNT]
    cut(outage, service)
    for _ in range(2):  # every message during the outage, not just the first
        during = await rest.say(who, "10000元")
        assert during == [{"recipient_id": who, "text": SERVICE_UNAVAILABLE}]
    assert outage.processor.turns == 1  # no answer from an empty conversation
    restore(outage, service)
    assert [m["text"] for m in await rest.say(who, "10000元")] == [ASK_RATE]
    assert [m["text"] for m in await rest.say(who, "0.6")] == [RESULT]  # the amount was kept
    assert outage.users(who) == ["算一下手续费", "10000元", "0.6"]


@pytest.mark.asyncio
async def test_rest_turn_that_could_not_be_saved_shows_only_the_apology(outage: Outage) -> None:
    rest, who = Rest(outage), f"rest-{uuid.uuid4().hex}"
    assert [m["text"] for m in await rest.say(who, "算一下手续费")] == [ASK_AMOUNT]

    async def database_goes_away() -> None:
        outage.postgres.cut()

    outage.processor.before_save = database_goes_away
    assert [m["text"] for m in await rest.say(who, "10000元")] == [SERVICE_UNAVAILABLE]
    outage.processor.before_save = None
    outage.postgres.restore()
    assert outage.users(who) == ["算一下手续费"]
    assert [m["text"] for m in await rest.say(who, "10000元")] == [ASK_RATE]


@pytest.mark.asyncio
async def test_rest_poll_during_an_outage_is_a_503(outage: Outage) -> None:
    rest, who = Rest(outage), f"rest-{uuid.uuid4().hex}"
    rest.app.ctx.agent = outage.agent
    await rest.say(who, "算一下手续费")
    outage.postgres.cut()
    _, response = await rest.app.asgi_client.get("/webhooks/rest/messages", params={"sender": who})
    assert response.status == 503 and "try again" in response.json["error"]
    outage.postgres.restore()
    _, response = await rest.app.asgi_client.get("/webhooks/rest/messages", params={"sender": who})
    assert response.status == 200
    assert [m["text"] for m in response.json["messages"]] == [ASK_AMOUNT]


# ------------------------------------------------------------------------------ the widget


@pytest_asyncio.fixture
async def widget(outage: Outage) -> AsyncIterator[Any]:
    """The widget channel served on a port, and a connected python-socketio client."""
    channel = _QuickPingWebChatInput(session_persistence=True, cors_origins=["*"])
    app = make_app(channel, on_new_message=outage.handle)
    port = _free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    client = socketio.AsyncClient(reconnection=False)
    received: asyncio.Queue = asyncio.Queue()
    client.on("session_confirm", lambda data: received.put_nowait(("confirm", data)))
    client.on("bot_uttered", lambda data: received.put_nowait(("bot", data)))
    session = f"w-{uuid.uuid4().hex}"
    await client.connect(f"http://127.0.0.1:{port}", transports=["polling"])
    await client.emit("session_request", {"session_id": session})
    assert await asyncio.wait_for(received.get(), 5) == ("confirm", session)

    class Widget:
        def __init__(self) -> None:
            self.sender = session
            self.seen: list[str] = []  # every bot message the widget received, in order

        async def say(self, message: str) -> str:
            await client.emit("user_uttered", {"message": message, "session_id": session})
            kind, data = await asyncio.wait_for(received.get(), 15)
            assert kind == "bot"
            self.seen.append(data["text"])
            return str(data["text"])

    try:
        yield Widget()
    finally:
        await client.disconnect()
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("service", SERVICES)
async def test_widget_outage_polite_reply_then_the_calculator_goes_on(
    outage: Outage, widget: Any, service: str
) -> None:
    assert await widget.say("算一下手续费") == ASK_AMOUNT
    cut(outage, service)
    assert await widget.say("10000元") == SERVICE_UNAVAILABLE
    restore(outage, service)
    assert await widget.say("10000元") == ASK_RATE
    assert await widget.say("0.6") == RESULT
    # Everything the widget received, in order: nothing else came in between.
    assert widget.seen == [ASK_AMOUNT, SERVICE_UNAVAILABLE, ASK_RATE, RESULT]
    assert outage.users(widget.sender) == ["算一下手续费", "10000元", "0.6"]


@pytest.mark.asyncio
async def test_widget_turn_that_could_not_be_saved_never_shows_its_answer(
    outage: Outage, widget: Any
) -> None:
    """The answer was produced before the database went away: it is held, then dropped."""
    assert await widget.say("算一下手续费") == ASK_AMOUNT

    async def database_goes_away() -> None:
        outage.postgres.cut()

    outage.processor.before_save = database_goes_away
    assert await widget.say("10000元") == SERVICE_UNAVAILABLE
    outage.processor.before_save = None
    outage.postgres.restore()
    assert await widget.say("10000元") == ASK_RATE
    assert widget.seen == [ASK_AMOUNT, SERVICE_UNAVAILABLE, ASK_RATE]
    assert outage.users(widget.sender) == ["算一下手续费", "10000元"]


# ---------------------------------------------------------------------------------- WeChat


@pytest.mark.asyncio
@pytest.mark.parametrize("service", SERVICES)
async def test_wechat_outage_polite_reply_then_the_calculator_goes_on(outage: Outage, service: str) -> None:
    h = harness(outage.handle)  # type: ignore[arg-type]
    assert await h.say("算一下手续费") == ASK_AMOUNT
    cut(outage, service)
    failed = text_xml("10000元")
    assert reply_content(await h.post_plain(failed)) == SERVICE_UNAVAILABLE
    # WeChat retries the same MsgId when it thinks we were slow: the same apology, no 2nd run.
    assert reply_content(await h.post_plain(failed)) == SERVICE_UNAVAILABLE
    restore(outage, service)
    assert await h.say("10000元") == ASK_RATE
    assert await h.say("0.6") == RESULT
    assert outage.users(USER) == ["算一下手续费", "10000元", "0.6"]


@pytest.mark.asyncio
async def test_wechat_redis_outage_logs_one_line_per_failure_kind_not_a_traceback_per_message(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    """The channel's state lives in the same Redis as the conversation locks (POSBOT_REDIS_URL).
    While it is down every message gets the polite text; the log says what fails once per kind,
    without tracebacks (those are at DEBUG), and once that Redis is back."""
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{outage.redis.port}/{REDIS_DB}", prefix=f"posbot-test-wechat:{uuid.uuid4().hex}:"
    )
    h = harness(outage.handle, store=store)  # type: ignore[arg-type]
    assert await h.say("算一下手续费") == ASK_AMOUNT
    outage.redis.cut()
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert await h.say("10000元") == SERVICE_UNAVAILABLE
    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [f"{r.name}: {r.getMessage()}" for r in shown if r.exc_info] == []
    wechat = [r.getMessage() for r in shown if r.name.startswith("bot.channels.wechat")]
    assert len(wechat) == len(set(wechat)) == 3  # retries, kept messages, menus and pages
    assert all(
        line.startswith("Redis unavailable for the WeChat channel's state (ConnectionError")
        for line in wechat
    )
    assert any(
        r.name.startswith("bot.channels.wechat") and r.levelno == logging.DEBUG and r.exc_info
        for r in caplog.records
    )
    assert len([r for r in shown if r.name == "bot.outage"]) == 3  # one line per message

    outage.redis.restore()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.channels.wechat"):
        assert await h.say("10000元") == ASK_RATE
    back = [r.getMessage() for r in caplog.records if r.name.startswith("bot.channels.wechat")]
    assert len(back) == 1 and back[0].startswith("Redis reachable again")
    assert await h.say("0.6") == RESULT
    assert outage.users(USER) == ["算一下手续费", "10000元", "0.6"]
