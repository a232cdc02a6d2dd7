"""The speed-ups in bot/speedups give the same results as the Rasa code they replace.

Each test here is named by an entry of bot/speedups/registry.py (tests/bot/test_speedups.py
checks that every entry has one).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import random
import time
from pathlib import Path
from typing import ClassVar

import pytest
from aiohttp import web
from jsonschema import ValidationError
from rasa.engine.graph import GraphSchema, SchemaNode
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, SlotSet
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import EndpointConfig

from bot.settings import PROJECT_ROOT
from bot.speedups import actions, dialogue, registry, startup
from bot.speedups import tracker as tracker_speedups


def test_event_type_lookup_gives_the_same_class_as_rasa() -> None:
    registry.install()
    for cls in all_subclasses(Event):
        rasas = tracker_speedups._original_resolve_by_type(cls.type_name)
        assert Event.resolve_by_type(cls.type_name) is rasas
    assert Event.resolve_by_type("topic") is None
    assert Event.resolve_by_type("no-such-event", default=SlotSet) is SlotSet
    with pytest.raises(ValueError):
        Event.resolve_by_type("no-such-event")


@pytest.mark.asyncio
async def test_action_calls_reuse_one_connection_and_send_the_same_json() -> None:
    registry.install()
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
    payload = {
        "tracker": {
            "events": [
                {
                    "event": "user",
                    "text": "打印机不出纸/卡纸",
                    "timestamp": time.time(),
                    "confidence": 0.123456789,
                }
            ]
        },
        "domain": {"slots": {"brand": None}},
    }
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook")
        first = await endpoint.request(json=payload, method="post")
        second = await endpoint.request(json=payload, method="post")
    finally:
        await actions.close_sessions()
        await runner.cleanup()
    assert first == payload and second == payload
    assert len(peers) == 2 and peers[0] == peers[1]


@pytest.mark.asyncio
async def test_an_idle_action_connection_is_dropped_before_the_action_server_drops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ticket form once lost the merchant's SN: a pooled connection the action server
    (Sanic, 5 s keep-alive) had just closed was reused. Ours closes first."""
    from sanic.config import DEFAULT_CONFIG

    assert actions.ACTION_KEEPALIVE_S < DEFAULT_CONFIG["KEEP_ALIVE_TIMEOUT"]
    registry.install()
    monkeypatch.setattr(actions, "ACTION_KEEPALIVE_S", 0.3)
    peers: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/webhook", echo)
    runner = web.AppRunner(app, keepalive_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook")
        replies = [await endpoint.request(json={"n": 1}, method="post")]
        replies.append(await endpoint.request(json={"n": 2}, method="post"))
        await asyncio.sleep(1.2)  # aiohttp drops expired connections on a 1 s tick at most
        replies.append(await endpoint.request(json={"n": 3}, method="post"))
    finally:
        await actions.close_sessions()
        await runner.cleanup()
    assert replies == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert peers[0] == peers[1] and peers[2] != peers[1]


RECORDED = json.loads((PROJECT_ROOT / "tests" / "data" / "conversations.json").read_text(encoding="utf-8"))
CONVERSATION_EVENTS = [event for events in RECORDED.values() for event in events]


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
        assert actions._valid_response(response) == actions._response_validator().is_valid(response), response
    with pytest.raises(ValidationError, match="Failed to validate Action server response"):
        actions._validate_action_result(None, {"events": [{"event": "slot", "name": "brand"}]})


def test_applied_events_follow_the_tracker_as_it_grows() -> None:
    """Event by event through all recorded conversations in a row (forms, restarts, sessions)."""
    registry.install()
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    events = [Event.from_parameters(e) for e in CONVERSATION_EVENTS]
    tracker = DialogueStateTracker.from_events("m", [], domain.slots)
    for event in events:
        tracker.update(event)
        first = tracker.applied_events()
        first.append("changed by a caller")
        assert tracker.applied_events() == tracker_speedups._original_applied_events(tracker)


def test_pruned_prediction_graphs_are_rasas() -> None:
    registry.install()
    schema = GraphSchema(
        {
            "a": SchemaNode(needs={}, uses=object, constructor_name="create", fn="run", config={}),
            "b": SchemaNode(
                needs={"x": "a"}, uses=object, constructor_name="create", fn="run", config={}, is_target=True
            ),
            "c": SchemaNode(needs={}, uses=object, constructor_name="create", fn="run", config={}),
        }
    )
    for targets in (["b"], ["a"], None, ["a"]):
        assert (
            schema.minimal_graph_schema(targets).nodes
            == dialogue._original_minimal_graph_schema(schema, targets).nodes
        )


def test_skipped_copies_are_only_ever_debug_log_arguments() -> None:
    """Every use of ``copy`` in the modules whose copies are skipped is a debug-call argument."""
    for module in dialogue.LOG_ONLY_COPY_MODULES:
        tree = ast.parse(Path(inspect.getsourcefile(module)).read_text(encoding="utf-8"))
        in_debug = {
            id(node)
            for call in ast.walk(tree)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "debug"
            for node in ast.walk(call)
        }
        uses = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and node.id == "copy" and isinstance(node.ctx, ast.Load)
        ]
        assert uses and all(id(node) in in_debug for node in uses), module.__name__


def test_with_debug_logging_the_log_copies_are_made() -> None:
    value = {"slots": ["brand"]}
    assert dialogue._LogOnlyCopy().deepcopy(value) is value
    rasa_logger = logging.getLogger("rasa")
    level = rasa_logger.level
    rasa_logger.setLevel(logging.DEBUG)
    try:
        copied = dialogue._LogOnlyCopy().deepcopy(value)
    finally:
        rasa_logger.setLevel(level)
    assert copied == value and copied is not value


@pytest.mark.asyncio
async def test_start_up_objects_are_frozen_out_of_garbage_collection(monkeypatch) -> None:
    import gc

    try:
        monkeypatch.setenv("POSBOT_GC_FREEZE", "0")
        await startup.freeze_loaded_objects()
        assert gc.get_freeze_count() == 0
        monkeypatch.setenv("POSBOT_GC_FREEZE", "1")
        await startup.freeze_loaded_objects()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def _recorded_prefixes(domain: Domain) -> list[DialogueStateTracker]:
    """Every recorded conversation cut after each of its events, sharing the event objects."""
    trackers = []
    for sender, recorded in RECORDED.items():
        events = [Event.from_parameters(e) for e in recorded]
        trackers += [
            DialogueStateTracker.from_events(sender, events[:n], domain.slots) for n in range(len(events) + 1)
        ]
    return trackers


def test_action_server_requests_are_rasas_byte_for_byte() -> None:
    """The body sent for every point of the recorded conversations, in three orders."""
    import ujson
    from rasa.core.actions.action import RemoteAction

    registry.install()
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    action = RemoteAction("action_start_troubleshooting", EndpointConfig("http://localhost:5055"))
    trackers = _recorded_prefixes(domain)
    shuffled = random.Random(7).sample(trackers, len(trackers))
    # Growing as in a conversation, then shrinking and jumping (kept JSON must not leak).
    for order in (trackers, trackers[::-1], shuffled):
        for tracker in order:
            ours = ujson.dumps(actions._action_call_format(action, tracker, domain))
            rasas = actions._original_action_call_format(action, tracker, domain)
            assert ours == ujson.dumps(rasas)
            assert json.loads(ours) == json.loads(json.dumps(rasas))


def _tracker_state(tracker: DialogueStateTracker) -> dict:
    from rasa.shared.core.trackers import EventVerbosity

    return {
        "events": [id(e) for e in tracker.events],
        "state": tracker.current_state(EventVerbosity.ALL),
        "slots": {n: (s.value, s.has_been_set) for n, s in tracker.slots.items()},
        "paused": tracker._paused,
        "followup": tracker.followup_action,
        "latest_action": tracker.latest_action,
        "message": tracker.latest_message,
        "bot": tracker.latest_bot_utterance,
        "loop": tracker.active_loop,
    }


def test_tracker_copies_are_the_replayed_state_and_stay_independent() -> None:
    """Along every recorded conversation, as the processor does it: a live tracker that grows
    event by event (and loses its follow-up action without an event), copied after each one."""
    registry.install()
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    for sender, recorded in RECORDED.items():
        events = [Event.from_parameters(e) for e in recorded]
        live = DialogueStateTracker.from_events(sender, events[:3], domain.slots)
        tracker_speedups.remember_replay(live)
        for event in events[3:]:
            live.update(event)
            live.clear_followup_action()  # as the processor does, without an event
            ours, rasas = live.copy(), tracker_speedups._original_copy(live)
            assert _tracker_state(ours) == _tracker_state(rasas), sender
            before = _tracker_state(live.copy())
            ours.update(SlotSet("brand", "银联"))  # an action's events on the copy only
            if ours.active_loop is not None:
                ours.active_loop.rejected = True
            assert _tracker_state(live.copy()) == before


def test_an_event_copied_and_changed_is_sent_as_changed() -> None:
    """Rasa deep-copies a user event and raises its confidence when a fallback is resolved."""
    import copy as copy_module

    import ujson
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.core.events import ActionExecuted, UserUttered

    registry.install()
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    action = RemoteAction("action_clarify", EndpointConfig("http://localhost:5055"))
    first = UserUttered("打印机", {"name": "fault_hardware", "confidence": 0.4}, timestamp=1.0)
    later = UserUttered("好的", {"name": "affirm", "confidence": 0.9}, timestamp=3.0)
    tracker = DialogueStateTracker.from_events(
        "m", [first, ActionExecuted("action_listen", timestamp=2.0), later], domain.slots
    )
    actions._action_call_format(action, tracker, domain)  # first's JSON is now kept
    changed = copy_module.deepcopy(first)
    changed.parse_data["intent"]["confidence"] = 1.0
    again = DialogueStateTracker.from_events(
        "m", [changed, ActionExecuted("action_listen", timestamp=2.0), later], domain.slots
    )
    assert ujson.dumps(actions._action_call_format(action, again, domain)) == ujson.dumps(
        actions._original_action_call_format(action, again, domain)
    )


def test_copies_of_odd_trackers_are_rasas() -> None:
    """No domain slots (slots appear as they are set), and no user message yet (placeholders)."""
    from rasa.shared.core.events import EntitiesAdded

    registry.install()
    loose = DialogueStateTracker("m", None)
    loose.update(SlotSet("a", 1))
    loose.copy()
    loose.update(SlotSet("b", 2))
    assert {n: s.value for n, s in loose.copy().slots.items()} == {"a": 1, "b": 2}

    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    fresh = DialogueStateTracker.from_events("m", [SlotSet("brand", "银联")], domain.slots)
    tracker_speedups.remember_replay(fresh)
    one = fresh.copy()
    one.update(EntitiesAdded([{"entity": "brand", "value": "银联", "start": 0, "end": 2}]))
    assert (
        fresh.copy().latest_message.entities
        == tracker_speedups._original_copy(fresh).latest_message.entities
        == []
    )


def _step_class() -> type:
    from rasa.engine.graph import GraphComponent

    class Step(GraphComponent):
        """A graph component that adds its name to what it is given (and to the calls log)."""

        calls: ClassVar[list] = []

        def __init__(self, name: str) -> None:
            self.name = name

        @classmethod
        def create(cls, config, model_storage, resource, execution_context) -> "Step":
            return cls(config["name"])

        def run(self, **given: object) -> str:
            Step.calls.append(self.name)
            if self.name == "broken":
                raise RuntimeError("a component failed")
            return "+".join([*(str(given[k]) for k in sorted(given)), self.name])

    return Step


def _runner(tmp_path: Path, step: type) -> object:
    from rasa.engine.graph import ExecutionContext
    from rasa.engine.runner.dask import DaskGraphRunner
    from rasa.engine.storage.local_model_storage import LocalModelStorage

    def node(name: str, needs: dict, target: bool = False) -> SchemaNode:
        return SchemaNode(
            needs=needs,
            uses=step,
            constructor_name="create",
            fn="run",
            config={"name": name},
            is_target=target,
        )

    schema = GraphSchema(
        {
            "tokens": node("tokens", {"message": "__message__"}),
            "counts": node("counts", {"tokens": "tokens"}),
            "vectors": node("vectors", {"tokens": "tokens"}),
            "intent": node("intent", {"a": "counts", "b": "vectors", "c": "tokens"}, target=True),
            "unused": node("unused", {"message": "__message__"}),
            "orphan": node("orphan", {"missing": "__tracker__"}, target=True),
            "broken": node("broken", {"message": "__message__"}),
        }
    )
    return DaskGraphRunner(schema, LocalModelStorage(tmp_path), ExecutionContext(schema, "test"))


def test_plain_graph_runs_are_dasks(tmp_path: Path) -> None:
    """The same outputs from the same nodes, each once and after what it needs, and the same
    errors: a failing node, a missing input, an input named like a node."""
    step = _step_class()
    runner = _runner(tmp_path, step)

    def outcome(run: object, inputs: dict, targets: list) -> tuple:
        step.calls = []
        try:
            result = run(runner, inputs=inputs, targets=targets)
        except Exception as error:
            return type(error).__name__, str(error), sorted(step.calls)
        return "ok", result, sorted(step.calls)

    message = {"__message__": "刷卡"}
    cases = [
        (message, ["intent"]),
        (message, ["counts", "intent"]),
        (message, ["intent"]),
        (message, ["orphan"]),
        (message, ["broken"]),
        ({"__message__": "tokens"}, ["intent"]),
    ]
    for inputs, targets in cases:
        assert outcome(dialogue._graph_run, inputs, targets) == outcome(
            dialogue._original_graph_run, inputs, targets
        ), targets
    assert outcome(dialogue._graph_run, message, ["intent"])[1] == {
        "intent": "刷卡+tokens+counts+刷卡+tokens+vectors+刷卡+tokens+intent"
    }
    step.calls = []
    dialogue._graph_run(runner, inputs=message, targets=["intent"])
    assert step.calls.index("tokens") < step.calls.index("counts") < step.calls.index("intent")
    assert step.calls.index("vectors") < step.calls.index("intent") and "unused" not in step.calls
