"""Retrain and publish (issue 16): train a new model in the background, guard it, load it.

What one job does, started from the staff console (bot/channels/publish.py):

1. **only when the training inputs changed** since the serving model ``models/posbot.tar.gz``:
   the Makefile's inputs (bot/config.yml, bot/domain, data, kb/content — topics' questions and
   learned.yml phrasings become NLU examples through ``posbot kb nlu`` — and bot/nlu). A model
   published here carries a record of its inputs' SHA-256 (``posbot.tar.gz.inputs.json``);
   for a model ``make train`` made, make's own rule applies: an input newer than the model;
2. **train** into a new file, ``models/posbot-YYYYmmdd-HHMMSS.tar.gz``, never over the serving
   model: ``posbot kb dict var/jieba``, ``posbot kb nlu var/nlu`` and ``rasa train``, as
   ``make train`` runs them, at low CPU priority, the output in ``var/model-train.log``;
3. **the NLU guard**: intent accuracy of the new and of the serving model on the held-out sets
   (tests/nlu/holdout/, never trained on; tests/nlu/merchants/ is never used here), each in
   its own process; a new model scoring lower is refused and deleted;
4. **publish**, one Rasa server after the other (``POSBOT_RASA_URLS``, default this one):
   ``PUT {rasa}/staff/api/model/load?token=…`` with ``{"model_file": …}``
   (bot/channels/model_load.py: the server loads the model in a worker thread and keeps answering
   with the old one, then swaps), and the next server only once ``GET {rasa}/status`` reports
   the new file. The first server that serves it makes the new file ``models/posbot.tar.gz``
   (hard link and atomic rename, dated when training started, as the Makefile does) for the
   next start. A server that fails stops the roll-out: the servers after it keep the old model,
   the state says which server has which (``partial``), and ``retry`` publishes the same file
   again to the servers that do not serve it (docs/deploy.md).

One job at a time on a machine: an exclusive ``flock`` on ``var/model-train.lock``, held by the
thread that runs the job. The kernel drops it when the process dies, so a crash never blocks the
next training; the state file ``var/model-train.json`` then still says "training", and the next
look at it reports the job as interrupted (and stops its orphaned ``rasa train``).

How to train and how to score a model are commands (``Commands``): the tests give fake ones.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import requests

from bot.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

IDLE, TRAINING, GUARD, PUBLISHING = "idle", "training", "guard", "publishing"
PUBLISHED, REFUSED, FAILED = "published", "refused", "failed"
#: Some servers serve the new model, others do not (a server failed to load it): retry.
PARTIAL = "partial"
RUNNING = (TRAINING, GUARD, PUBLISHING)
#: One server in a publish: not yet asked, loading, serving the new model, failed, not asked
#: because an earlier server failed.
WAITING, LOADING, LOADED, LOAD_FAILED, SKIPPED = "waiting", "loading", "loaded", "failed", "skipped"
SERVING_NAME = "posbot.tar.gz"
#: The files of the models this module trains (other files in models/ are never touched).
TRAINED = re.compile(r"^posbot-\d{8}-\d{6}\.tar\.gz$")
#: Trained files kept besides the serving one (older ones are deleted after a publish).
KEEP = 3
LOG_TAIL = 40
#: The server loads the model before it answers the load: that takes a while on a busy machine.
PUT_TIMEOUT_S = 600
#: bot/channels/model_load.py's route, on each Rasa server.
LOAD_PATH = "/staff/api/model/load"
HOLDOUT = Path("tests") / "nlu" / "holdout"
#: The Makefile's TRAINING_INPUTS: (folder or file, pattern) relative to the project root.
INPUTS = (
    ("bot/config.yml", ""),
    ("bot/domain", "*.yml"),
    ("data", "*.yml"),
    ("kb/content", "*.yml"),
    ("bot/nlu", "*.py"),
)
#: As the Makefile exports them for `rasa train`.
TRAIN_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
    "RASA_TELEMETRY_ENABLED": "false",
}


class Busy(RuntimeError):
    """Another training is running (this process or another one on the machine)."""


class NothingToTrain(RuntimeError):
    """The training inputs are those of the serving model."""


class NothingToRetry(RuntimeError):
    """The latest job is not a publish that some server missed (or its model file is gone)."""


# ---------------------------------------------------------------------- inputs
def input_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for where, pattern in INPUTS:
        path = root / where
        if not pattern:
            if path.is_file():
                files.add(path)
        elif path.is_dir():
            files.update(p for p in path.rglob(pattern) if p.is_file())
    return sorted(files)


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of every training input, by path relative to ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in input_files(root)}


def identity(path: Path) -> str:
    """Which file version a record describes: size and modification time."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def record_of(model: Path) -> Path:
    return model.with_name(model.name + ".inputs.json")


def changed_inputs(root: Path, serving: Path) -> list[str]:
    """The inputs that differ from those the serving model was trained on (every input when
    there is no serving model)."""
    files = fingerprint(root)
    if not serving.is_file():
        return sorted(files)
    record = _read_json(record_of(serving))
    if record.get("model") == identity(serving) and isinstance(record.get("files"), dict):
        old = record["files"]
        return sorted(k for k in set(files) | set(old) if files.get(k) != old.get(k))
    # a model from `make train`: make's rule, an input modified after training started
    made = serving.stat().st_mtime
    return sorted(rel for rel in files if (root / rel).stat().st_mtime > made)


# ---------------------------------------------------------------------- commands
@dataclass
class Commands:
    """The commands of a job, run in the project root; the tests give fake ones."""

    root: Path = PROJECT_ROOT
    holdout: Path = HOLDOUT

    def prepare(self) -> list[list[str]]:
        """What training reads besides the repository: the jieba dictionary and the KB's
        questions as NLU examples (the Makefile's var/jieba and var/nlu targets)."""
        posbot = str(Path(sys.executable).parent / "posbot")
        return [[posbot, "kb", "dict", "var/jieba"], [posbot, "kb", "nlu", "var/nlu"]]

    def train(self, model: Path) -> list[str]:
        rasa = str(Path(sys.executable).parent / "rasa")
        name = model.name[: -len(".tar.gz")]
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        return [
            *nice,
            rasa,
            "train",
            "--config",
            "bot/config.yml",
            "--domain",
            "bot/domain",
            "--data",
            "data",
            "var/nlu",
            "--out",
            str(model.parent),
            "--fixed-model-name",
            name,
        ]

    def evaluate(self, model: Path) -> list[str]:
        """A command whose last line of output is ``{"accuracy", "correct", "examples"}``."""
        return [sys.executable, "-m", "bot.training", "evaluate", str(model), "--holdout", str(self.holdout)]


def evaluate_model(model: Path, holdout: Path) -> dict[str, Any]:
    """Intent accuracy of ``model`` on every set in ``holdout``: the top intent (a clarification,
    ``nlu_fallback``, is a miss), as tests/integration/test_nlu_quality.py counts it."""
    from rasa.core.agent import load_agent
    from rasa.shared.nlu.training_data.loading import load_data

    examples = [(m.get("text"), m.get("intent")) for m in load_data(str(holdout)).intent_examples]
    if not examples:
        raise SystemExit(f"no held-out examples in {holdout}")

    async def score() -> int:
        agent = await load_agent(model_path=str(model))
        right = 0
        for text, intent in examples:
            parsed = await agent.parse_message(text)
            right += (parsed.get("intent") or {}).get("name") == intent
        return right

    correct = asyncio.run(score())
    return {"accuracy": correct / len(examples), "correct": correct, "examples": len(examples)}


# ---------------------------------------------------------------------- the job
@dataclass
class Paths:
    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def serving(self) -> Path:
        return self.models / SERVING_NAME

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def state(self) -> Path:
        return self.var / "model-train.json"

    @property
    def lock(self) -> Path:
        return self.var / "model-train.lock"

    @property
    def log(self) -> Path:
        return self.var / "model-train.log"

    @property
    def guard_cache(self) -> Path:
        return self.var / "model-guard.json"


class Trainer:
    """Starts jobs, runs them in a thread, and says where they are."""

    def __init__(
        self,
        root: Path = PROJECT_ROOT,
        commands: Optional[Commands] = None,
        put: Optional[Callable[[str, str, Path], dict[str, Any]]] = None,
        on_finish: Optional[Callable[[dict[str, Any]], None]] = None,
    ) -> None:
        self.paths = Paths(root)
        self.commands = commands or Commands(root)
        self.put = put or put_model
        self.on_finish = on_finish
        self._thread: Optional[threading.Thread] = None
        self._child: Optional[subprocess.Popen] = None
        atexit.register(self._stop_child)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The latest job as the state file has it; a job whose process is gone is reported
        as interrupted (and written so)."""
        fd = self._try_lock()
        if fd is None:  # a job is running
            return self._read_state()
        try:
            return self._recover()
        finally:
            os.close(fd)

    def changed(self) -> list[str]:
        return changed_inputs(self.paths.root, self.paths.serving)

    def log_tail(self, lines: int = LOG_TAIL) -> list[str]:
        try:
            with self.paths.log.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 16000))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return []
        # progress bars redraw one line with \r: show what they last said
        return [line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:]]

    def start(
        self,
        by: str,
        urls: list[str],
        token: str,
        announce: Optional[Callable[[dict[str, Any]], None]] = None,
    ) -> dict[str, Any]:
        """Start a job (returns its first state); ``Busy`` when one runs, ``NothingToTrain``
        when the inputs are those of the serving model. ``announce`` (the audit log) is called
        with the first state before the job runs."""
        fd = self._try_lock()
        if fd is None:
            raise Busy()
        try:
            self._recover()
            changed = self.changed()
            if not changed:
                raise NothingToTrain()
            started = time.time()
            model = self.paths.models / time.strftime("posbot-%Y%m%d-%H%M%S.tar.gz", time.localtime(started))
            state = {
                "state": TRAINING,
                "by": by,
                "started": started,
                "model": model.name,
                "changed": changed,
                "urls": urls,
                "host": socket.gethostname(),
                "pid": None,
                "guard": None,
                "instances": [],
                "message": "正在训练新模型",
            }
            self._write_state(state)
            if announce is not None:
                announce(dict(state))
        except BaseException:
            os.close(fd)
            raise
        thread = threading.Thread(
            target=self._run, args=(fd, state, model, token), name="posbot-model-train", daemon=True
        )
        self._thread = thread
        thread.start()
        return state

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ running
    def _run(self, fd: int, state: dict[str, Any], model: Path, token: str, retry: bool = False) -> None:
        try:
            if retry:
                self._publish(state, model, token)
            else:
                self._job(state, model, token)
        except Exception as error:  # the job's own failure, never the server's
            logger.exception("model training job failed")
            if any(i.get("ok") for i in state.get("instances") or []) or retry:
                state.update(
                    state=PARTIAL if any(i.get("ok") for i in state["instances"]) else FAILED,
                    message=f"发布中出错：{type(error).__name__}: {error}；可以重试发布",
                )
            else:
                state.update(state=FAILED, message=f"出错了，没有发布：{type(error).__name__}: {error}")
                _remove(model)
                _remove(record_of(model))
        finally:
            state["finished"] = time.time()
            state["pid"] = None
            self._write_state(state)
            os.close(fd)  # releases the lock
            if self.on_finish is not None:
                try:
                    self.on_finish(dict(state))
                except Exception:
                    logger.exception("could not record the end of the training job")

    def _job(self, state: dict[str, Any], model: Path, token: str) -> None:
        paths = self.paths
        paths.models.mkdir(parents=True, exist_ok=True)
        inputs = fingerprint(paths.root)
        with paths.log.open("w", encoding="utf-8") as log:
            for command in self.commands.prepare():
                if self._call(command, log, state) != 0:
                    state.update(
                        state=FAILED, message="准备训练数据失败（posbot kb），没有训练，" "详情见日志"
                    )
                    return
            dated = time.time()  # the model is dated when training starts, as `make train`
            code = self._call(self.commands.train(model), log, state)
            if code != 0 or not model.is_file():
                state.update(state=FAILED, message=f"训练失败（退出码 {code}），没有发布，详情见日志")
                _remove(model)
                return
            os.utime(model, (dated, dated))
            state.update(state=GUARD, message="训练完成，正在用留出测试集比较新旧模型")
            self._write_state(state)
            new = self._score(model, log, state, cache=False)
            old = self._score(paths.serving, log, state, cache=True) if paths.serving.is_file() else None
        state["guard"] = {"new": new, "serving": old}
        if new is None or (paths.serving.is_file() and old is None):
            state.update(state=FAILED, message="没能给模型打分，没有发布，详情见日志")
            _remove(model)
            return
        if old is not None and new["correct"] < old["correct"]:
            state.update(
                state=REFUSED,
                message=(
                    f"新模型在留出测试集上的意图准确率 {new['accuracy']:.3f} 低于正在使用的模型 "
                    f"{old['accuracy']:.3f}，没有发布；正在使用的模型保持不变"
                ),
            )
            _remove(model)
            return
        # what retry needs to finish the job later: the inputs this file was trained on
        _write_json(record_of(model), {"model": identity(model), "trained": model.name, "files": inputs})
        self._publish(state, model, token)

    def _publish(self, state: dict[str, Any], model: Path, token: str) -> None:
        """Load ``model`` on each server of ``state["urls"]``, one after the other; stop at the
        first that fails. On a retry, a server that loaded it in the previous attempt keeps it
        (and one restarted since then started with it: it is the serving file by then)."""
        done = {i["url"]: i for i in state.get("instances") or [] if i.get("ok")}
        state.update(state=PUBLISHING, message="新模型通过检查，正在逐台加载到机器人（加载时照常回复商户）")
        instances = [
            done.get(url) or {"url": url, "state": WAITING, "ok": False, "error": None}
            for url in state["urls"]
        ]
        state["instances"] = instances
        self._write_state(state)
        for i, instance in enumerate(instances):
            if instance["ok"]:
                continue
            instance.update(state=LOADING, since=time.time())
            self._write_state(state)
            result = self.put(instance["url"], token, model.resolve())
            instance.update(result, state=LOADED if result.get("ok") else LOAD_FAILED)
            if instance["ok"] and not state.get("serving_set"):
                # the first server serves it: the next start anywhere serves it too
                record = _read_json(record_of(model))
                self._make_serving(model, record.get("files") or fingerprint(self.paths.root))
                state["serving_set"] = True
            if not instance["ok"]:
                for later in instances[i + 1 :]:
                    later["state"] = SKIPPED
                self._write_state(state)
                break
            self._write_state(state)
        loaded = [i["url"] for i in instances if i["ok"]]
        failed = [i for i in instances if i["state"] == LOAD_FAILED]
        if not failed:
            _remove(record_of(model))
            state.update(
                state=PUBLISHED,
                message=(
                    f"已发布：{len(instances)} 个机器人实例逐台加载了新模型"
                    "（加载期间照常回复），下次启动也用它"
                ),
            )
        elif not loaded:
            state.update(
                state=FAILED,
                message=(
                    f"{failed[0]['url']} 没有加载新模型（{failed[0].get('error') or '?'}），已停止发布："
                    "所有机器人实例仍在用原来的模型，models/posbot.tar.gz 没有变；可以重试发布"
                ),
            )
        else:
            waiting = [i["url"] for i in instances if not i["ok"]]
            state.update(
                state=PARTIAL,
                message=(
                    f"只发布了一部分：{'、'.join(loaded)} 已在用新模型，{'、'.join(waiting)} 还在用原来的模型"
                    f"（{failed[0]['url']}：{failed[0].get('error') or '?'}）。新模型已是下次启动使用的模型；"
                    "请重试发布，或重启这些实例"
                ),
            )

    def retry(self, by: str, urls: list[str], token: str) -> dict[str, Any]:
        """Publish the latest job's model again (state ``partial``, or ``failed`` while
        publishing) to ``urls``; ``Busy`` when a job runs, ``NothingToRetry`` otherwise."""
        fd = self._try_lock()
        if fd is None:
            raise Busy()
        try:
            state = self._recover()
            model = self.paths.models / str(state.get("model") or "-")
            if not (
                state.get("state") in (PARTIAL, FAILED)
                and state.get("instances")
                and TRAINED.match(model.name)
                and model.is_file()
            ):
                raise NothingToRetry()
            state.update(
                by=by, urls=urls, retried=time.time(), finished=None, pid=None, host=socket.gethostname()
            )
            self._write_state(state)
        except BaseException:
            os.close(fd)
            raise
        thread = threading.Thread(
            target=self._run, args=(fd, state, model, token, True), name="posbot-model-publish", daemon=True
        )
        self._thread = thread
        thread.start()
        return state

    def _call(self, command: list[str], log: Any, state: dict[str, Any]) -> int:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        return self._spawn(command, log, subprocess.STDOUT, state)

    def _spawn(self, command: list[str], stdout: Any, stderr: Any, state: dict[str, Any]) -> int:
        """Run one command of the job in its own process group (so an orphan can be stopped
        as a whole), its pid in the state file."""
        child = subprocess.Popen(
            command,
            cwd=self.paths.root,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **TRAIN_ENV},
            start_new_session=True,
        )
        self._child = child
        state["pid"] = child.pid
        self._write_state(state)
        try:
            return child.wait()
        finally:
            self._child = None
            state["pid"] = None

    def _score(self, model: Path, log: Any, state: dict[str, Any], cache: bool) -> Optional[dict[str, Any]]:
        """The guard's figures for ``model``; the serving model's are kept per file version and
        held-out sets, so they are computed once."""
        key = ""
        if cache:
            holdout = self.paths.root / self.commands.holdout
            sets = sorted(holdout.rglob("*.yml")) if holdout.is_dir() else []
            digest = hashlib.sha256(b"".join(p.read_bytes() for p in sets)).hexdigest()
            key = f"{model.name}:{identity(model)}:{digest}"
            known = _read_json(self.paths.guard_cache).get(key)
            if isinstance(known, dict):
                return known
        out = self.paths.var / "model-guard.out"
        with out.open("w", encoding="utf-8") as stdout:
            log.write(f"# guard: {model.name}\n")
            log.flush()
            command = self.commands.evaluate(model)
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            code = self._spawn(command, stdout, log, state)
        lines = out.read_text(encoding="utf-8").strip().splitlines()
        _remove(out)
        try:
            if code != 0 or not lines:
                raise ValueError("the guard printed no figures")
            printed = json.loads(lines[-1])
            figures = {
                "accuracy": float(printed["accuracy"]),
                "correct": int(printed["correct"]),
                "examples": int(printed["examples"]),
            }
        except (ValueError, KeyError, TypeError):
            log.write(f"guard: no figures for {model.name} (exit code {code})\n")
            return None
        if cache:  # only the serving model's latest figures are worth keeping
            _write_json(self.paths.guard_cache, {key: figures})
        return figures

    def _make_serving(self, model: Path, inputs: dict[str, str]) -> None:
        """The new file becomes models/posbot.tar.gz (what `make run` serves), atomically; the
        record of its inputs goes with it. Older trained files beyond ``KEEP`` are deleted."""
        serving = self.paths.serving
        link = serving.with_name(f".{serving.name}.{os.getpid()}.new")
        _remove(link)
        try:
            os.link(model, link)
        except OSError:  # a file system without hard links
            shutil.copy2(model, link)
        os.replace(link, serving)
        _write_json(record_of(serving), {"model": identity(serving), "trained": model.name, "files": inputs})
        trained = sorted(p for p in self.paths.models.iterdir() if TRAINED.match(p.name))
        for old in trained[:-KEEP]:
            _remove(old)
            _remove(record_of(old))

    def _stop_child(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            _kill_group(child.pid)

    # ------------------------------------------------------------------ lock and state
    def _try_lock(self) -> Optional[int]:
        self.paths.var.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _recover(self) -> dict[str, Any]:
        """With the lock held: a state that says running belongs to a process that is gone."""
        state = self._read_state()
        if state.get("state") not in RUNNING:
            return state
        pid = state.get("pid")
        model = str(state.get("model") or "")
        if (
            isinstance(pid, int)
            and state.get("host") == socket.gethostname()
            and model
            and _command_line_has(pid, model)
        ):
            _kill_group(pid)  # the orphaned `rasa train` of the interrupted job
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.get("started") or 0))
        if state.get("state") == PUBLISHING:
            # some servers may have loaded it: keep the file, say what is known
            loaded = any(i.get("ok") for i in state.get("instances") or [])
            for instance in state.get("instances") or []:
                if instance.get("state") == LOADING:
                    instance.update(state=LOAD_FAILED, error="发布中断，不知道是否加载完")
            state.update(
                state=PARTIAL if loaded else FAILED,
                pid=None,
                message=(
                    f"{when} 开始的发布中断了（服务重启或进程被终止）：有的机器人实例可能已加载新模型 "
                    f"{model}，请重试发布"
                ),
            )
        else:
            if model and TRAINED.match(model):
                _remove(self.paths.models / model)
            state.update(
                state=FAILED,
                pid=None,
                message=(f"{when} 开始的训练没有完成（服务重启或进程被终止），没有发布；可以重新开始训练"),
            )
        self._write_state(state)
        return state

    def _read_state(self) -> dict[str, Any]:
        state = _read_json(self.paths.state)
        return state if state.get("state") else {"state": IDLE}

    def _write_state(self, state: dict[str, Any]) -> None:
        _write_json(self.paths.state, state)


def put_model(url: str, token: str, model: Path) -> dict[str, Any]:
    """Ask one Rasa server to load ``model`` off its event loop (bot/channels/model_load.py),
    then check with ``GET /status`` that it serves that file. ``{"ok": True, "model_file",
    "model_id", "seconds"}``, or ``{"ok": False, "error": what went wrong}``."""
    base, params = url.rstrip("/"), {"token": token}
    started = time.monotonic()
    try:
        reply = requests.put(
            base + LOAD_PATH, params=params, json={"model_file": str(model)}, timeout=PUT_TIMEOUT_S
        )
    except requests.RequestException as error:
        return {"ok": False, "error": f"连不上：{type(error).__name__}"}
    if reply.status_code != 200:
        try:
            detail = str(reply.json().get("message") or "")[:200]
        except ValueError:
            detail = reply.text[:200]
        return {"ok": False, "error": f"HTTP {reply.status_code} {detail}".strip()}
    try:
        status = requests.get(base + "/status", params=params, timeout=30)
        serving = status.json() if status.ok else {}
    except (requests.RequestException, ValueError) as error:
        return {"ok": False, "error": f"加载后读不到 /status：{type(error).__name__}"}
    if serving.get("model_file") != model.name:
        return {"ok": False, "error": f"加载后 /status 仍是 {serving.get('model_file') or '?'}"}
    return {
        "ok": True,
        "error": None,
        "model_file": serving.get("model_file"),
        "model_id": serving.get("model_id"),
        "seconds": round(time.monotonic() - started, 1),
    }


def _command_line_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.training")
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate = sub.add_parser("evaluate", help="intent accuracy of a model on the held-out sets")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("--holdout", type=Path, default=PROJECT_ROOT / HOLDOUT)
    args = parser.parse_args(argv)
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    # one line per parsed message otherwise (Rasa's debug log), and the figures are the last line
    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    figures = evaluate_model(args.model, args.holdout)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
