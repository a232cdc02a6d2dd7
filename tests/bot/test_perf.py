"""The speed-ups in bot/perf.py give the same results as the Rasa code they replace."""

from __future__ import annotations

import ast
import inspect
import json
import logging
import time
from pathlib import Path

import pytest
from aiohttp import web
from jsonschema import ValidationError
from rasa.engine.graph import GraphSchema, SchemaNode
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, SlotSet
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import EndpointConfig

from bot import perf
from bot.settings import PROJECT_ROOT


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


CONVERSATION_EVENTS = [
    event for events in json.loads((PROJECT_ROOT / "tests" / "data" / "conversations.json")
                                   .read_text(encoding="utf-8")).values() for event in events]


def test_action_responses_are_judged_as_rasas_full_schema_judges_them() -> None:
    slot = {"event": "slot", "name": "brand", "value": "拉卡拉", "timestamp": None}
    responses = [
        {"events": CONVERSATION_EVENTS, "responses": [{"text": "您好"}]},
        {"events": [], "responses": []},
        {},
        {"events": [slot, {"event": "bot", "text": "好的"}]},
        {"events": [{"event": "slot", "name": "brand"}]},  # no value
        {"events": [{"event": "no_such_event"}]},
        {"events": [{"name": "brand", "value": 1}]},  # no event type
        {"events": [{**slot, "timestamp": "now"}]},
        {"events": [{"event": "user", "text": 5}]},
        {"events": [{"event": "action", "name": "action_listen", "confidence": "high"}]},
        {"events": slot},
        {"events": [slot], "responses": ["您好"]},
        {"events": ["slot"]},
    ]
    for response in responses:
        assert perf._valid_response(response) == perf._response_validator().is_valid(response), (
            response)
    with pytest.raises(ValidationError, match="Failed to validate Action server response"):
        perf._validate_action_result(None, {"events": [{"event": "slot", "name": "brand"}]})


def test_applied_events_follow_the_tracker_as_it_grows() -> None:
    """Event by event through all recorded conversations in a row (forms, restarts, sessions)."""
    perf.apply()
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    events = [Event.from_parameters(e) for e in CONVERSATION_EVENTS]
    tracker = DialogueStateTracker.from_events("m", [], domain.slots)
    for event in events:
        tracker.update(event)
        first = tracker.applied_events()
        first.append("changed by a caller")
        assert tracker.applied_events() == perf._original_applied_events(tracker)


def test_pruned_prediction_graphs_are_rasas() -> None:
    perf.apply()
    schema = GraphSchema({
        "a": SchemaNode(needs={}, uses=object, constructor_name="create", fn="run", config={}),
        "b": SchemaNode(needs={"x": "a"}, uses=object, constructor_name="create", fn="run",
                        config={}, is_target=True),
        "c": SchemaNode(needs={}, uses=object, constructor_name="create", fn="run", config={}),
    })
    for targets in (["b"], ["a"], None, ["a"]):
        assert (schema.minimal_graph_schema(targets).nodes
                == perf._original_minimal_graph_schema(schema, targets).nodes)


def test_skipped_copies_are_only_ever_debug_log_arguments() -> None:
    """Every use of ``copy`` in the modules whose copies are skipped is a debug-call argument."""
    for module in perf.LOG_ONLY_COPY_MODULES:
        tree = ast.parse(Path(inspect.getsourcefile(module)).read_text(encoding="utf-8"))
        in_debug = {id(node) for call in ast.walk(tree) if isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute) and call.func.attr == "debug"
                    for node in ast.walk(call)}
        uses = [node for node in ast.walk(tree) if isinstance(node, ast.Name)
                and node.id == "copy" and isinstance(node.ctx, ast.Load)]
        assert uses and all(id(node) in in_debug for node in uses), module.__name__


def test_with_debug_logging_the_log_copies_are_made() -> None:
    value = {"slots": ["brand"]}
    assert perf._LogOnlyCopy().deepcopy(value) is value
    rasa_logger = logging.getLogger("rasa")
    level = rasa_logger.level
    rasa_logger.setLevel(logging.DEBUG)
    try:
        copied = perf._LogOnlyCopy().deepcopy(value)
    finally:
        rasa_logger.setLevel(level)
    assert copied == value and copied is not value


@pytest.mark.asyncio
async def test_start_up_objects_are_frozen_out_of_garbage_collection(monkeypatch) -> None:
    import gc

    try:
        monkeypatch.setenv("POSBOT_GC_FREEZE", "0")
        await perf.freeze_loaded_objects()
        assert gc.get_freeze_count() == 0
        monkeypatch.setenv("POSBOT_GC_FREEZE", "1")
        await perf.freeze_loaded_objects()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
