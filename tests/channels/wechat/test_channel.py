"""The channel's routes and conversation flow (bot/channels/wechat/channel.py): what reaches the
bot, what the channel answers by itself, and how it is configured."""

from __future__ import annotations

import uuid

import pytest

from bot.channels.wechat import InMemoryStore, RedisStore, WeChatInput, build_wechat_client
from tests.channels.wechat.kit import (
    AES_KEY,
    APP_ID,
    REDIS_URL,
    TEXTS,
    FakeBot,
    event_xml,
    harness,
    make_settings,
    message_xml,
    reply_content,
    text_xml,
)

# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_route() -> None:
    _, response = await harness().app.asgi_client.get("/webhooks/wechat/")
    assert response.status == 200
    assert response.json == {"status": "ok"}


@pytest.mark.asyncio
async def test_bot_exception_gives_polite_reply() -> None:
    h = harness(FakeBot(fail=True))
    assert await h.say("你好") == TEXTS.bot_error


@pytest.mark.asyncio
async def test_bot_without_answer_replies_success() -> None:
    h = harness(FakeBot(script={"静默": []}))
    response = await h.post_plain(text_xml("静默"))
    assert response.status == 200
    assert response.text == "success"


# --------------------------------------------------------------------------------------------
# Message types and events
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "fields",
    [
        {"MsgType": "image", "PicUrl": "http://x/y.jpg", "MediaId": "m"},
        {
            "MsgType": "location",
            "Location_X": "23.1",
            "Location_Y": "113.3",
            "Label": "广州",
        },
        {"MsgType": "link", "Title": "t", "Url": "http://x"},
        {"MsgType": "video", "MediaId": "m"},
        {"MsgType": "shortvideo", "MediaId": "m"},
        {"MsgType": "voice", "MediaId": "m", "Format": "amr"},
        {"MsgType": "voice", "MediaId": "m", "Format": "amr", "Recognition": "  "},
        {"MsgType": "hologram"},
        {"MsgType": "text", "Content": "   "},
    ],
    ids=[
        "image",
        "location",
        "link",
        "video",
        "shortvideo",
        "voice",
        "voice-blank",
        "unknown",
        "blank-text",
    ],
)
async def test_unsupported_messages_get_polite_text_request(
    fields: dict[str, str],
) -> None:
    h = harness()
    fields = {**fields, "MsgId": str(uuid.uuid4().int)[:18]}
    assert reply_content(await h.post_plain(message_xml(fields))) == TEXTS.unsupported
    assert "文字" in TEXTS.unsupported
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_voice_with_recognition_is_treated_as_text() -> None:
    h = harness(FakeBot(script={"打印机卡纸了": [{"text": "请打开纸仓取出卡纸。"}]}))
    fields = {
        "MsgType": "voice",
        "MediaId": "m",
        "Format": "amr",
        "Recognition": "打印机卡纸了",
        "MsgId": "9001",
    }
    assert reply_content(await h.post_plain(message_xml(fields))) == "请打开纸仓取出卡纸。"
    assert h.bot.calls[0].metadata == {"channel": "wechat", "msg_type": "voice"}


@pytest.mark.asyncio
async def test_subscribe_sends_greet_and_replies_with_welcome_menu() -> None:
    welcome = [
        {
            "text": "您好，我是POS小助手。",
            "buttons": [
                {"title": "设备故障", "payload": "/fault_hardware"},
                {"title": "错误码查询", "payload": "/error_code"},
            ],
        }
    ]
    h = harness(FakeBot(script={"/greet": welcome}))
    content = reply_content(await h.post_plain(event_xml("subscribe", "qrscene_123")))
    assert h.bot.texts == ["/greet"]
    assert h.bot.calls[0].metadata == {
        "channel": "wechat",
        "msg_type": "event",
        "event": "subscribe",
    }
    assert content == "您好，我是POS小助手。\n回复数字选择：\n1. 设备故障\n2. 错误码查询"


@pytest.mark.asyncio
async def test_unsubscribe_and_view_reply_success_without_bot() -> None:
    h = harness()
    for event, key in (
        ("unsubscribe", ""),
        ("VIEW", "https://example.com"),
        ("SCAN", "1"),
    ):
        response = await h.post_plain(event_xml(event, key))
        assert response.status == 200
        assert response.text == "success"
    assert h.bot.calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("event_key", "payload"),
    [
        ("MENU_FAULT", "/fault_hardware"),
        ("MENU_ERROR_CODE", "/error_code"),
        ("MENU_FEES", "/fees"),
        ("MENU_SUPPORT", "/contact_support"),
        ("MENU_HUMAN", "/human_handoff"),
        ("/restart", "/restart"),
    ],
)
async def test_menu_click_sends_mapped_payload(event_key: str, payload: str) -> None:
    h = harness()
    content = reply_content(await h.post_plain(event_xml("CLICK", event_key)))
    assert h.bot.texts == [payload]
    assert content == f"收到:{payload}"


@pytest.mark.asyncio
async def test_unknown_menu_click_gets_polite_reply() -> None:
    h = harness()
    content = reply_content(await h.post_plain(event_xml("CLICK", "MENU_NOPE")))
    assert content == TEXTS.unsupported
    assert h.bot.calls == []


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_from_credentials_prefers_credentials_then_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WECHAT_TOKEN", "env-token")
    monkeypatch.setenv("WECHAT_APP_ID", "wx-env")
    monkeypatch.setenv("WECHAT_AES_KEY", "")
    monkeypatch.setenv("WECHAT_REPLY_BUDGET_S", "3.5")
    monkeypatch.delenv("POSBOT_REDIS_URL", raising=False)
    from_env = WeChatInput.from_credentials(None)
    assert from_env.settings.wechat_token == "env-token"
    assert from_env.settings.wechat_reply_budget_s == 3.5
    assert from_env.crypto is None
    assert isinstance(from_env.store, InMemoryStore)
    assert WeChatInput.name() == "wechat"
    assert from_env.url_prefix() == "wechat"

    given = WeChatInput.from_credentials(
        {
            "token": "yml-token",
            "app_id": APP_ID,
            "aes_key": AES_KEY,
            "reply_budget_s": "2",
            "app_secret": None,
        }
    )
    assert vars(given.settings) == {  # the given values replace the environment's, no other
        **vars(from_env.settings),
        "wechat_token": "yml-token",
        "wechat_app_id": APP_ID,
        "wechat_aes_key": AES_KEY,
        "wechat_reply_budget_s": 2.0,
    }
    assert given.crypto is not None


def test_store_and_wechat_client_follow_redis_url() -> None:
    from wechatpy import WeChatClient
    from wechatpy.session.memorystorage import MemoryStorage
    from wechatpy.session.redisstorage import RedisStorage

    with_redis = WeChatInput.from_credentials({"redis_url": REDIS_URL, "token": "t"})
    assert isinstance(with_redis.store, RedisStore)

    assert build_wechat_client(make_settings(wechat_app_secret="")) is None
    memory_client = build_wechat_client(make_settings(wechat_app_secret="s"))
    assert isinstance(memory_client, WeChatClient)
    assert isinstance(memory_client.session, MemoryStorage)
    redis_client = build_wechat_client(make_settings(wechat_app_secret="s", redis_url=REDIS_URL))
    assert isinstance(redis_client, WeChatClient)
    assert isinstance(redis_client.session, RedisStorage)
