"""The speed-ups in bot/perf.py give the same results as the Rasa code they replace."""

from __future__ import annotations

import time

import pytest
from aiohttp import web
from rasa.shared.core.events import Event, SlotSet
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import EndpointConfig

from bot import perf


def test_event_type_lookup_gives_the_same_class_as_rasa() -> None:
    perf.apply()
    for cls in all_subclasses(Event):
        assert Event.resolve_by_type(cls.type_name) is perf._original_resolve_by_type(cls.type_name)
    assert Event.resolve_by_type("topic") is None
    assert Event.resolve_by_type("no-such-event", default=SlotSet) is SlotSet
    with pytest.raises(ValueError):
        Event.resolve_by_type("no-such-event")


@pytest.mark.asyncio
async def test_action_calls_reuse_one_connection_and_send_the_same_json() -> None:
    perf.apply()
    peers: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/webhook", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    payload = {"tracker": {"events": [{"event": "user", "text": "打印机不出纸/卡纸",
                                       "timestamp": time.time(), "confidence": 0.123456789}]},
               "domain": {"slots": {"brand": None}}}
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook")
        first = await endpoint.request(json=payload, method="post")
        second = await endpoint.request(json=payload, method="post")
    finally:
        await perf.close_sessions()
        await runner.cleanup()
    assert first == payload and second == payload
    assert len(peers) == 2 and peers[0] == peers[1]
