"""Shared fixtures: a KB database per test, and a running bot for the integration tests.

The running bot is the real thing: `rasa run` with models/posbot.tar.gz (built by `make train`,
which `make test` runs first), the real action server, a KB and tracker store in a temporary
folder, and the WeChat channel configured with the test credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from kb.build import build
from kb.loader import Content, load_content
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore
from ops.launcher import DEFAULT_MODEL, RunningBot, start_bot

ROOT = Path(__file__).resolve().parent.parent
WECHAT_ENV = {
    "WECHAT_TOKEN": "posbot-test-token",
    "WECHAT_APP_ID": "wx49f0ab532d5d035a",
    "WECHAT_AES_KEY": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
}


@pytest.fixture(scope="session")
def content() -> Content:
    loaded = load_content(CONTENT_DIR)
    assert loaded.ok, "\n".join(map(str, loaded.problems))
    return loaded


@pytest.fixture()
def engine(content: Content) -> Iterator[Engine]:
    """An in-memory SQLite database with the real KB content loaded."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    build(engine, content)
    yield engine
    engine.dispose()


@pytest.fixture()
def store(engine: Engine) -> KnowledgeStore:
    return KnowledgeStore(engine)


@pytest.fixture()
def action_store(store: KnowledgeStore, monkeypatch: pytest.MonkeyPatch) -> KnowledgeStore:
    """The action server's store, pointed at the in-memory KB of this test."""
    import actions.store

    monkeypatch.setattr(actions.store, "knowledge_store", lambda: store)
    return store


@pytest.fixture(scope="session")
def domain() -> dict:
    """bot/domain/*.yml merged the way Rasa merges them (what the action server receives)."""
    import yaml

    merged: dict = {"responses": {}, "slots": {}, "forms": {}, "actions": []}
    for path in sorted((ROOT / "bot" / "domain").glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for key in ("responses", "slots", "forms"):
            merged[key].update(doc.get(key) or {})
        merged["actions"] += doc.get("actions") or []
    return merged


def render(domain: dict, messages: list[dict]) -> list[str]:
    """What the merchant reads: each dispatched message with its response template filled in."""
    from rasa.core.nlg.interpolator import interpolate_text

    texts = []
    for message in messages:
        if message.get("response"):
            template = domain["responses"][message["response"]][0]["text"]
            values = {k: v for k, v in message.items() if k not in ("response", "buttons")}
            values.update(message.get("kwargs") or {})
            texts.append(interpolate_text(template, {k: str(v) for k, v in values.items()}))
        elif message.get("text"):
            texts.append(message["text"])
    return texts


def load_tracker(name: str, **latest: object):
    """A tracker snapshot from tests/data/NAME.json, optionally with a different latest message."""
    import json

    from rasa_sdk import Tracker

    state = json.loads((ROOT / "tests" / "data" / f"{name}.json").read_text(encoding="utf-8"))
    state["latest_message"].update(latest)
    return Tracker.from_dict(state)


@pytest.fixture(scope="session")
def live_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    if not DEFAULT_MODEL.exists():
        pytest.fail(f"{DEFAULT_MODEL} is missing: run `make train` (make test does it for you)")
    bot = start_bot(tmp_path_factory.mktemp("live_bot"), env=WECHAT_ENV)
    try:
        yield bot
    finally:
        bot.stop()
