"""What the WeChat channel's tests share: protocol oracles, fakes and the request harness.

The protocol oracles are independent of the code under test: signatures are computed here with
hashlib, AES is done here with ``cryptography`` directly, and wechatpy's own published test
vector (token 123456) and the official signature example (token AAAAA) pin both down. Shared
fixtures (the Redis store) are in conftest.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sanic_testing  # noqa: F401  (see below)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import BotUttered
from sanic import Sanic
from wechatpy.exceptions import WeChatClientException

from bot.channels.delivery import RECEIPT_KEY
from bot.channels.wechat import WeChatInput, WeChatOutput, WeChatStore, WeChatTexts
from bot.settings import Settings

# Sanic imports its test client (httpx) on the first use of ``app.asgi_client``: importing it
# with the kit keeps that half second out of the tests that time an answer.

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


def text_xml(content: str, msg_id: str = "", from_user: str = USER, **extra: str) -> str:
    msg_id = msg_id or str(uuid.uuid4().int)[:19]
    fields = {"MsgType": "text", "Content": content, "MsgId": msg_id, **extra}
    return message_xml(fields, from_user)


def event_xml(event: str, event_key: str = "", create_time: str = "", from_user: str = USER) -> str:
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
    envelope = (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    )
    return envelope.encode(), params


def reply_fields(body: str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


def reply_content(response: Any) -> str:
    assert response.status == 200, response.text
    return reply_fields(response.text)["Content"]


def decrypted_reply(response: Any, token: str = TOKEN, key_b64: str = AES_KEY) -> dict[str, str]:
    """Checks MsgSignature of an encrypted reply and returns the fields of the inner XML."""
    assert response.status == 200, response.text
    outer = reply_fields(response.text)
    expected = sign(token, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"])
    assert outer["MsgSignature"] == expected
    return reply_fields(decrypt(outer["Encrypt"], key_b64))


# --------------------------------------------------------------------------------------------
# Fakes and the harness
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
        replies = self.script.get(message.text or "", [{"text": f"收到:{message.text}"}])
        for reply in replies:
            if reply.get("buttons"):
                await message.output_channel.send_text_with_buttons(
                    message.sender_id, reply["text"], reply["buttons"]
                )
            else:
                await message.output_channel.send_text_message(message.sender_id, reply["text"])

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

    def send_text(self, user_id: str, content: str, account: str | None = None) -> dict[str, Any]:
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
    channel = WeChatInput(make_settings(**settings), store=store, wechat_client=client, clock=clock)
    return Harness(make_app(channel, bot), bot, channel)


# --------------------------------------------------------------------------------------------
# Conversations several test modules use
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


def long_answer() -> str:
    lines = [f"第{i}步：检查终端第{i}个部件的连接，确认指示灯正常后再继续操作。" for i in range(1, 121)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Pushed messages (客服消息): what Rasa hands the output channel
# --------------------------------------------------------------------------------------------


def pushed(text: str | None, receipt: str = "", **data: Any) -> dict[str, Any]:
    """What Rasa hands an output channel for a bot event it was told to deliver (the API's
    ``execute_side_effects``: ``output_channel.send_response(sender_id, event.message())``)."""
    return BotUttered(text, data, {RECEIPT_KEY: receipt} if receipt else {}).message()


def agent_says(name: str, text: str, receipt: str = "") -> dict[str, Any]:
    """The staff console's event for an agent's reply."""
    return pushed(None, receipt, custom={"posbot": {"agent_message": {"name": name, "text": text}}})


async def push(h: Harness, message: dict[str, Any]) -> None:
    output = h.channel.get_output_channel()
    assert isinstance(output, WeChatOutput) and output.name() == "wechat"
    await output.send_response(USER, message)
