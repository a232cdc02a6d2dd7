"""Start a complete posbot (action server + Rasa server) as child processes, and stop it.

Used by the integration tests and by `make bench`, so both measure exactly what `make run`
starts: the same commands, the same credentials, a temporary KB and tracker store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from bot.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
DEFAULT_MODEL = PROJECT_ROOT / "models" / "posbot.tar.gz"
# The Rasa server's TensorFlow settings in scripts/run.sh (make run): one thread per op. Only for
# the Rasa server: Rasa's CLI imports TensorFlow to apply them, which the action server must not.
SERVING_TF_THREADS = {"TF_INTER_OP_PARALLELISM_THREADS": "1",
                      "TF_INTRA_OP_PARALLELISM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningBot:
    """A started bot: its URLs, its temporary folder and its processes."""

    url: str
    actions_url: str
    database_url: str
    tmp: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    ready_after_s: float = 0.0

    def send(self, sender: str, message: str, timeout: float = 30) -> list[dict]:
        response = requests.post(f"{self.url}/webhooks/rest/webhook",
                                 json={"sender": sender, "message": message}, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def texts(self, sender: str, message: str) -> str:
        return "\n".join(m.get("text", "") for m in self.send(sender, message))

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early, see {log}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout} s; see {log}")


def start_bot(tmp: Path, *, model: Path = DEFAULT_MODEL, env: dict[str, str] | None = None,
              endpoints: Path | None = None, timeout: float = 240) -> RunningBot:
    """Build the KB, start both servers on free ports, warm them up.

    By default everything lives in ``tmp`` (SQLite KB and trackers). With ``endpoints`` (e.g.
    bot/endpoints.production.yml) Rasa reads its stores from that file and the environment;
    ``POSBOT_ACTION_URL`` is set to the action server started here.
    """
    started = time.monotonic()
    tmp.mkdir(parents=True, exist_ok=True)
    rasa_port, actions_port = free_port(), free_port()
    database_url = (env or {}).get("POSBOT_DATABASE_URL") or f"sqlite:///{tmp / 'posbot.sqlite3'}"
    full_env = {**os.environ, **(env or {}), "POSBOT_DATABASE_URL": database_url,
                "POSBOT_ACTION_URL": f"http://127.0.0.1:{actions_port}/webhook",
                "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([str(BIN / "posbot"), "kb", "build"], env=full_env, check=True,
                   cwd=PROJECT_ROOT, capture_output=True)
    if endpoints is None:
        # make run's own endpoints file, pointed at this action server and a temporary tracker DB.
        config = yaml.safe_load((PROJECT_ROOT / "bot" / "endpoints.yml").read_text("utf-8"))
        config["action_endpoint"]["url"] = f"http://127.0.0.1:{actions_port}/webhook"
        config["tracker_store"]["db"] = str(tmp / "tracker.sqlite3")
        endpoints = tmp / "endpoints.yml"
        endpoints.write_text(yaml.safe_dump(config), encoding="utf-8")
    logs = {name: tmp / f"{name}.log" for name in ("actions", "rasa")}
    bot = RunningBot(f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{actions_port}",
                     database_url, tmp)
    bot.processes = [
        subprocess.Popen(
            [str(BIN / "rasa"), "run", "actions", "--actions", "actions", "--port", str(actions_port)],
            cwd=PROJECT_ROOT, env=full_env, stdout=logs["actions"].open("w"),
            stderr=subprocess.STDOUT),
        subprocess.Popen(
            [str(BIN / "rasa"), "run", "--model", str(model), "--endpoints", str(endpoints),
             "--credentials", str(PROJECT_ROOT / "bot" / "credentials.yml"), "--enable-api",
             "--port", str(rasa_port)],
            cwd=PROJECT_ROOT, env={**SERVING_TF_THREADS, **full_env}, stdout=logs["rasa"].open("w"),
            stderr=subprocess.STDOUT),
    ]
    try:
        _wait(f"{bot.actions_url}/health", bot.processes[0], logs["actions"], timeout)
        _wait(f"{bot.url}/status", bot.processes[1], logs["rasa"], timeout)
        subprocess.run([str(BIN / "python"), str(PROJECT_ROOT / "scripts" / "warmup.py"), bot.url],
                       check=True, cwd=PROJECT_ROOT, timeout=timeout, capture_output=True)
    except BaseException:
        bot.stop()
        raise
    bot.ready_after_s = time.monotonic() - started
    return bot
