"""Retrain and publish (训练发布): every refusal, then the job with fake commands.

The trainer and the guard are replaced by small Python commands (``FakeCommands``, given to
``Trainer`` — nothing of Rasa is patched): the fake training writes a model file holding the
accuracy the test chose, the fake guard reads it back. The project is a temporary folder with
the training inputs the Makefile knows, and the Rasa servers are small local HTTP servers that
record each model load (bot/channels/model_load.py's route) and answer ``GET /status``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs, urlparse

import pytest
from sanic import Sanic
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from bot.channels.model_load import LOAD_PATH
from bot.channels.publish import Publish
from bot.channels.staff import COOKIE, StaffConsole
from bot.training import Commands, Trainer, fingerprint, identity, record_of
from records.store import RecordStore
from staff.accounts import StaffStore

PASSWORD = "correct horse battery"
HOST = "127.0.0.1:5005"
TOKEN = "test-rasa-token-" + uuid.uuid4().hex
STATE, TRAIN, RETRY = "/staff/api/model", "/staff/api/model/train", "/staff/api/model/retry"
SERVING_BYTES = b"accuracy=0.90"

TRAIN_SCRIPT = """
import pathlib, sys, time
model, accuracy, gate, code = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print("fake rasa train", model, flush=True)
while gate and not pathlib.Path(gate).exists():
    time.sleep(0.05)
if code:
    print("ERROR: training data is broken", flush=True)
    sys.exit(code)
pathlib.Path(model).write_text("accuracy=" + accuracy)
print("Your Rasa model is trained and saved at", model, flush=True)
"""
GUARD_SCRIPT = """
import json, pathlib, sys
accuracy = float(pathlib.Path(sys.argv[1]).read_text().split("=")[1])
print("loading", sys.argv[1], file=sys.stderr)
print(json.dumps({"accuracy": accuracy, "correct": round(accuracy * 200), "examples": 200}))
"""


class FakeCommands(Commands):
    """Training writes ``accuracy=<accuracy>`` (after ``gate`` exists, if given); the guard
    reports that accuracy on 200 examples; ``exit_code`` makes the training fail."""

    def __init__(
        self, root: Path, accuracy: str = "0.95", gate: Optional[Path] = None, exit_code: int = 0
    ) -> None:
        super().__init__(root)
        self.accuracy, self.gate, self.exit_code = accuracy, gate, exit_code
        self.evaluated: list[str] = []

    def prepare(self) -> list[list[str]]:
        return [[sys.executable, "-c", "import pathlib; pathlib.Path('var/prepared').touch()"]]

    def train(self, model: Path) -> list[str]:
        return [
            sys.executable,
            "-c",
            TRAIN_SCRIPT,
            str(model),
            self.accuracy,
            str(self.gate or ""),
            str(self.exit_code),
        ]

    def evaluate(self, model: Path) -> list[str]:
        self.evaluated.append(model.name)
        return [sys.executable, "-c", GUARD_SCRIPT, str(model)]


class FakeRasa:
    """A Rasa server as the publish sees it: the model load route (bot/channels/model_load.py),
    which records what it was sent and answers ``status`` after ``load_s`` seconds, and
    ``GET /status`` naming the file it serves."""

    def __init__(self, status: int = 200, load_s: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status, self.load_s = status, load_s
        self.serving = "posbot.tar.gz"
        self.keeps_old = False  # answers the load but keeps serving the old file
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self, code: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call = {
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "body": json.loads(body or b"null"),
                    "at": time.monotonic(),
                }
                fake.calls.append(call)
                time.sleep(fake.load_s)
                call["done"] = time.monotonic()
                if fake.status != 200:
                    self.reply(fake.status, {"status": "failure", "message": "LoadingError"})
                    return
                loaded = Path(call["body"]["model_file"]).name
                if not fake.keeps_old:
                    fake.serving = loaded
                self.reply(200, {"model_file": loaded, "model_id": "id-" + loaded})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.calls.append({"path": url.path, "query": parse_qs(url.query), "at": time.monotonic()})
                if url.path != "/status" or parse_qs(url.query).get("token") != [TOKEN]:
                    self.reply(401, {"status": "failure"})
                    return
                self.reply(200, {"model_file": fake.serving, "model_id": "id-" + fake.serving})

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def loads(self) -> list[dict[str, Any]]:
        """The load requests, as sent."""
        return [{k: c[k] for k in ("path", "query", "body")} for c in self.calls if c["path"] == LOAD_PATH]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_project(root: Path) -> Path:
    """The training inputs the Makefile knows, and a serving model trained before them."""
    files = {
        "bot/config.yml": "pipeline: []\n",
        "bot/domain/intents.yml": "intents: [greet]\n",
        "data/nlu/greet.yml": "nlu: []\n",
        "data/rules/rules.yml": "rules: []\n",
        "kb/content/learned.yml": "learned: []\n",
        "bot/nlu/component.py": "X = 1\n",
        "tests/nlu/holdout/set1.yml": "nlu: []\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    serving = root / "models" / "posbot.tar.gz"
    serving.parent.mkdir()
    serving.write_bytes(SERVING_BYTES)
    past = time.time() - 3600
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past - 60, past - 60))
    os.utime(serving, (past, past))  # trained after its inputs: nothing to train yet
    return serving


class Console:
    def __init__(
        self,
        tmp_path: Path,
        engine: Engine,
        commands: Optional[FakeCommands] = None,
        urls: Optional[list[str]] = None,
    ) -> None:
        self.root = tmp_path / "project"
        self.serving = make_project(self.root)
        self.commands = commands or FakeCommands(self.root)
        self.trainer = Trainer(self.root, commands=self.commands)
        self.publish = Publish(self.trainer, token=lambda: TOKEN, urls=lambda: list(urls or []))
        self.staff = StaffStore(engine)
        channel = StaffConsole(self.staff, RecordStore(engine), publish=self.publish)
        self.app = Sanic(f"publish_test_{uuid.uuid4().hex[:12]}")
        self.app.blueprint(channel.blueprint(lambda _: None), url_prefix="/staff")
        for name, role in (("agent1", "agent"), ("editor1", "editor"), ("boss", "admin")):
            self.staff.add_user(name, role, PASSWORD)

    def request(self, method: str, path: str, *, cookie: str = "", csrf: str = "", origin: str = "") -> Any:
        headers = {"Host": HOST}
        if cookie:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        if csrf:
            headers["X-CSRF-Token"] = csrf
        if origin:
            headers["Origin"] = origin
        kwargs: dict[str, Any] = {"headers": headers, "timeout": 60}
        if method == "POST":
            kwargs["json"] = {}
        _, response = getattr(self.app.test_client, method.lower())(path, **kwargs)
        return response

    def login(self, name: str) -> tuple[str, str]:
        _, response = self.app.test_client.post(
            "/staff/api/login", headers={"Host": HOST}, json={"name": name, "password": PASSWORD}
        )
        assert response.status == 200, response.text
        return SimpleCookie(response.headers["set-cookie"])[COOKIE].value, response.json["csrf"]

    def teach(self) -> None:
        """What the learning queue does: a new phrasing in learned.yml (a training input)."""
        (self.root / "kb/content/learned.yml").write_text(
            "learned:\n- text: 收款码贴纸掉了怎么补\n  answer: apply_process\n", encoding="utf-8"
        )

    def finish(self) -> dict[str, Any]:
        self.trainer.wait(60)
        return self.trainer.state()

    def trained_files(self) -> list[str]:
        return sorted(p.name for p in (self.root / "models").glob("posbot-*.tar.gz"))

    def actions(self) -> list[str]:
        return [e.action for e in reversed(self.staff.audit_entries())]


@pytest.fixture()
def engine() -> Iterator[Engine]:
    """Staff accounts and the audit log only: no KB needed here."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    yield engine
    engine.dispose()


@pytest.fixture()
def rasa() -> Iterator[list[FakeRasa]]:
    servers = [FakeRasa(load_s=0.2), FakeRasa(load_s=0.2)]
    yield servers
    for server in servers:
        server.close()


@pytest.fixture()
def console(tmp_path: Path, engine: Engine, rasa: list[FakeRasa]) -> Console:
    return Console(tmp_path, engine, urls=[s.url for s in rasa])


# ------------------------------------------------------------------ refusals
def test_every_route_refuses_without_a_session(console: Console) -> None:
    assert console.request("GET", STATE).status == 401
    assert console.request("POST", TRAIN).status == 401
    assert console.request("POST", TRAIN, cookie="forged", csrf="x").status == 401
    assert not (console.root / "var" / "model-train.json").exists()


def test_agents_see_nothing_and_editors_may_watch_but_not_train(console: Console) -> None:
    console.teach()
    cookie, csrf = console.login("agent1")
    assert console.request("GET", STATE, cookie=cookie).status == 403
    assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 403
    cookie, csrf = console.login("editor1")
    state = console.request("GET", STATE, cookie=cookie)
    assert state.status == 200
    assert state.json["state"] == "idle" and state.json["can_train"] is False
    assert state.json["pending"] == ["kb/content/learned.yml"]
    refused = console.request("POST", TRAIN, cookie=cookie, csrf=csrf)
    assert refused.status == 403 and refused.json["error"] == "您的账号没有这个权限"
    assert console.trained_files() == [] and console.serving.read_bytes() == SERVING_BYTES
    assert "model_train" not in console.actions()


def test_starting_a_training_needs_the_csrf_token_and_a_same_site_origin(
    console: Console, rasa: list[FakeRasa]
) -> None:
    console.teach()
    cookie, csrf = console.login("boss")
    assert console.request("POST", TRAIN, cookie=cookie).status == 403
    assert console.request("POST", TRAIN, cookie=cookie, csrf="wrong").status == 403
    response = console.request("POST", TRAIN, cookie=cookie, csrf=csrf, origin="https://evil.example")
    assert response.status == 403 and "其他网站" in response.json["error"]
    assert console.request("GET", STATE, cookie=cookie).json["state"] == "idle"
    assert console.trained_files() == [] and rasa[0].loads() == []
    assert console.actions() == ["login"]


# ------------------------------------------------------------------ nothing to do
def test_nothing_to_train_when_the_inputs_are_those_of_the_serving_model(console: Console) -> None:
    cookie, csrf = console.login("boss")
    state = console.request("GET", STATE, cookie=cookie).json
    assert state["pending"] == [] and state["pending_count"] == 0 and state["can_train"] is True
    response = console.request("POST", TRAIN, cookie=cookie, csrf=csrf)
    assert response.status == 200 and response.json["started"] is False
    assert "没有变化" in response.json["message"]
    assert console.trained_files() == [] and console.commands.evaluated == []
    assert "model_train" not in console.actions()


# ------------------------------------------------------------------ the job
def test_a_better_model_is_published_to_every_server_with_the_token(
    console: Console, rasa: list[FakeRasa]
) -> None:
    console.teach()
    cookie, csrf = console.login("boss")
    before = time.time()
    response = console.request("POST", TRAIN, cookie=cookie, csrf=csrf)
    assert response.status == 202, response.text
    assert response.json["started"] is True and response.json["changed"] == ["kb/content/learned.yml"]
    model = response.json["model"]
    state = console.finish()
    assert state["state"] == "published", state
    assert state["guard"] == {
        "new": {"accuracy": 0.95, "correct": 190, "examples": 200},
        "serving": {"accuracy": 0.9, "correct": 180, "examples": 200},
    }
    trained = console.root / "models" / model
    for server in rasa:  # every instance was asked to load the new file, with the token
        assert server.loads() == [
            {"path": LOAD_PATH, "query": {"token": [TOKEN]}, "body": {"model_file": str(trained.resolve())}}
        ]
    assert [(i["state"], i["ok"], i["model_file"]) for i in state["instances"]] == [
        ("loaded", True, model),
        ("loaded", True, model),
    ]
    # one at a time: the second was asked only after the first confirmed the new model
    first_status = next(c for c in rasa[0].calls if c["path"] == "/status")
    second_load = next(c for c in rasa[1].calls if c["path"] == LOAD_PATH)
    assert rasa[0].calls[0]["done"] <= first_status["at"] <= second_load["at"]
    # the new file is what `make run` serves next; dated when training started (as make does)
    assert console.serving.read_bytes() == b"accuracy=0.95"
    assert os.path.samefile(console.serving, trained)
    assert before - 1 <= console.serving.stat().st_mtime <= time.time()
    record = json.loads(record_of(console.serving).read_text())
    assert record["model"] == identity(console.serving)
    assert record["files"] == fingerprint(console.root)
    assert (console.root / "var" / "prepared").exists()  # posbot kb dict / nlu ran first
    body = console.request("GET", STATE, cookie=cookie).json
    assert body["state"] == "published" and "已发布" in body["message"]
    assert body["pending"] == [] and body["by"] == "boss"
    assert any("fake rasa train" in line for line in body["log"])
    assert (
        TOKEN not in json.dumps(body) and TOKEN not in (console.root / "var" / "model-train.json").read_text()
    )
    assert console.actions() == ["login", "model_train", "model_published"]
    # and now there is nothing left to train
    again = console.request("POST", TRAIN, cookie=cookie, csrf=csrf)
    assert again.status == 200 and again.json["started"] is False


def test_the_guard_refuses_a_worse_model_and_the_serving_model_stays(
    tmp_path: Path, engine: Engine, rasa: list[FakeRasa]
) -> None:
    console = Console(tmp_path, engine, urls=[s.url for s in rasa])
    console.commands.accuracy = "0.85"
    console.teach()
    serving_mtime = console.serving.stat().st_mtime_ns
    cookie, csrf = console.login("boss")
    assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
    state = console.finish()
    assert state["state"] == "refused"
    assert state["guard"]["new"]["accuracy"] == 0.85 and state["guard"]["serving"]["accuracy"] == 0.9
    assert "0.850" in state["message"] and "0.900" in state["message"]
    assert [s.loads() for s in rasa] == [[], []]  # nothing was sent to the bots
    assert console.serving.read_bytes() == SERVING_BYTES
    assert console.serving.stat().st_mtime_ns == serving_mtime
    assert console.trained_files() == []  # the refused model is deleted
    body = console.request("GET", STATE, cookie=cookie).json
    assert body["state"] == "refused" and body["pending"] == ["kb/content/learned.yml"]
    assert console.actions()[-1] == "model_refused"


def test_a_second_training_is_a_409_while_one_runs(
    tmp_path: Path, engine: Engine, rasa: list[FakeRasa]
) -> None:
    gate = tmp_path / "go"
    console = Console(tmp_path, engine, urls=[rasa[0].url])
    console.commands.gate = gate
    console.teach()
    cookie, csrf = console.login("boss")
    assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
    second = console.request("POST", TRAIN, cookie=cookie, csrf=csrf)
    assert second.status == 409 and "已经有一个训练在进行" in second.json["error"]
    watching = console.request("GET", STATE, cookie=cookie).json
    assert watching["state"] == "training" and watching["started"]
    gate.touch()
    assert console.finish()["state"] == "published"
    assert console.actions().count("model_train") == 1
    assert len(rasa[0].loads()) == 1


def test_a_training_held_by_another_process_is_a_409(console: Console) -> None:
    console.teach()
    lock = console.root / "var" / "model-train.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time\n"
                "f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                "print('locked', flush=True); time.sleep(60)"
            ),
            str(lock),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        cookie, csrf = console.login("boss")
        assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 409
    finally:
        holder.terminate()
        holder.wait(10)
    assert console.trained_files() == []


def test_a_failed_training_publishes_nothing_and_shows_the_log(
    tmp_path: Path, engine: Engine, rasa: list[FakeRasa]
) -> None:
    console = Console(tmp_path, engine, urls=[rasa[0].url])
    console.commands.exit_code = 1
    console.teach()
    cookie, csrf = console.login("boss")
    assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
    state = console.finish()
    assert state["state"] == "failed" and "退出码 1" in state["message"]
    body = console.request("GET", STATE, cookie=cookie).json
    assert "ERROR: training data is broken" in body["log"]
    assert rasa[0].loads() == [] and console.serving.read_bytes() == SERVING_BYTES
    assert console.commands.evaluated == [] and console.trained_files() == []


def test_a_server_that_fails_stops_the_roll_out_and_a_retry_finishes_it(
    tmp_path: Path, engine: Engine, rasa: list[FakeRasa]
) -> None:
    broken = FakeRasa(status=500)
    try:
        console = Console(tmp_path, engine, urls=[rasa[0].url, broken.url, rasa[1].url])
        console.teach()
        cookie, csrf = console.login("boss")
        assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
        state = console.finish()
        model = state["model"]
        assert state["state"] == "partial" and broken.url in state["message"]
        assert [(i["url"], i["state"]) for i in state["instances"]] == [
            (rasa[0].url, "loaded"),
            (broken.url, "failed"),
            (rasa[1].url, "skipped"),
        ]
        assert "HTTP 500" in state["instances"][1]["error"]
        assert rasa[1].loads() == []  # not asked after the failure
        # one server serves it: it is what the next start serves
        assert console.serving.read_bytes() == b"accuracy=0.95"
        # the console shows the mixed cluster, server by server, and offers a retry
        body = console.request("GET", STATE, cookie=cookie).json
        assert body["state"] == "partial" and body["can_retry"] is True and body["mixed"] is True
        assert [(s["url"], s["model_file"]) for s in body["servers"]] == [
            (rasa[0].url, model),
            (broken.url, "posbot.tar.gz"),
            (rasa[1].url, "posbot.tar.gz"),
        ]
        # the broken server is fixed: retry publishes to the two that miss it, not the first
        broken.status = 200
        retried = console.request("POST", RETRY, cookie=cookie, csrf=csrf)
        assert retried.status == 202, retried.text
        state = console.finish()
        assert state["state"] == "published", state
        assert [len(s.loads()) for s in (rasa[0], broken, rasa[1])] == [1, 2, 1]
        body = console.request("GET", STATE, cookie=cookie).json
        assert body["mixed"] is False and body["can_retry"] is False
        assert {s["model_file"] for s in body["servers"]} == {model}
        again = console.request("POST", RETRY, cookie=cookie, csrf=csrf)
        assert again.status == 409 and "没有需要重试" in again.json["error"]
        assert console.actions()[-3:] == ["model_partial", "model_retry", "model_published"]
    finally:
        broken.close()


def test_when_the_first_server_fails_nothing_changes_and_retry_is_possible(
    tmp_path: Path, engine: Engine, rasa: list[FakeRasa]
) -> None:
    broken = FakeRasa(status=500)
    try:
        console = Console(tmp_path, engine, urls=[broken.url, rasa[0].url])
        console.teach()
        cookie, csrf = console.login("boss")
        assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
        state = console.finish()
        assert state["state"] == "failed" and "所有机器人实例仍在用原来的模型" in state["message"]
        assert [i["state"] for i in state["instances"]] == ["failed", "skipped"]
        assert rasa[0].loads() == [] and console.serving.read_bytes() == SERVING_BYTES
        assert console.trained_files() == [state["model"]]  # kept for the retry
        editor_cookie, editor_csrf = console.login("editor1")
        assert console.request("POST", RETRY, cookie=editor_cookie, csrf=editor_csrf).status == 403
        assert console.request("POST", RETRY, cookie=cookie).status == 403  # no CSRF token
        broken.status = 200
        assert console.request("POST", RETRY, cookie=cookie, csrf=csrf).status == 202
        assert console.finish()["state"] == "published"
        assert console.serving.read_bytes() == b"accuracy=0.95"
        assert console.request("GET", STATE, cookie=cookie).json["pending"] == []
    finally:
        broken.close()


def test_a_server_that_answers_but_does_not_serve_the_file_is_a_failure(
    tmp_path: Path, engine: Engine
) -> None:
    """The load said yes, but ``GET /status`` still names the old file: not published there."""
    liar = FakeRasa()
    liar.keeps_old = True
    try:
        console = Console(tmp_path, engine, urls=[liar.url])
        console.teach()
        cookie, csrf = console.login("boss")
        assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
        state = console.finish()
    finally:
        liar.close()
    assert state["state"] == "failed"
    assert state["instances"][0]["error"] == "加载后 /status 仍是 posbot.tar.gz"


def test_retry_refuses_without_a_session_and_when_nothing_was_published(console: Console) -> None:
    assert console.request("POST", RETRY).status == 401
    cookie, csrf = console.login("boss")
    assert console.request("POST", RETRY, cookie=cookie).status == 403  # no CSRF token
    assert console.request("POST", RETRY, cookie=cookie, csrf="wrong").status == 403
    refused = console.request("POST", RETRY, cookie=cookie, csrf=csrf)
    assert refused.status == 409 and "没有需要重试" in refused.json["error"]


def test_after_a_crash_the_job_is_reported_interrupted_and_a_new_one_can_start(
    console: Console, rasa: list[FakeRasa]
) -> None:
    console.teach()
    model = "posbot-20261130-101010.tar.gz"
    partial = console.root / "models" / model
    partial.write_bytes(b"half")
    # the orphaned training the crashed server left behind (its command line names the model)
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(partial)], start_new_session=True
    )
    state_file = console.root / "var" / "model-train.json"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(
        json.dumps(
            {
                "state": "training",
                "by": "boss",
                "started": time.time() - 120,
                "model": model,
                "changed": ["kb/content/learned.yml"],
                "urls": [rasa[0].url],
                "pid": orphan.pid,
                "host": socket.gethostname(),
                "guard": None,
                "instances": [],
            }
        )
    )
    try:
        cookie, csrf = console.login("boss")
        body = console.request("GET", STATE, cookie=cookie).json
        assert body["state"] == "failed" and "没有完成" in body["message"]
        assert orphan.wait(10) is not None  # stopped
        assert not partial.exists()
        assert json.loads(state_file.read_text())["state"] == "failed"
        assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
        assert console.finish()["state"] == "published"
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_the_lock_is_free_again_after_each_job(console: Console) -> None:
    console.teach()
    cookie, csrf = console.login("boss")
    assert console.request("POST", TRAIN, cookie=cookie, csrf=csrf).status == 202
    console.finish()
    with open(console.root / "var" / "model-train.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held


def test_the_page_has_the_model_view(console: Console) -> None:
    _, page = console.app.test_client.get("/staff/", headers={"Host": HOST})
    for hook in ("model-tab", "model-train", "model-state"):
        assert f'data-testid="{hook}"' in page.text
    _, script = console.app.test_client.get("/staff/model.js", headers={"Host": HOST})
    assert script.status == 200 and 'register("model"' in script.text
    assert 'api("POST", "model/train"' in script.text
    assert 'api("POST", "model/retry"' in script.text and "model-retry" in script.text
