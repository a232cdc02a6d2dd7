"""The REST channel's poll route: what the bot and agents said after a cursor, refusals first."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic

from bot.channels import delivery
from bot.channels.rest import MAX_POLL_LIMIT, POLL_LIMIT, RestInput, messages_after

URL = "/webhooks/rest/messages"
SENDER = "rest-7f3c9a1e2b5d4c6f8a0b"
BUTTONS = [{"title": "登记报修", "payload": "/contact_support"}]


def agent_event(name: str, text: str, at: float) -> BotUttered:
    """What the staff console writes for an agent's reply."""
    custom = {"posbot": {"agent_message": {"name": name, "text": text}}}
    return BotUttered(None, {"custom": custom}, {delivery.RECEIPT_KEY: "r"}, timestamp=at)


class Rest:
    """A Sanic app with only the REST channel, reading a Rasa in-memory tracker store."""

    def __init__(self) -> None:
        self.trackers = InMemoryTrackerStore(Domain.empty())
        self.app = Sanic(f"rest_test_{uuid.uuid4().hex[:12]}")
        self.app.ctx.agent = SimpleNamespace(tracker_store=self.trackers)

        async def on_new_message(_: Any) -> None:
            return None

        self.app.blueprint(RestInput().blueprint(on_new_message), url_prefix="/webhooks/rest")

    async def add(self, *events: Any, sender: str = SENDER) -> None:
        tracker = await self.trackers.retrieve(sender) or DialogueStateTracker(sender, [])
        for event in events:
            tracker.update(event)
        await self.trackers.save(tracker)

    async def poll(self, **params: Any) -> Any:
        _, response = await self.app.asgi_client.get(URL, params=params)
        assert response.status != 500, response.text
        return response


@pytest.fixture(autouse=True)
def no_gc_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel freezes the garbage collector when its server starts; not in the tests."""
    monkeypatch.setenv("POSBOT_GC_FREEZE", "0")


@pytest_asyncio.fixture()
async def rest() -> Rest:
    channel = Rest()
    await channel.add(
        UserUttered("打印机不出纸", input_channel="rest", timestamp=100.0),
        ActionExecuted("utter_x", timestamp=100.5),
        BotUttered("请检查纸仓。", {"buttons": BUTTONS}, timestamp=101.0),
        BotUttered(None, {}, timestamp=101.5),  # nothing to show: left out
        UserUttered("转人工", input_channel="rest", timestamp=102.0),
        agent_event("王芳", "您好，我是人工客服王芳", 103.0),
    )
    return channel


@pytest.mark.asyncio
async def test_the_bot_and_the_agent_are_told_apart_and_the_merchant_is_not_echoed(rest: Rest) -> None:
    response = await rest.poll(sender=SENDER)
    assert response.status == 200 and response.headers["cache-control"] == "no-store"
    body = response.json
    assert body["messages"] == [
        {
            "sender": "bot",
            "agent": None,
            "text": "请检查纸仓。",
            "buttons": BUTTONS,
            "custom": None,
            "timestamp": 101.0,
        },
        {
            "sender": "agent",
            "agent": "王芳",
            "text": "您好，我是人工客服王芳",
            "buttons": [],
            "custom": {"posbot": {"agent_message": {"name": "王芳", "text": "您好，我是人工客服王芳"}}},
            "timestamp": 103.0,
        },
    ]
    assert body["more"] is False and float(body["cursor"]) == 103.0


@pytest.mark.asyncio
async def test_the_cursor_gives_each_message_once(rest: Rest) -> None:
    cursor = (await rest.poll(sender=SENDER)).json["cursor"]
    nothing = (await rest.poll(sender=SENDER, since=cursor)).json
    assert nothing == {"messages": [], "cursor": cursor, "more": False}

    await rest.add(
        UserUttered("在吗", input_channel="rest", timestamp=104.0),
        agent_event("王芳", "请把屏幕拍给我看看", 105.0),
        BotUttered(
            "人工客服已经处理完毕，我回来了。",
            {"custom": {"posbot": {"handoff": "released"}}},
            timestamp=106.0,
        ),
    )
    news = (await rest.poll(sender=SENDER, since=cursor)).json
    assert [(m["sender"], m["text"]) for m in news["messages"]] == [
        ("agent", "请把屏幕拍给我看看"),
        ("bot", "人工客服已经处理完毕，我回来了。"),
    ]
    assert news["messages"][1]["custom"] == {"posbot": {"handoff": "released"}}
    assert (await rest.poll(sender=SENDER, since=news["cursor"])).json["messages"] == []


@pytest.mark.asyncio
async def test_a_limit_pages_through_with_more(rest: Rest) -> None:
    first = (await rest.poll(sender=SENDER, limit="1")).json
    assert [m["text"] for m in first["messages"]] == ["请检查纸仓。"] and first["more"] is True
    second = (await rest.poll(sender=SENDER, since=first["cursor"], limit="1")).json
    assert [m["text"] for m in second["messages"]] == ["您好，我是人工客服王芳"]
    assert second["more"] is False


@pytest.mark.asyncio
async def test_at_most_the_limit_is_returned() -> None:
    rest = Rest()
    await rest.add(
        UserUttered("你好", input_channel="rest", timestamp=199.0),
        *[BotUttered(f"第{i}条", {}, timestamp=200.0 + i) for i in range(120)],
    )
    page = (await rest.poll(sender=SENDER)).json
    assert len(page["messages"]) == POLL_LIMIT and page["more"] is True
    page = (await rest.poll(sender=SENDER, limit=str(MAX_POLL_LIMIT))).json
    assert len(page["messages"]) == MAX_POLL_LIMIT
    rest_of_it = (await rest.poll(sender=SENDER, since=page["cursor"], limit="100")).json
    assert [m["text"] for m in rest_of_it["messages"]] == [f"第{i}条" for i in range(100, 120)]


def test_a_page_never_ends_between_two_messages_of_the_same_time() -> None:
    events = [
        BotUttered("a", {}, timestamp=1.0),
        BotUttered("b", {}, timestamp=2.0),
        BotUttered("c", {}, timestamp=2.0),
        BotUttered("d", {}, timestamp=3.0),
    ]
    found, cursor, more = messages_after(events, None, 2)
    assert [m["text"] for m in found] == ["a", "b", "c"] and cursor == 2.0 and more
    found, cursor, more = messages_after(events, cursor, 2)
    assert [m["text"] for m in found] == ["d"] and cursor == 3.0 and not more


@pytest.mark.asyncio
async def test_only_conversations_held_over_rest_are_read(rest: Rest) -> None:
    """A WeChat merchant's openid must not open their conversation to anyone who polls it."""
    await rest.add(
        UserUttered("转人工", input_channel="wechat", timestamp=1.0),
        agent_event("王芳", "请把屏幕拍给我看看", 2.0),
        sender="oWeChatOpenId",
    )
    assert (await rest.poll(sender="oWeChatOpenId")).json == {"messages": [], "cursor": "0", "more": False}


@pytest.mark.asyncio
async def test_a_rest_message_cannot_claim_another_channel() -> None:
    """Rasa's REST channel takes "input_channel" from the body; ours always says "rest"."""
    seen: list[Any] = []

    async def on_new_message(message: Any) -> None:
        seen.append(message)

    app = Sanic(f"rest_test_{uuid.uuid4().hex[:12]}")
    app.blueprint(RestInput().blueprint(on_new_message), url_prefix="/webhooks/rest")
    _, response = await app.asgi_client.post(
        "/webhooks/rest/webhook", json={"sender": SENDER, "message": "你好", "input_channel": "wechat"}
    )
    assert response.status == 200
    assert [m.input_channel for m in seen] == ["rest"]


@pytest.mark.asyncio
async def test_an_unknown_conversation_is_empty_and_not_created(rest: Rest) -> None:
    body = (await rest.poll(sender="rest-nobody-here")).json
    assert body == {"messages": [], "cursor": "0", "more": False}
    assert await rest.trackers.retrieve("rest-nobody-here") is None
    assert (await rest.poll(sender="rest-nobody-here", since="12.5")).json["cursor"] == "12.5"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sender": ""},
        {"sender": "   "},
        {"sender": "x" * 129},
        {"sender": SENDER, "since": "yesterday"},
        {"sender": SENDER, "since": "-1"},
        {"sender": SENDER, "since": "nan"},
        {"sender": SENDER, "since": "inf"},
        {"sender": SENDER, "since": "1" * 40},
        {"sender": SENDER, "limit": "0"},
        {"sender": SENDER, "limit": str(MAX_POLL_LIMIT + 1)},
        {"sender": SENDER, "limit": "ten"},
    ],
    ids=[
        "no-sender",
        "empty-sender",
        "blank-sender",
        "long-sender",
        "word-cursor",
        "negative-cursor",
        "nan-cursor",
        "inf-cursor",
        "long-cursor",
        "zero-limit",
        "big-limit",
        "word-limit",
    ],
)
async def test_a_bad_poll_is_a_clear_400(rest: Rest, params: dict[str, str]) -> None:
    response = await rest.poll(**params)
    assert response.status == 400
    assert response.json["error"]


@pytest.mark.asyncio
async def test_a_tracker_store_outage_is_a_503_not_a_500(rest: Rest) -> None:
    async def broken(_: str) -> None:
        raise ConnectionError("database is down")

    rest.trackers.retrieve = broken  # type: ignore[method-assign]
    response = await rest.poll(sender=SENDER)
    assert response.status == 503 and response.json["error"]
    rest.app.ctx.agent = None
    assert (await rest.poll(sender=SENDER)).status == 503


@pytest.mark.asyncio
async def test_rest_reports_that_it_is_polled_not_pushed() -> None:
    assert await RestInput().delivery_receipt("any") == delivery.Delivery(True, False, delivery.REST_POLL)
    assert RestInput().get_output_channel() is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "send",
    [
        {"data": "sender=a&message=b", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        {"data": "{bad json", "headers": {"content-type": "application/json"}},
        {"content": "打印机不出纸".encode()},
        {"json": ["not", "an", "object"]},
        {"json": {"sender": SENDER, "message": 42}},
        {"json": {"message": "你好"}},
    ],
    ids=["form", "broken-json", "plain-text", "json-list", "number-message", "no-sender"],
)
async def test_a_malformed_webhook_request_gets_a_json_400_and_reaches_no_one(send: dict) -> None:
    seen: list[Any] = []

    async def on_new_message(message: Any) -> None:
        seen.append(message)

    app = Sanic(f"rest_test_{uuid.uuid4().hex[:12]}")
    app.blueprint(RestInput().blueprint(on_new_message), url_prefix="/webhooks/rest")
    _, response = await app.asgi_client.post("/webhooks/rest/webhook", **send)
    assert response.status == 400
    assert response.headers["content-type"].startswith("application/json")
    assert '"sender"' in response.json["error"] or '"message"' in response.json["error"]
    assert seen == []
