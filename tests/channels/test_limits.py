"""Webhook bodies: a merchant's message is short, so an oversized body is refused unread."""

from __future__ import annotations

import asyncio
import socket

import pytest
from sanic import Sanic, response
from sanic.request import Request

from bot.channels.limits import WEBHOOK_BODY_LIMITS, LimitedBlueprint, body_limit


@pytest.fixture()
def app() -> Sanic:
    app = Sanic(f"limits_{id(object())}")
    webhook = LimitedBlueprint("rest_webhook", url_prefix="/webhooks/rest")

    @webhook.post("/webhook")
    async def receive(request: Request) -> response.HTTPResponse:
        return response.json({"read": len(request.body)})

    @app.post("/model/train")
    async def train(request: Request) -> response.HTTPResponse:
        return response.json({"read": len(request.body)})

    app.blueprint(webhook)
    return app


def test_limits_apply_to_the_merchant_webhooks_only() -> None:
    assert body_limit("/webhooks/rest/webhook") == WEBHOOK_BODY_LIMITS["/webhooks/rest/"]
    assert body_limit("/webhooks/wechat/webhook") == 64 * 1024
    assert body_limit("/model/train") is None


def test_a_normal_message_goes_through(app: Sanic) -> None:
    _, res = app.test_client.post("/webhooks/rest/webhook", json={"sender": "s", "message": "打印机不出纸"})
    assert res.status == 200


async def _raw_exchange(app: Sanic, head: bytes) -> bytes:
    """Send ``head`` (request line + headers, no body) to a real server; the status line back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.start_serving()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=5)
        writer.close()
        return status.strip()
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_a_5_mb_body_gets_413_before_it_is_sent(app: Sanic) -> None:
    """Only the headers are sent: the answer must come without the server waiting for a body."""
    status = await _raw_exchange(
        app,
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: bot\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 5242880\r\n\r\n",
    )
    assert status.startswith(b"HTTP/1.1 413")


@pytest.mark.asyncio
async def test_a_chunked_body_without_length_is_refused(app: Sanic) -> None:
    status = await _raw_exchange(
        app, b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: bot\r\n" b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert status.startswith(b"HTTP/1.1 411")


def test_the_admin_api_keeps_its_own_limit(app: Sanic) -> None:
    _, res = app.test_client.post("/model/train", content=b"x" * (200 * 1024))
    assert res.status == 200 and res.json == {"read": 200 * 1024}
