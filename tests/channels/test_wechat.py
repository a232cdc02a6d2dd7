"""Tests of the WeChat Official Account channel (bot/channels/wechat.py).

The protocol oracles are independent of the code under test: signatures are computed here with
hashlib, AES is done here with ``cryptography`` directly, and wechatpy's own published test
vector (token 123456) and the official signature example (token AAAAA) pin both down.  Every test
asserts what the merchant would see: the Content of the reply XML, decrypted where needed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import BotUttered
from sanic import Sanic
from wechatpy.exceptions import WeChatClientException

from bot.channels import delivery
from bot.channels.delivery import RECEIPT_KEY
from bot.channels.wechat import (
    CONTENT_LIMIT_BYTES,
    TEXTS_PATH,
    InMemoryStore,
    RedisStore,
    WeChatInput,
    WeChatOutput,
    WeChatStore,
    WeChatTexts,
    build_wechat_client,
    paginate,
    parse_menu_choice,
)
from bot.settings import Settings

TOKEN = "posbot-unit-token"
APP_ID = "wx49f0ab532d5d035a"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
URL = "/webhooks/wechat/webhook"
USER = "oUserOpenId000000000000001"
ACCOUNT = "gh_posbot_account"
TEXTS = WeChatTexts.load()
REDIS_URL = os.environ.get("POSBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# wechatpy's published vector (tests/test_crypto.py, test_decrypt_message): token 123456.
VECTOR_TOKEN = "123456"
VECTOR_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHC"
    "rsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXp"
    "XaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkV"
    "QiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAP"
    "OQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
VECTOR_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
VECTOR_TIMESTAMP = "1411525903"
VECTOR_NONCE = "461056294"


# --------------------------------------------------------------------------------------------
# Independent protocol helpers (no wechatpy)
# --------------------------------------------------------------------------------------------


def sign(*parts: str) -> str:
    """WeChat's signature: sha1 of the sorted, concatenated parts."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def _aes(key_b64: str) -> Cipher:
    key = base64.b64decode(key_b64 + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def encrypt(xml: str, key_b64: str = AES_KEY, app_id: str = APP_ID) -> str:
    """WeChat's message encryption: random(16) | len(4, big endian) | xml | app id, PKCS7/32."""
    body = xml.encode("utf-8")
    plain = os.urandom(16) + struct.pack(">I", len(body)) + body + app_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = _aes(key_b64).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def decrypt(encrypted: str, key_b64: str = AES_KEY, app_id: str = APP_ID) -> str:
    decryptor = _aes(key_b64).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    plain = plain[: -plain[-1]]
    length = struct.unpack(">I", plain[16:20])[0]
    assert plain[20 + length :].decode() == app_id
    return plain[20 : 20 + length].decode("utf-8")


def text_xml(
    content: str, msg_id: str = "", from_user: str = USER, **extra: str
) -> str:
    msg_id = msg_id or str(uuid.uuid4().int)[:19]
    fields = {"MsgType": "text", "Content": content, "MsgId": msg_id, **extra}
    return message_xml(fields, from_user)


def event_xml(
    event: str, event_key: str = "", create_time: str = "", from_user: str = USER
) -> str:
    fields = {
        "MsgType": "event",
        "Event": event,
        "CreateTime": create_time or _unique_time(),
    }
    if event_key:
        fields["EventKey"] = event_key
    return message_xml(fields, from_user)


def message_xml(fields: dict[str, str], from_user: str = USER) -> str:
    base = {
        "ToUserName": ACCOUNT,
        "FromUserName": from_user,
        "CreateTime": _unique_time(),
    }
    base.update(fields)
    inner = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in base.items())
    return f"<xml>{inner}</xml>"


_time_counter = [int(time.time())]


def _unique_time() -> str:
    _time_counter[0] += 1
    return str(_time_counter[0])


def plain_params(token: str = TOKEN) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), str(uuid.uuid4().int % 10**10)
    return {
        "signature": sign(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }


def safe_request(xml: str, token: str = TOKEN) -> tuple[bytes, dict[str, str]]:
    encrypted = encrypt(xml)
    timestamp, nonce = str(int(time.time())), "1514711492"
    params = {
        "signature": sign(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": sign(token, timestamp, nonce, encrypted),
    }
    envelope = (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>")
    return envelope.encode(), params


def reply_fields(body: str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


def reply_content(response: Any) -> str:
    assert response.status == 200, response.text
    return reply_fields(response.text)["Content"]


def decrypted_reply(
    response: Any, token: str = TOKEN, key_b64: str = AES_KEY
) -> dict[str, str]:
    """Checks MsgSignature of an encrypted reply and returns the fields of the inner XML."""
    assert response.status == 200, response.text
    outer = reply_fields(response.text)
    expected = sign(token, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"])
    assert outer["MsgSignature"] == expected
    return reply_fields(decrypt(outer["Encrypt"], key_b64))


# --------------------------------------------------------------------------------------------
# Fakes and fixtures
# --------------------------------------------------------------------------------------------

Reply = dict[str, Any]


@dataclass
class FakeBot:
    """Stands in for ``agent.handle_message``: records calls and answers from a script."""

    script: dict[str, list[Reply]] = field(default_factory=dict)
    delay_s: float = 0.0
    fail: bool = False
    calls: list[UserMessage] = field(default_factory=list)

    async def __call__(self, message: UserMessage) -> None:
        self.calls.append(message)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        replies = self.script.get(
            message.text or "", [{"text": f"收到:{message.text}"}]
        )
        for reply in replies:
            if reply.get("buttons"):
                await message.output_channel.send_text_with_buttons(
                    message.sender_id, reply["text"], reply["buttons"]
                )
            else:
                await message.output_channel.send_text_message(
                    message.sender_id, reply["text"]
                )

    @property
    def texts(self) -> list[str | None]:
        return [call.text for call in self.calls]


@dataclass
class FakeMessageApi:
    """Records customer-service sends instead of calling api.weixin.qq.com.

    ``refuse_with`` makes it fail the way wechatpy does when WeChat answers an errcode, e.g.
    45015 when the merchant has not written for 48 hours.
    """

    sent: list[tuple[str, str]] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    refuse_with: int | None = None
    attempts: int = 0

    def send_text(
        self, user_id: str, content: str, account: str | None = None
    ) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        self.attempts += 1
        if self.refuse_with is not None:
            raise WeChatClientException(
                self.refuse_with, "response out of time limit or subscription is canceled"
            )
        self.sent.append((user_id, content))
        return {"errcode": 0, "errmsg": "ok"}


@dataclass
class FakeWeChatClient:
    """Same shape as wechatpy's WeChatClient for the part the channel uses."""

    message: FakeMessageApi = field(default_factory=FakeMessageApi)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "wechat_token": TOKEN,
        "wechat_app_id": APP_ID,
        "wechat_aes_key": AES_KEY,
        "wechat_reply_budget_s": 4.0,
    }
    values.update(overrides)
    return Settings(**values)


def make_app(channel: WeChatInput, bot: FakeBot) -> Sanic:
    app = Sanic(f"wechat_test_{uuid.uuid4().hex}")
    app.blueprint(channel.blueprint(bot), url_prefix="/webhooks/wechat")
    return app


@dataclass
class Harness:
    """A fresh Sanic app with the channel mounted, plus request helpers."""

    app: Sanic
    bot: FakeBot
    channel: WeChatInput

    async def post_plain(self, xml: str, token: str = TOKEN) -> Any:
        _, response = await self.app.asgi_client.post(
            URL, params=plain_params(token), content=xml.encode("utf-8")
        )
        return response

    async def post_safe(self, xml: str) -> Any:
        body, params = safe_request(xml)
        _, response = await self.app.asgi_client.post(URL, params=params, content=body)
        return response

    async def say(self, text: str, **kwargs: str) -> str:
        return reply_content(await self.post_plain(text_xml(text, **kwargs)))


def harness(
    bot: FakeBot | None = None,
    store: WeChatStore | None = None,
    client: FakeWeChatClient | None = None,
    clock: Callable[[], float] = time.time,
    **settings: Any,
) -> Harness:
    bot = bot or FakeBot()
    channel = WeChatInput(make_settings(**settings), store=store, wechat_client=client,
                          clock=clock)
    return Harness(make_app(channel, bot), bot, channel)


# --------------------------------------------------------------------------------------------
# GET verification
# --------------------------------------------------------------------------------------------


def test_official_signature_example() -> None:
    assert (
        sign("AAAAA", "1714036504", "1514711492")
        == "f464b24fc39322e44b38aa78f5edd27bd1441696"
    )


@pytest.mark.asyncio
async def test_get_verification_returns_echostr_for_official_example() -> None:
    h = harness(wechat_token="AAAAA")
    params = {
        "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
        "timestamp": "1714036504",
        "nonce": "1514711492",
        "echostr": "4723589472398472",
    }
    _, response = await h.app.asgi_client.get(URL, params=params)
    assert response.status == 200
    assert response.text == "4723589472398472"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "params",
    [
        {
            "signature": "0" * 40,
            "timestamp": "1714036504",
            "nonce": "1514711492",
            "echostr": "x",
        },
        {
            "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
            "timestamp": "1714036505",
            "nonce": "1514711492",
            "echostr": "x",
        },
        {"timestamp": "1714036504", "nonce": "1514711492", "echostr": "x"},
        {},
    ],
    ids=["forged", "tampered-timestamp", "missing-signature", "no-params"],
)
async def test_get_verification_refuses_bad_signature(params: dict[str, str]) -> None:
    h = harness(wechat_token="AAAAA")
    _, response = await h.app.asgi_client.get(URL, params=params)
    assert response.status == 403
    assert "x" not in response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_a_replayed_signed_request_is_refused_after_five_minutes(mode: str) -> None:
    """The plain signature does not cover the body: an old signed URL must not carry messages."""
    ten_minutes_later = harness(clock=lambda: time.time() + 600)
    post = ten_minutes_later.post_plain if mode == "plain" else ten_minutes_later.post_safe
    response = await post(text_xml("打印机不出纸"))
    assert response.status == 403 and "stale" in response.text
    assert ten_minutes_later.bot.calls == []

    a_minute_later = harness(clock=lambda: time.time() + 60)
    post = a_minute_later.post_plain if mode == "plain" else a_minute_later.post_safe
    assert (await post(text_xml("打印机不出纸"))).status == 200
    assert a_minute_later.bot.texts == ["打印机不出纸"]


@pytest.mark.asyncio
async def test_the_replay_window_can_be_switched_off() -> None:
    h = harness(clock=lambda: time.time() + 86_400, wechat_max_age_s=0)
    assert (await h.post_plain(text_xml("你好"))).status == 200


@pytest.mark.asyncio
async def test_unconfigured_token_refuses_everything_with_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness(wechat_token="", wechat_aes_key="")
    params = {
        "signature": sign("", "1", "2"),
        "timestamp": "1",
        "nonce": "2",
        "echostr": "e",
    }
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        _, get_response = await h.app.asgi_client.get(URL, params=params)
        post_response = await h.post_plain(text_xml("你好"), token="")
    assert get_response.status == 403
    assert post_response.status == 403
    assert h.bot.calls == []
    assert "WECHAT_TOKEN is not configured" in caplog.text


@pytest.mark.asyncio
async def test_health_route() -> None:
    _, response = await harness().app.asgi_client.get("/webhooks/wechat/")
    assert response.status == 200
    assert response.json == {"status": "ok"}


# --------------------------------------------------------------------------------------------
# Plain mode
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_plain_text_message_reaches_bot_and_reply_is_passive_xml() -> None:
    h = harness(
        FakeBot(
            script={
                "打印机不出纸": [{"text": "请检查纸仓。"}, {"text": "还不行请重启。"}]
            }
        )
    )
    response = await h.post_plain(text_xml("打印机不出纸"))
    fields = reply_fields(response.text)
    assert response.status == 200
    assert fields["ToUserName"] == USER
    assert fields["FromUserName"] == ACCOUNT
    assert fields["MsgType"] == "text"
    assert abs(int(fields["CreateTime"]) - time.time()) < 5
    assert fields["Content"] == "请检查纸仓。\n\n还不行请重启。"
    [call] = h.bot.calls
    assert call.text == "打印机不出纸"
    assert call.sender_id == USER
    assert call.input_channel == "wechat"
    assert call.metadata == {"channel": "wechat", "msg_type": "text"}


@pytest.mark.asyncio
@pytest.mark.parametrize("token", ["wrong-token", ""], ids=["forged", "empty"])
async def test_plain_post_with_forged_signature_is_refused(token: str) -> None:
    h = harness()
    response = await h.post_plain(text_xml("你好"), token=token)
    assert response.status == 403
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_plain_post_without_signature_is_refused() -> None:
    h = harness()
    _, response = await h.app.asgi_client.post(URL, content=text_xml("你好").encode())
    assert response.status == 403
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_reply_with_cdata_terminator_and_control_chars_stays_valid_xml() -> None:
    h = harness(FakeBot(script={"x": [{"text": "a]]>b\x07c<d>&e"}]}))
    assert await h.say("x") == "a]]>bc<d>&e"


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
# Safe mode (AES)
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_safe_mode_with_wechatpy_published_vector() -> None:
    # The vector was signed at VECTOR_TIMESTAMP: the bot's clock says it is that moment.
    h = harness(wechat_token=VECTOR_TOKEN, clock=lambda: float(VECTOR_TIMESTAMP))
    envelope = (
        f"<xml><ToUserName><![CDATA[{APP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{VECTOR_ENCRYPT}]]></Encrypt><AgentID><![CDATA[1]]></AgentID></xml>"
    )
    params = {
        "timestamp": VECTOR_TIMESTAMP,
        "nonce": VECTOR_NONCE,
        "encrypt_type": "aes",
        "msg_signature": VECTOR_SIGNATURE,
    }
    _, response = await h.app.asgi_client.post(
        URL, params=params, content=envelope.encode()
    )
    inner = decrypted_reply(response, token=VECTOR_TOKEN)
    assert h.bot.texts == ["test"]
    assert h.bot.calls[0].sender_id == "messense"
    assert inner["ToUserName"] == "messense"
    assert inner["FromUserName"] == APP_ID
    assert inner["Content"] == "收到:test"
    assert reply_fields(response.text)["Nonce"] == VECTOR_NONCE


@pytest.mark.asyncio
async def test_safe_mode_round_trip_in_chinese() -> None:
    h = harness(FakeBot(script={"刷卡显示A0": [{"text": "A0 表示需要重新签到。"}]}))
    inner = decrypted_reply(await h.post_safe(text_xml("刷卡显示A0")))
    assert inner["Content"] == "A0 表示需要重新签到。"
    assert inner["ToUserName"] == USER
    assert h.bot.calls[0].sender_id == USER


@pytest.mark.asyncio
async def test_safe_mode_tampered_ciphertext_is_refused() -> None:
    h = harness()
    body, params = safe_request(text_xml("你好"))
    encrypted = ET.fromstring(body).findtext("Encrypt") or ""
    flipped = ("B" if encrypted[10] != "B" else "C").join(
        [encrypted[:10], encrypted[11:]]
    )
    tampered = body.replace(encrypted.encode(), flipped.encode())
    _, response = await h.app.asgi_client.post(URL, params=params, content=tampered)
    assert response.status == 403
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_safe_mode_garbage_ciphertext_with_valid_signature_is_refused() -> None:
    """Someone holding the Token but not the key cannot inject messages either."""
    h = harness()
    garbage = base64.b64encode(os.urandom(96)).decode()
    params = {
        "timestamp": "1714036504",
        "nonce": "1",
        "encrypt_type": "aes",
        "msg_signature": sign(TOKEN, "1714036504", "1", garbage),
    }
    body = f"<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>".encode()
    _, response = await h.app.asgi_client.post(URL, params=params, content=body)
    assert response.status == 403
    assert h.bot.calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize("msg_signature", ["0" * 40, ""], ids=["wrong", "missing"])
async def test_safe_mode_wrong_msg_signature_is_refused(msg_signature: str) -> None:
    h = harness()
    body, params = safe_request(text_xml("你好"))
    params["msg_signature"] = msg_signature
    _, response = await h.app.asgi_client.post(URL, params=params, content=body)
    assert response.status == 403
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_safe_mode_without_encrypt_field_is_bad_request() -> None:
    h = harness()
    _, params = safe_request(text_xml("你好"))
    _, response = await h.app.asgi_client.post(
        URL, params=params, content=b"<xml><A>1</A></xml>"
    )
    assert response.status == 400
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_compatible_mode_without_key_answers_in_plain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """兼容模式 carries plaintext fields too, so a missing key degrades instead of failing."""
    h = harness(wechat_aes_key="")
    fields = {
        "MsgType": "text",
        "Content": "你好",
        "MsgId": "42",
        "Encrypt": encrypt("<xml/>"),
    }
    _, params = safe_request("<xml/>")
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        _, response = await h.app.asgi_client.post(
            URL, params=params, content=message_xml(fields).encode()
        )
    assert reply_content(response) == "收到:你好"
    assert "WECHAT_AES_KEY" in caplog.text


@pytest.mark.asyncio
async def test_invalid_aes_key_refuses_encrypted_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        h = harness(wechat_aes_key="too-short")
    body, params = safe_request(text_xml("你好"))
    _, response = await h.app.asgi_client.post(URL, params=params, content=body)
    assert (
        response.status == 400
    )  # plain signature is fine, but the envelope has no message
    assert h.bot.calls == []
    assert "43-character" in caplog.text


# --------------------------------------------------------------------------------------------
# Hostile input
# --------------------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><ToUserName>gh</ToUserName><FromUserName>u</FromUserName><MsgType>text</MsgType>
<Content>&lol9;</Content><MsgId>1</MsgId></xml>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh</ToUserName><FromUserName>u</FromUserName><MsgType>text</MsgType>
<Content>&xxe;</Content><MsgId>2</MsgId></xml>"""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "xml", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "xxe"]
)
async def test_entity_attacks_are_refused_quickly(xml: str) -> None:
    h = harness()
    started = time.perf_counter()
    response = await h.post_plain(xml)
    assert response.status == 400
    assert time.perf_counter() - started < 1.0
    assert h.bot.calls == []
    assert "root:" not in response.text


@pytest.mark.asyncio
async def test_entity_attack_inside_encrypted_message_is_refused() -> None:
    h = harness()
    response = await h.post_safe(BILLION_LAUGHS)
    assert response.status == 400
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_one_megabyte_body_is_refused_quickly() -> None:
    h = harness()
    huge = text_xml("满" * (1024 * 1024 // 3))
    started = time.perf_counter()
    response = await h.post_plain(huge)
    assert response.status == 413
    assert time.perf_counter() - started < 1.0
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_oversized_chunked_body_without_content_length_is_refused() -> None:
    h = harness()
    huge = text_xml("满" * (200 * 1024)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 16 * 1024):
            yield huge[start : start + 16 * 1024]

    request, response = await h.app.asgi_client.post(
        URL, params=plain_params(), content=chunks()
    )
    assert "content-length" not in request.headers
    assert response.status == 413
    assert h.bot.calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        "<xml><ToUserName>gh</ToUserName>",
        "not xml at all",
        "",
        "<root><ToUserName>gh</ToUserName></root>",
        "<xml><ToUserName>gh</ToUserName><MsgType>text</MsgType></xml>",
        message_xml({"MsgType": "text", "Content": "x"}, from_user="u" * 500),
    ],
    ids=["truncated", "text", "empty", "wrong-root", "no-sender", "huge-openid"],
)
async def test_malformed_messages_are_bad_requests(body: str) -> None:
    h = harness()
    response = await h.post_plain(body)
    assert response.status == 400
    assert h.bot.calls == []


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
    assert (
        reply_content(await h.post_plain(message_xml(fields))) == "请打开纸仓取出卡纸。"
    )
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
# Numbered menu and long answers
# --------------------------------------------------------------------------------------------

MENU_SCRIPT = {
    "机器坏了": [
        {
            "text": "请问是哪种问题？",
            "buttons": [
                {"title": "打印机故障", "payload": "/fault_printer"},
                {"title": "刷卡失败", "payload": "/fault_card"},
            ],
        }
    ],
}


@pytest.mark.asyncio
@pytest.mark.parametrize("choice", ["2", "２", "2.", " 2、", "2。"])
async def test_numbered_menu_round_trip(choice: str) -> None:
    h = harness(FakeBot(script=MENU_SCRIPT))
    first = await h.say("机器坏了")
    assert first == "请问是哪种问题？\n回复数字选择：\n1. 打印机故障\n2. 刷卡失败"
    assert await h.say(choice) == "收到:/fault_card"
    assert h.bot.texts == ["机器坏了", "/fault_card"]


@pytest.mark.asyncio
async def test_number_without_menu_or_out_of_range_goes_to_bot_as_text() -> None:
    h = harness(FakeBot(script=MENU_SCRIPT))
    assert await h.say("1") == "收到:1"
    await h.say("机器坏了")
    assert await h.say("9") == "收到:9"
    assert (
        await h.say("1") == "收到:1"
    )  # the answer to "9" had no buttons: menu replaced
    assert h.bot.texts == ["1", "机器坏了", "9", "1"]


@pytest.mark.asyncio
async def test_menus_are_per_user() -> None:
    h = harness(FakeBot(script=MENU_SCRIPT))
    await h.say("机器坏了", from_user="oAlice")
    assert await h.say("1", from_user="oBob") == "收到:1"
    assert await h.say("1", from_user="oAlice") == "收到:/fault_printer"


def _long_answer() -> str:
    lines = [
        f"第{i}步：检查终端第{i}个部件的连接，确认指示灯正常后再继续操作。"
        for i in range(1, 121)
    ]
    return "\n".join(lines)


@pytest.mark.asyncio
async def test_long_answer_is_paged_with_continue_chain() -> None:
    answer = _long_answer()
    assert len(answer.encode()) > 3 * CONTENT_LIMIT_BYTES
    h = harness(FakeBot(script={"怎么排查": [{"text": answer}]}))
    pages = [await h.say("怎么排查")]
    while pages[-1].endswith(TEXTS.continuation_marker):
        pages.append(await h.say("继续"))
        assert len(pages) < 20
    assert len(pages) >= 4
    for page in pages:
        assert len(page.encode("utf-8")) <= CONTENT_LIMIT_BYTES
    for page in pages[:-1]:
        assert page.endswith("\n" + TEXTS.continuation_marker)
        assert page[: -len(TEXTS.continuation_marker) - 1].endswith(
            "。"
        )  # cut at a line end
    shown = [p.removesuffix("\n" + TEXTS.continuation_marker) for p in pages]
    assert "\n".join(shown) == answer
    assert await h.say("继续。") == TEXTS.nothing_more
    assert h.bot.texts == ["怎么排查"]


@pytest.mark.asyncio
async def test_long_line_without_breaks_is_cut_at_character_boundary() -> None:
    answer = ("汉字😀" * 700).strip()
    h = harness(FakeBot(script={"长": [{"text": answer}]}))
    first = await h.say("长")
    second = await h.say("继续")
    assert len(first.encode()) <= CONTENT_LIMIT_BYTES
    assert first.endswith(TEXTS.continuation_marker)
    rest = [second]
    while rest[-1].endswith(TEXTS.continuation_marker):
        rest.append(await h.say("继续"))
    joined = "".join(
        p.removesuffix("\n" + TEXTS.continuation_marker) for p in [first, *rest]
    )
    assert joined == answer


@pytest.mark.asyncio
async def test_continue_without_pending_pages() -> None:
    h = harness()
    assert await h.say("继续") == TEXTS.nothing_more
    assert h.bot.calls == []


def test_paginate_keeps_short_text_and_respects_limit() -> None:
    assert paginate("短消息", 2048, "(more)") == ["短消息"]
    assert paginate("", 2048, "(more)") == []
    pages = paginate("a" * 5000, 2048, TEXTS.continuation_marker)
    assert all(len(p.encode()) <= 2048 for p in pages)
    assert (
        "".join(p.removesuffix("\n" + TEXTS.continuation_marker) for p in pages)
        == "a" * 5000
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("１", 1),
        ("1.", 1),
        ("12", 12),
        ("3、", 3),
        ("4)", 4),
        ("一", None),
        ("1 2", None),
        ("123", None),
        ("继续", None),
    ],
)
def test_parse_menu_choice(text: str, expected: int | None) -> None:
    assert parse_menu_choice(text) == expected


# --------------------------------------------------------------------------------------------
# Retries and time budget
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_retry_with_same_msg_id_does_not_reach_bot_and_gets_same_reply() -> None:
    h = harness()
    xml = text_xml("POS机没反应", msg_id="6054768590064713728")
    first = reply_content(await h.post_plain(xml))
    second = reply_content(await h.post_plain(xml))
    assert first == second == "收到:POS机没反应"
    assert h.bot.texts == ["POS机没反应"]


@pytest.mark.asyncio
async def test_retry_of_continue_does_not_skip_a_page() -> None:
    h = harness(FakeBot(script={"怎么排查": [{"text": _long_answer()}]}))
    await h.say("怎么排查")
    again = text_xml("继续", msg_id="777")
    assert reply_content(await h.post_plain(again)) == reply_content(
        await h.post_plain(again)
    )
    third = await h.say("继续")
    assert third.startswith("第")
    assert third != reply_content(await h.post_plain(again))


@pytest.mark.asyncio
async def test_retry_while_first_is_running_gets_success() -> None:
    h = harness(FakeBot(delay_s=0.3))
    xml = text_xml("慢问题", msg_id="123123")
    first_task = asyncio.create_task(h.post_plain(xml))
    await asyncio.sleep(0.1)
    retry = await h.post_plain(xml)
    first = await first_task
    assert retry.status == 200 and retry.text == "success"
    assert reply_content(first) == "收到:慢问题"
    assert len(h.bot.calls) == 1


@pytest.mark.asyncio
async def test_event_retry_is_deduplicated_by_sender_and_create_time() -> None:
    h = harness()
    xml = event_xml("subscribe", create_time="1714036504")
    assert reply_content(await h.post_plain(xml)) == reply_content(
        await h.post_plain(xml)
    )
    assert h.bot.texts == ["/greet"]
    other_user = event_xml("subscribe", create_time="1714036504", from_user="oOther")
    await h.post_plain(other_user)
    assert h.bot.texts == ["/greet", "/greet"]


@pytest.mark.asyncio
async def test_slow_bot_answers_success_then_customer_service_delivers() -> None:
    client = FakeWeChatClient()
    h = harness(
        FakeBot(delay_s=0.4, script={"查费率": [{"text": "费率为0.6%。"}]}),
        client=client,
        wechat_reply_budget_s=0.05,
        wechat_app_secret="secret",
    )
    started = time.perf_counter()
    response = await h.post_plain(text_xml("查费率", msg_id="555"))
    assert time.perf_counter() - started < 0.35
    assert response.status == 200 and response.text == "success"
    assert client.message.sent == []
    await h.channel.wait_for_background()
    assert client.message.sent == [(USER, "费率为0.6%。")]
    assert client.message.threads != [
        threading.get_ident()
    ]  # blocking call off the loop
    retry = await h.post_plain(text_xml("查费率", msg_id="555"))
    assert retry.text == "success"
    assert len(h.bot.calls) == 1


@pytest.mark.asyncio
async def test_slow_bot_late_menu_is_remembered() -> None:
    client = FakeWeChatClient()
    bot = FakeBot(delay_s=0.2, script=MENU_SCRIPT)
    h = harness(bot, client=client, wechat_reply_budget_s=0.05)
    assert (await h.post_plain(text_xml("机器坏了"))).text == "success"
    await h.channel.wait_for_background()
    assert client.message.sent[0][1].endswith("2. 刷卡失败")
    bot.delay_s = 0
    assert await h.say("1") == "收到:/fault_printer"


@pytest.mark.asyncio
async def test_slow_bot_without_secret_logs_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness(FakeBot(delay_s=0.2), wechat_reply_budget_s=0.05, wechat_app_secret="")
    with caplog.at_level(logging.WARNING, logger="bot.channels.wechat"):
        response = await h.post_plain(text_xml("慢"))
        await h.channel.wait_for_background()
    assert response.text == "success"
    assert "could not be delivered" in caplog.text
    assert "WECHAT_APP_SECRET" in caplog.text


@pytest.mark.asyncio
async def test_customer_service_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(FakeMessageApi):
        def send_text(
            self, user_id: str, content: str, account: str | None = None
        ) -> Any:
            raise RuntimeError("45015 response out of time limit")

    h = harness(
        FakeBot(delay_s=0.2),
        client=FakeWeChatClient(Broken()),
        wechat_reply_budget_s=0.05,
    )
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        await h.post_plain(text_xml("慢"))
        await h.channel.wait_for_background()
    assert "Customer-service message" in caplog.text


# --------------------------------------------------------------------------------------------
# Pushed messages (客服消息): agent replies, messages kept for the merchant's next message
# --------------------------------------------------------------------------------------------


def pushed(text: str | None, receipt: str = "", **data: Any) -> dict[str, Any]:
    """What Rasa hands an output channel for a bot event it was told to deliver (the API's
    ``execute_side_effects``: ``output_channel.send_response(sender_id, event.message())``)."""
    return BotUttered(text, data, {RECEIPT_KEY: receipt} if receipt else {}).message()


def agent_says(name: str, text: str, receipt: str = "") -> dict[str, Any]:
    """The staff console's event for an agent's reply."""
    return pushed(
        None, receipt, custom={"posbot": {"agent_message": {"name": name, "text": text}}}
    )


async def push(h: Harness, message: dict[str, Any]) -> None:
    output = h.channel.get_output_channel()
    assert isinstance(output, WeChatOutput) and output.name() == "wechat"
    await output.send_response(USER, message)


@pytest.mark.asyncio
async def test_an_agent_reply_is_sent_as_a_customer_service_message_naming_the_agent() -> None:
    client = FakeWeChatClient()
    h = harness(client=client, wechat_app_secret="secret")
    await push(h, agent_says("王芳", "请把屏幕上的提示拍给我看看", receipt="r-1"))
    assert client.message.sent == [(USER, "【人工客服 王芳】\n请把屏幕上的提示拍给我看看")]
    assert client.message.threads != [threading.get_ident()]  # blocking call off the loop
    assert await h.channel.delivery_receipt("r-1") == delivery.DELIVERED
    assert await h.channel.undelivered(USER) == 0
    assert await h.say("好的") == "收到:好的"  # nothing left over for the next reply


@pytest.mark.asyncio
async def test_45015_keeps_the_reply_for_the_next_passive_reply_exactly_once() -> None:
    client = FakeWeChatClient(FakeMessageApi(refuse_with=45015))
    h = harness(client=client)
    await push(h, agent_says("王芳", "请把屏幕上的提示拍给我看看", receipt="r-2"))
    assert client.message.attempts == 1 and client.message.sent == []
    assert await h.channel.delivery_receipt("r-2") == delivery.Delivery(
        True, False, delivery.WECHAT_WINDOW_CLOSED
    )
    assert await h.channel.undelivered(USER) == 1
    assert await h.channel.undelivered("oSomeoneElse") == 0
    assert await h.say("你好", from_user="oSomeoneElse") == "收到:你好"

    xml = text_xml("在吗", msg_id="4501500001")
    first = reply_content(await h.post_plain(xml))
    assert first == "【人工客服 王芳】\n请把屏幕上的提示拍给我看看\n\n收到:在吗"
    assert reply_content(await h.post_plain(xml)) == first  # WeChat's retry: the same reply
    assert await h.channel.undelivered(USER) == 0
    assert await h.say("好的") == "收到:好的"
    assert h.bot.texts == ["你好", "在吗", "好的"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("errcode", "reason"),
    [
        (45015, delivery.WECHAT_WINDOW_CLOSED),
        (45047, delivery.WECHAT_LIMIT),
        (40001, delivery.WECHAT_ERROR),
    ],
)
async def test_every_refusal_is_reported_and_the_message_kept(errcode: int, reason: str) -> None:
    h = harness(client=FakeWeChatClient(FakeMessageApi(refuse_with=errcode)))
    await push(h, agent_says("王芳", "稍等", receipt="r"))
    assert await h.channel.delivery_receipt("r") == delivery.Delivery(True, False, reason)
    assert await h.say("在") == "【人工客服 王芳】\n稍等\n\n收到:在"


@pytest.mark.asyncio
async def test_without_an_app_secret_messages_wait_for_the_merchants_next_message() -> None:
    h = harness(wechat_app_secret="")
    await push(h, agent_says("王芳", "您好，我是人工客服王芳", receipt="r-3"))
    await push(h, agent_says("王芳", "请问机器是什么型号？", receipt="r-4"))
    for receipt in ("r-3", "r-4"):
        assert await h.channel.delivery_receipt(receipt) == delivery.Delivery(
            True, False, delivery.WECHAT_NO_SECRET
        )
    assert await h.channel.undelivered(USER) == 2
    assert await h.say("在") == (
        "【人工客服 王芳】\n您好，我是人工客服王芳\n\n"
        "【人工客服 王芳】\n请问机器是什么型号？\n\n收到:在"
    )
    assert await h.say("在吗") == "收到:在吗"


@pytest.mark.asyncio
async def test_kept_messages_go_out_first_once_wechat_takes_messages_again() -> None:
    api = FakeMessageApi(refuse_with=45015)
    h = harness(client=FakeWeChatClient(api))
    await push(h, agent_says("王芳", "第一条"))
    api.refuse_with = None
    await push(h, agent_says("王芳", "第二条", receipt="r-5"))
    assert api.sent == [(USER, "【人工客服 王芳】\n第一条\n\n【人工客服 王芳】\n第二条")]
    assert await h.channel.delivery_receipt("r-5") == delivery.DELIVERED
    assert await h.say("好") == "收到:好"


@pytest.mark.asyncio
async def test_pushed_bot_messages_keep_the_wechat_format_and_menu() -> None:
    client = FakeWeChatClient()
    h = harness(client=client)
    # `posbot handoff release`: utter_handoff_released, a text plus the widget's signal
    await push(h, pushed("人工客服已经处理完毕，我回来了。",
                         custom={"posbot": {"handoff": "released"}}))
    await push(h, pushed("请问是哪种问题？", buttons=MENU_SCRIPT["机器坏了"][0]["buttons"]))
    await push(h, pushed(None, custom={"posbot": {"handoff": "started"}}))  # nothing to show
    assert client.message.sent == [
        (USER, "人工客服已经处理完毕，我回来了。"),
        (USER, "请问是哪种问题？\n回复数字选择：\n1. 打印机故障\n2. 刷卡失败"),
    ]
    assert await h.say("2") == "收到:/fault_card"


@pytest.mark.asyncio
async def test_a_kept_menu_is_numbered_together_with_the_next_answer() -> None:
    h = harness(FakeBot(script=MENU_SCRIPT), wechat_app_secret="")
    await push(h, pushed("要登记报修吗？", buttons=[{"title": "登记报修", "payload": "/ticket"}]))
    assert await h.say("机器坏了") == (
        "要登记报修吗？\n回复数字选择：\n1. 登记报修\n\n"
        "请问是哪种问题？\n回复数字选择：\n2. 打印机故障\n3. 刷卡失败"
    )
    assert json.loads(await h.channel.store.get(f"menu:{USER}") or "") == [
        "/ticket", "/fault_printer", "/fault_card"]
    assert await h.say("3") == "收到:/fault_card"


@pytest.mark.asyncio
async def test_kept_messages_come_first_in_the_channels_own_replies_too() -> None:
    h = harness(wechat_app_secret="")
    await push(h, agent_says("王芳", "麻烦用文字说一下"))
    image = message_xml({"MsgType": "image", "PicUrl": "http://x/y.jpg", "MsgId": "770001"})
    assert reply_content(await h.post_plain(image)) == (
        "【人工客服 王芳】\n麻烦用文字说一下\n\n" + TEXTS.unsupported
    )
    await push(h, agent_says("王芳", "还在吗"))
    assert await h.say("继续") == "【人工客服 王芳】\n还在吗\n\n" + TEXTS.nothing_more
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_a_long_kept_message_is_paged_like_any_answer() -> None:
    h = harness(wechat_app_secret="")
    long_text = "。".join(f"第{i}步：检查打印机纸仓和电源" for i in range(120))
    await push(h, agent_says("王芳", long_text))
    pages = [await h.say("在")]
    while pages[-1].endswith(TEXTS.continuation_marker) and len(pages) < 10:
        pages.append(await h.say("继续"))
    assert len(pages) > 1
    assert all(len(page.encode("utf-8")) <= CONTENT_LIMIT_BYTES for page in pages)
    assert pages[0].startswith("【人工客服 王芳】\n第0步") and pages[-1].endswith("收到:在")


@pytest.mark.asyncio
async def test_a_slow_answer_without_secret_comes_with_the_next_reply() -> None:
    bot = FakeBot(delay_s=0.2, script={"慢": [{"text": "这是慢的回答。"}]})
    h = harness(bot, wechat_reply_budget_s=0.05, wechat_app_secret="")
    assert (await h.post_plain(text_xml("慢"))).text == "success"
    await h.channel.wait_for_background()
    bot.delay_s = 0
    assert await h.say("在吗") == "这是慢的回答。\n\n收到:在吗"


@pytest.mark.asyncio
async def test_a_push_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """Rasa's API would answer 500 if the output channel raised."""

    class BrokenStore(InMemoryStore):
        async def take_list(self, key: str) -> list[str]:
            raise RuntimeError("store down")

    h = harness(store=BrokenStore(), client=FakeWeChatClient())
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        await push(h, agent_says("王芳", "你好"))
    assert "Could not push" in caplog.text


@pytest.mark.asyncio
async def test_a_message_neither_sent_nor_kept_is_reported_as_such() -> None:
    class FullStore(InMemoryStore):
        async def append_list(self, key: str, values: list[str], ttl_s: float, *,
                              front: bool = False) -> bool:
            return False

    h = harness(store=FullStore(), client=FakeWeChatClient(FakeMessageApi(refuse_with=45015)))
    await push(h, agent_says("王芳", "你好", receipt="r-6"))
    assert await h.channel.delivery_receipt("r-6") == delivery.Delivery(
        True, False, delivery.WECHAT_NOT_KEPT
    )
    assert await h.channel.delivery_receipt("never-recorded") is None


@pytest.mark.asyncio
async def test_the_agent_line_comes_from_the_texts_file(tmp_path: Any) -> None:
    import yaml

    assert TEXTS.agent_line("王芳") == "【人工客服 王芳】"
    data = yaml.safe_load(TEXTS_PATH.read_text(encoding="utf-8"))
    changed = tmp_path / "texts.yml"
    changed.write_text(yaml.safe_dump({**data, "agent_prefix": "客服{name}："},
                                      allow_unicode=True), encoding="utf-8")
    client = FakeWeChatClient()
    channel = WeChatInput(make_settings(), texts=WeChatTexts.load(changed), wechat_client=client)
    await channel.get_output_channel().send_response(USER, agent_says("李", "好的"))
    assert client.message.sent == [(USER, "客服李：\n好的")]
    changed.write_text(yaml.safe_dump({**data, "agent_prefix": "【{agent}】"}), encoding="utf-8")
    with pytest.raises(ValueError, match="agent_prefix"):
        WeChatTexts.load(changed)


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_in_memory_store_expires_and_claims() -> None:
    now = [1000.0]
    store = InMemoryStore(max_entries=3, clock=lambda: now[0])
    assert await store.claim("a", "1", 10) is None
    assert await store.claim("a", "2", 10) == "1"
    now[0] += 11
    assert await store.get("a") is None
    assert await store.claim("a", "3", 10) is None
    for key in "bcd":
        await store.set(key, key, 10)
    assert len(store._data) <= 3  # bounded
    assert await store.get("d") == "d"
    await store.delete("d")
    assert await store.get("d") is None


@pytest.mark.asyncio
async def test_in_memory_lists_keep_order_expire_and_are_taken_once() -> None:
    now = [1000.0]
    store = InMemoryStore(clock=lambda: now[0])
    assert await store.take_list("k") == [] and await store.list_length("k") == 0
    assert await store.append_list("k", ["c"], 10)
    await store.append_list("k", ["d"], 10)
    await store.append_list("k", ["a", "b"], 10, front=True)
    assert await store.list_length("k") == 4
    assert await store.take_list("k") == ["a", "b", "c", "d"]
    assert await store.take_list("k") == []
    await store.append_list("k", ["x"], 10)
    now[0] += 11
    assert await store.list_length("k") == 0


@pytest_asyncio.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    redis_asyncio = pytest.importorskip("redis.asyncio")
    client = redis_asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        await client.connection_pool.disconnect()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"posbot-test-wechat:{uuid.uuid4().hex}:"
    yield RedisStore(client, prefix=prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.connection_pool.disconnect()


@pytest.mark.asyncio
async def test_redis_store_primitives(redis_store: RedisStore) -> None:
    assert await redis_store.claim("k", "first", 5) is None
    assert await redis_store.claim("k", "second", 5) == "first"
    await redis_store.set("s", json.dumps(["甲", "乙"]), 5)
    assert json.loads(await redis_store.get("s") or "") == ["甲", "乙"]
    await redis_store.delete("s")
    assert await redis_store.get("s") is None
    await redis_store.set("short", "x", 0.05)
    await asyncio.sleep(0.15)
    assert await redis_store.get("short") is None
    assert await redis_store.append_list("l", ["c"], 5)
    await redis_store.append_list("l", ["a", "b"], 5, front=True)
    await redis_store.append_list("l", ["d"], 5)
    assert await redis_store.list_length("l") == 4
    assert await redis_store.take_list("l") == ["a", "b", "c", "d"]
    assert await redis_store.take_list("l") == [] and await redis_store.list_length("l") == 0


@pytest.mark.asyncio
async def test_kept_messages_are_shared_through_redis_and_delivered_once(
    redis_store: RedisStore,
) -> None:
    one = harness(store=redis_store, wechat_app_secret="")
    await push(one, agent_says("王芳", "请稍等，我查一下", receipt="r-7"))
    other = harness(store=redis_store, wechat_app_secret="")  # a second server, same Redis
    assert await other.channel.delivery_receipt("r-7") == delivery.Delivery(
        True, False, delivery.WECHAT_NO_SECRET
    )
    assert await other.channel.undelivered(USER) == 1
    replies = await asyncio.gather(one.say("在"), other.say("在吗"))
    assert sum("请稍等，我查一下" in reply for reply in replies) == 1
    assert await one.channel.undelivered(USER) == 0


@pytest.mark.asyncio
async def test_channel_with_redis_store_dedupes_and_keeps_menu(
    redis_store: RedisStore,
) -> None:
    h = harness(FakeBot(script=MENU_SCRIPT), store=redis_store)
    xml = text_xml("机器坏了", msg_id="8888")
    first = reply_content(await h.post_plain(xml))
    assert reply_content(await h.post_plain(xml)) == first
    # a second server sharing the same Redis sees the same menu
    other = harness(FakeBot(), store=redis_store)
    assert await other.say("2") == "收到:/fault_card"
    assert h.bot.texts == ["机器坏了"]


@pytest.mark.asyncio
async def test_redis_outage_degrades_to_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore.from_url(
        "redis://127.0.0.1:1/0", prefix="posbot-test-wechat:down:"
    )
    h = harness(store=store)
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        assert await h.say("你好") == "收到:你好"
    assert "Redis unavailable" in caplog.text


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
    assert dataclasses.asdict(given.settings) | {} == dataclasses.asdict(
        dataclasses.replace(
            from_env.settings,
            wechat_token="yml-token",
            wechat_app_id=APP_ID,
            wechat_aes_key=AES_KEY,
            wechat_reply_budget_s=2.0,
        )
    )
    assert given.crypto is not None


def test_texts_file_documents_menu_mapping() -> None:
    assert TEXTS.menu_header == "回复数字选择："
    assert TEXTS.continuation_marker == "(内容较长,回复“继续”查看)"
    assert TEXTS.subscribe_payload == "/greet"
    assert TEXTS.menu_click_payloads == {
        "MENU_FAULT": "/fault_hardware",
        "MENU_ERROR_CODE": "/error_code",
        "MENU_FEES": "/fees",
        "MENU_SUPPORT": "/contact_support",
        "MENU_HUMAN": "/human_handoff",
    }


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
    redis_client = build_wechat_client(
        make_settings(wechat_app_secret="s", redis_url=REDIS_URL)
    )
    assert isinstance(redis_client, WeChatClient)
    assert isinstance(redis_client.session, RedisStorage)
