"""WeChat's side of the webhook (bot/channels/wechat/protocol.py): URL verification, signatures,
the replay window, safe mode (AES), hostile XML, the passive reply XML.

Every test asserts what the merchant would see: the Content of the reply XML, decrypted where
needed, or that a forged request never reaches the bot.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from tests.channels.wechat.kit import (
    ACCOUNT,
    APP_ID,
    TOKEN,
    URL,
    USER,
    VECTOR_ENCRYPT,
    VECTOR_NONCE,
    VECTOR_SIGNATURE,
    VECTOR_TIMESTAMP,
    VECTOR_TOKEN,
    FakeBot,
    decrypted_reply,
    encrypt,
    harness,
    message_xml,
    plain_params,
    reply_content,
    reply_fields,
    safe_request,
    sign,
    text_xml,
)

# --------------------------------------------------------------------------------------------
# GET verification and the replay window
# --------------------------------------------------------------------------------------------


def test_official_signature_example() -> None:
    assert sign("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


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


# --------------------------------------------------------------------------------------------
# Plain mode
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_plain_text_message_reaches_bot_and_reply_is_passive_xml() -> None:
    h = harness(FakeBot(script={"打印机不出纸": [{"text": "请检查纸仓。"}, {"text": "还不行请重启。"}]}))
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
    _, response = await h.app.asgi_client.post(URL, params=params, content=envelope.encode())
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
    flipped = ("B" if encrypted[10] != "B" else "C").join([encrypted[:10], encrypted[11:]])
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
    _, response = await h.app.asgi_client.post(URL, params=params, content=b"<xml><A>1</A></xml>")
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
        _, response = await h.app.asgi_client.post(URL, params=params, content=message_xml(fields).encode())
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
    assert response.status == 400  # plain signature is fine, but the envelope has no message
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
@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "xxe"])
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

    request, response = await h.app.asgi_client.post(URL, params=plain_params(), content=chunks())
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
