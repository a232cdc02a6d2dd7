"""End-to-end check of the WeChat channel against a running Rasa server with a trained model.

The ``live_bot`` fixture (tests/conftest.py) starts the server with the WeChat channel configured
for token ``posbot-test-token``, app id ``wx49f0ab532d5d035a`` and the EncodingAESKey below.  The
requests here are built exactly like WeChat's pushes: a signed plain POST and an AES-encrypted
POST (safe mode), and the assertions read the reply the merchant would see.
"""

from __future__ import annotations

import hashlib
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests
from wechatpy.crypto import WeChatCrypto

pytestmark = pytest.mark.integration

TOKEN = "posbot-test-token"
APP_ID = "wx49f0ab532d5d035a"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
ACCOUNT = "gh_posbot_live"
WEBHOOK = "/webhooks/wechat/webhook"
WARM_UP_S = 90.0


def _sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def _text_xml(content: str, sender: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{sender}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{uuid.uuid4().int % 10**19}</MsgId></xml>"
    )


def _fields(xml: str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(xml)}


def _post_plain(url: str, content: str, sender: str) -> requests.Response:
    timestamp, nonce = str(int(time.time())), str(uuid.uuid4().int % 10**9)
    params = {
        "signature": _sign(TOKEN, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    return requests.post(
        url + WEBHOOK,
        params=params,
        data=_text_xml(content, sender).encode("utf-8"),
        timeout=30,
    )


def _post_encrypted(url: str, content: str, sender: str) -> tuple[requests.Response, WeChatCrypto]:
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    timestamp, nonce = str(int(time.time())), str(uuid.uuid4().int % 10**9)
    sealed = _fields(crypto.encrypt_message(_text_xml(content, sender), nonce, timestamp))
    params = {
        "signature": _sign(TOKEN, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": sealed["MsgSignature"],
    }
    body = (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>"
    )
    response = requests.post(url + WEBHOOK, params=params, data=body.encode(), timeout=30)
    return response, crypto


def _warm_up(url: str) -> None:
    """The first message may load the model past the reply budget ("success"); retry a while."""
    deadline = time.monotonic() + WARM_UP_S
    while time.monotonic() < deadline:
        response = _post_plain(url, "你好", f"oWarmUp{uuid.uuid4().hex[:8]}")
        assert response.status_code == 200, response.text
        if response.text != "success":
            return
        time.sleep(1.0)
    pytest.fail(f"the bot never answered within the reply budget during {WARM_UP_S:.0f}s")


@pytest.fixture
def bot_url(live_bot: Any) -> str:
    url = str(live_bot.url).rstrip("/")
    _warm_up(url)
    return url


def test_plain_and_encrypted_messages_get_real_answers(bot_url: str) -> None:
    sender = f"oLive{uuid.uuid4().hex[:12]}"

    plain = _post_plain(bot_url, "拉卡拉客服电话多少", sender)
    assert plain.status_code == 200, plain.text
    assert plain.text != "success", "bot answered after the reply budget"
    reply = _fields(plain.text)
    assert reply["ToUserName"] == sender
    assert reply["MsgType"] == "text"
    assert "95016" in reply["Content"]

    encrypted, crypto = _post_encrypted(bot_url, "刷卡显示A0", sender)
    assert encrypted.status_code == 200, encrypted.text
    assert encrypted.text != "success", "bot answered after the reply budget"
    outer = _fields(encrypted.text)
    inner = _fields(
        crypto.decrypt_message(encrypted.text, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"])
    )
    assert inner["ToUserName"] == sender
    assert "签到" in inner["Content"]


def test_a_number_reply_picks_the_option_and_a_stale_one_is_explained(bot_url: str) -> None:
    sender = f"oLive{uuid.uuid4().hex[:12]}"
    asked = _fields(_post_plain(bot_url, "打印机不出纸", sender).text)["Content"]
    assert "1. 解决了" in asked and "2. 还没有" in asked
    solved = _fields(_post_plain(bot_url, "1", sender).text)["Content"]
    assert solved.startswith("太好了，问题解决了")
    # No options open any more: "2" is no goodbye; the merchant is told and asked for words.
    stale = _fields(_post_plain(bot_url, "2", sender).text)["Content"]
    assert stale.startswith("您回复的数字没有对应的选项") and "祝您生意兴隆" not in stale
