"""Shared fixtures: a KB database per test, and a running bot for the integration tests.

The running bot is the real thing: `rasa run` with models/posbot.tar.gz (built by `make train`,
which `make test` runs first), the real action server, a KB and tracker store in a temporary
folder, and the WeChat channel configured with the test credentials.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from kb.build import build
from kb.content import Content, load_content
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "posbot.tar.gz"
BIN = Path(sys.executable).parent
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
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
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


def _domain_responses() -> dict[str, list[dict]]:
    import yaml

    responses: dict[str, list[dict]] = {}
    for path in sorted((ROOT / "bot" / "domain").glob("*.yml")):
        responses.update((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("responses", {}))
    return responses


@pytest.fixture(scope="session")
def domain() -> dict:
    return {"responses": _domain_responses()}


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveBot:
    url: str
    actions_url: str
    database_url: str
    tmp: Path

    def send(self, sender: str, message: str, timeout: float = 30) -> list[dict]:
        response = requests.post(f"{self.url}/webhooks/rest/webhook",
                                 json={"sender": sender, "message": message}, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def texts(self, sender: str, message: str) -> str:
        return "\n".join(m.get("text", "") for m in self.send(sender, message))


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early, see {log}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout} s; see {log}")


@pytest.fixture(scope="session")
def live_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBot]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make train` (make test does it for you)")
    tmp = tmp_path_factory.mktemp("live_bot")
    rasa_port, actions_port = free_port(), free_port()
    database_url = f"sqlite:///{tmp / 'posbot.sqlite3'}"
    env = {**os.environ, **WECHAT_ENV, "POSBOT_DATABASE_URL": database_url,
           "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([str(BIN / "posbot"), "kb", "build"], env=env, check=True, cwd=ROOT,
                   capture_output=True)
    endpoints = tmp / "endpoints.yml"
    endpoints.write_text(
        f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n'
        f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'tracker.sqlite3'}\n",
        encoding="utf-8")
    logs = {name: tmp / f"{name}.log" for name in ("actions", "rasa")}
    procs = [
        subprocess.Popen(
            [str(BIN / "rasa"), "run", "actions", "--actions", "actions", "--port", str(actions_port)],
            cwd=ROOT, env=env, stdout=logs["actions"].open("w"), stderr=subprocess.STDOUT),
        subprocess.Popen(
            [str(BIN / "rasa"), "run", "--model", str(MODEL), "--endpoints", str(endpoints),
             "--credentials", str(ROOT / "bot" / "credentials.yml"), "--enable-api",
             "--port", str(rasa_port)],
            cwd=ROOT, env=env, stdout=logs["rasa"].open("w"), stderr=subprocess.STDOUT),
    ]
    try:
        _wait(f"http://127.0.0.1:{actions_port}/health", procs[0], logs["actions"])
        _wait(f"http://127.0.0.1:{rasa_port}/status", procs[1], logs["rasa"])
        subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "warmup.py"),
                        f"http://127.0.0.1:{rasa_port}"], check=True, cwd=ROOT, timeout=240)
        yield LiveBot(f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{actions_port}",
                      database_url, tmp)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
