"""The model load route (bot/channels/model_load.py): refusals, failures, and the swap.

A Sanic app with the route and a ``/ping`` standing in for a merchant channel (it answers with
the model of ``app.ctx.agent``, as channels read the agent per message). The load itself is
given (``build``): a worker-thread function that takes its time, so the test sees whether the
event loop keeps answering meanwhile. ``build_agent``, the real one, is checked against Rasa's
own classes with the archive reading replaced (the live test loads a real model:
tests/integration/test_publish_live.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import sanic_testing  # noqa: F401  (imported now, not inside the timed load window)
from sanic import Blueprint, Sanic, response

from bot.channels.model_load import LOAD_PATH, LOAD_ROUTE, ModelLoader, build_agent
from bot.training import LOAD_PATH as TRAINER_LOAD_PATH

TOKEN = "test-rasa-token-" + uuid.uuid4().hex


class FakeAgent:
    def __init__(self, name: str, tracker_store: Any = None) -> None:
        self.processor = SimpleNamespace(model_filename=name)
        self.model_id = "id-" + name
        self.domain = SimpleNamespace(name=name)
        self.tracker_store = tracker_store or SimpleNamespace(domain=self.domain)

    def is_ready(self) -> bool:
        return True


class Harness:
    def __init__(self, load_s: float = 0.0, fails: Optional[str] = None) -> None:
        self.built: list[str] = []
        self.load_s, self.fails = load_s, fails
        self.loader = ModelLoader(token=lambda: TOKEN, build=self.build)
        self.app = Sanic(f"model_load_{uuid.uuid4().hex[:12]}")
        bp = Blueprint("staff_test")
        self.loader.register(bp)
        self.app.blueprint(bp, url_prefix="/staff")
        self.old = FakeAgent("posbot.tar.gz")
        self.app.ctx.agent = self.old

        @self.app.get("/ping")
        async def ping(request: Any) -> Any:
            return response.json({"model": request.app.ctx.agent.processor.model_filename})

    def build(self, old: Any, model: Path) -> Any:
        assert threading.current_thread() is not threading.main_thread()  # off the loop
        self.built.append(model.name)
        self.window = [time.monotonic()]
        time.sleep(self.load_s)
        self.window.append(time.monotonic())
        if self.fails:
            raise OSError(self.fails)
        return FakeAgent(model.name, tracker_store=old.tracker_store)

    async def load(self, model_file: Any, token: Optional[str] = TOKEN) -> Any:
        params = {"token": token} if token is not None else {}
        _, reply = await self.app.asgi_client.put(LOAD_PATH, params=params, json={"model_file": model_file})
        return reply


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "posbot-20261130-120000.tar.gz"
    path.write_bytes(b"a model")
    return path


def test_the_trainer_calls_the_route_where_it_is() -> None:
    assert LOAD_PATH == "/staff" + LOAD_ROUTE == TRAINER_LOAD_PATH


@pytest.mark.asyncio
@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789", TOKEN[:-1]])
async def test_without_the_token_nothing_is_loaded(model: Path, token: Optional[str]) -> None:
    h = Harness()
    reply = await h.load(str(model), token=token)
    assert reply.status == 401 and reply.json["reason"] == "NotAuthenticated"
    assert h.built == [] and h.app.ctx.agent is h.old


@pytest.mark.asyncio
async def test_a_server_without_a_token_refuses(model: Path) -> None:
    h = Harness()

    def no_token() -> str:
        raise OSError("var/rasa-token: no such file")

    h.loader.token = no_token
    reply = await h.load(str(model), token="")
    assert reply.status == 503 and h.built == [] and h.app.ctx.agent is h.old


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [None, "", 42, "/nonexistent/posbot.tar.gz"])
async def test_no_model_file_is_a_400_and_the_old_model_serves(body: Any) -> None:
    h = Harness()
    reply = await h.load(body)
    assert reply.status == 400 and reply.json["status"] == "failure"
    assert h.built == [] and h.app.ctx.agent is h.old


@pytest.mark.asyncio
async def test_a_model_server_or_remote_storage_is_refused(model: Path) -> None:
    h = Harness()
    _, reply = await h.app.asgi_client.put(
        LOAD_PATH,
        params={"token": TOKEN},
        json={"model_file": str(model), "model_server": {"url": "http://elsewhere/model"}},
    )
    assert reply.status == 400 and h.built == [] and h.app.ctx.agent is h.old


@pytest.mark.asyncio
async def test_a_broken_model_is_a_500_and_the_old_model_keeps_serving(model: Path) -> None:
    h = Harness(fails="not a gzip file")
    reply = await h.load(str(model))
    assert reply.status == 500 and reply.json["reason"] == "LoadingError"
    assert "not a gzip file" in reply.json["message"]
    assert h.app.ctx.agent is h.old
    _, ping = await h.app.asgi_client.get("/ping")
    assert ping.json == {"model": "posbot.tar.gz"}


@pytest.mark.asyncio
async def test_merchants_are_answered_during_the_load_then_by_the_new_model(model: Path) -> None:
    h = Harness(load_s=4.0)
    answered: list[tuple[float, str]] = []

    loaded = asyncio.Event()

    async def merchant() -> None:  # keeps asking until half a second after the load answered
        while not loaded.is_set() or time.monotonic() - h.answered_at < 0.5:
            _, ping = await h.app.asgi_client.get("/ping")
            answered.append((time.monotonic(), ping.json["model"]))
            await asyncio.sleep(0.05)

    async def publisher() -> Any:
        reply = await h.load(str(model))
        h.answered_at = time.monotonic()
        loaded.set()
        return reply

    load, _ = await asyncio.wait_for(asyncio.gather(publisher(), merchant()), timeout=60)
    assert load.status == 200, load.text
    assert load.json["model_file"] == model.name and load.json["model_id"] == "id-" + model.name
    assert load.json["previous"] == {"model_file": "posbot.tar.gz", "model_id": "id-posbot.tar.gz"}
    began, built = h.window
    during = [m for t, m in answered if began < t < built]
    assert len(during) >= 4 and set(during) == {"posbot.tar.gz"}
    times = [began] + [t for t, _ in answered if began < t < built] + [built]
    # A loop blocked by the load would show one gap of the whole 4 s; on a busy 2-core machine
    # single pings may take a while, so the bound is half the load.
    assert max(b - a for a, b in pairwise(times)) < 2.0
    after = [m for t, m in answered if t > h.answered_at]
    assert after and set(after) == {model.name}
    new = h.app.ctx.agent
    assert new is not h.old and new.tracker_store is h.old.tracker_store
    assert new.tracker_store.domain is new.domain  # the store was given the new domain


@pytest.mark.asyncio
async def test_a_second_load_while_one_runs_is_a_409(model: Path) -> None:
    h = Harness(load_s=1.0)
    first = asyncio.ensure_future(h.load(str(model)))
    await asyncio.sleep(0.3)
    second = await h.load(str(model))
    assert second.status == 409 and "Another model" in second.json["message"]
    assert (await first).status == 200 and h.built == [model.name]


def test_build_agent_keeps_the_old_agents_stores_and_endpoints(model: Path, monkeypatch) -> None:
    """The real ``build_agent`` with Rasa's Agent and MessageProcessor; only the reading of the
    archive is replaced (a real model: the live test)."""
    from rasa.core.agent import Agent
    from rasa.core.lock_store import InMemoryLockStore
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.core.processor import MessageProcessor
    from rasa.core.tracker_store import InMemoryTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.utils.endpoints import EndpointConfig

    old_domain = Domain.from_dict({"responses": {"utter_old": [{"text": "旧"}]}})
    new_domain = Domain.from_dict({"responses": {"utter_new": [{"text": "新"}]}})
    metadata = SimpleNamespace(domain=new_domain, assistant_id="posbot", model_id="new-id")
    monkeypatch.setattr(
        MessageProcessor, "_load_model", staticmethod(lambda path: (Path(path).name, metadata, None))
    )
    action = EndpointConfig("http://127.0.0.1:5055/webhook")
    old = Agent(
        domain=old_domain,
        tracker_store=InMemoryTrackerStore(old_domain),
        lock_store=InMemoryLockStore(),
        action_endpoint=action,
        model_server=EndpointConfig("http://models/latest"),
        remote_storage="aws",
    )
    new = build_agent(old, model)
    assert new.is_ready() and new.model_id == "new-id" and new.domain is new_domain
    assert new.processor.model_filename == model.name
    assert new.lock_store is old.lock_store and new.tracker_store is old.tracker_store
    assert new.processor.lock_store is old.lock_store
    assert new.processor.tracker_store is old.tracker_store
    assert new.action_endpoint is action and new.processor.action_endpoint is action
    assert new.model_server is old.model_server and new.remote_storage == "aws"
    # its own response templates; the old agent's stay as they were until the swap
    assert isinstance(new.nlg, TemplatedNaturalLanguageGenerator) and new.nlg is not old.nlg
    assert set(new.nlg.responses) == {"utter_new"} and set(old.nlg.responses) == {"utter_old"}
    assert new.processor.nlg is new.nlg
    assert old.tracker_store.domain is old_domain  # changed only at the swap, on the loop
