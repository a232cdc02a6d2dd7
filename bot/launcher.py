"""Start a complete posbot (action server + Rasa server) as child processes, and stop it.

One launcher for everything: ``make run`` (``python -m bot.launcher``, via scripts/run.sh), the
integration tests and ``make bench`` all start the same commands with the same credentials and
the same Rasa API token (bot/api_token.py). Tests and bench use a temporary KB and tracker
store and free ports; ``make run`` uses ``var/`` and ports 5005/5055.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from bot.api_token import rasa_token
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
    #: The Rasa HTTP API secret the server was started with (``?token=`` on API calls).
    token: str = field(default="", repr=False)
    processes: list[subprocess.Popen] = field(default_factory=list)
    ready_after_s: float = 0.0

    def send(self, sender: str, message: str, timeout: float = 30) -> list[dict]:
        response = requests.post(f"{self.url}/webhooks/rest/webhook",
                                 json={"sender": sender, "message": message}, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def api(self, method: str, path: str, *, json: object = None,
            params: dict[str, str] | None = None, timeout: float = 30) -> requests.Response:
        """Call the Rasa HTTP API with the token, as staff tools do."""
        return requests.request(method, f"{self.url}{path}", json=json, timeout=timeout,
                                params={**(params or {}), "token": self.token})

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


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float,
          params: dict[str, str] | None = None) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early, see {log}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, params=params, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout} s; see {log}")


def start_bot(tmp: Path, *, model: Path = DEFAULT_MODEL, env: dict[str, str] | None = None,
              endpoints: Path | None = None, timeout: float = 240,
              rasa_port: int | None = None, actions_port: int | None = None,
              credentials: Path | None = None, stream_logs: bool = False,
              share_actions_of: RunningBot | None = None,
              interface: str | None = None) -> RunningBot:
    """Build the KB, start both servers (on free ports unless given), warm them up.

    By default everything lives in ``tmp`` (SQLite KB and trackers). With ``endpoints`` (e.g.
    bot/endpoints.production.yml) Rasa reads its stores from that file and the environment;
    ``POSBOT_ACTION_URL`` is set to the action server started here. ``stream_logs`` sends the
    servers' output to this terminal instead of files in ``tmp``.

    ``share_actions_of`` (several Rasa servers, as in production): start only a Rasa server,
    using that bot's action server and KB; its ``processes`` are this Rasa server alone.
    ``interface``: the address the Rasa server listens on (Rasa's default: all of them);
    ``make cluster`` keeps its servers on 127.0.0.1 behind the balancer (bot/cluster.py).
    """
    started = time.monotonic()
    tmp.mkdir(parents=True, exist_ok=True)
    rasa_port = rasa_port or free_port()
    if share_actions_of is not None:
        actions_port = int(share_actions_of.actions_url.rsplit(":", 1)[1])
    actions_port = actions_port or free_port()
    credentials = credentials or PROJECT_ROOT / "bot" / "credentials.yml"
    database_url = ((env or {}).get("POSBOT_DATABASE_URL")
                    or (share_actions_of.database_url if share_actions_of else None)
                    or f"sqlite:///{tmp / 'posbot.sqlite3'}")
    full_env = {**os.environ, **(env or {}), "POSBOT_DATABASE_URL": database_url,
                "POSBOT_ACTION_URL": f"http://127.0.0.1:{actions_port}/webhook",
                "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if share_actions_of is None:
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
    token = rasa_token(full_env)
    bot = RunningBot(f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{actions_port}",
                     database_url, tmp, token=token)
    def output(name: str) -> Any:
        return None if stream_logs else logs[name].open("w")

    if share_actions_of is None:
        bot.processes.append(subprocess.Popen(
            [str(BIN / "rasa"), "run", "actions", "--actions", "actions", "--port", str(actions_port)],
            cwd=PROJECT_ROOT, env={**full_env, "POSBOT_WARM_ACTIONS": "1"},
            stdout=output("actions"), stderr=subprocess.STDOUT))
    bot.processes.append(subprocess.Popen(
        [str(BIN / "python"), "-m", "bot.serve", "run", "--model", str(model),
         "--endpoints", str(endpoints),
         "--credentials", str(credentials), "--enable-api",
         "--port", str(rasa_port), *(["--interface", interface] if interface else [])],
        cwd=PROJECT_ROOT, env={**SERVING_TF_THREADS, **full_env}, stdout=output("rasa"),
        stderr=subprocess.STDOUT))
    try:
        if share_actions_of is None:
            _wait(f"{bot.actions_url}/health", bot.processes[0], logs["actions"], timeout)
        _wait(f"{bot.url}/status", bot.processes[-1], logs["rasa"], timeout, {"token": token})
        subprocess.run([str(BIN / "python"), str(PROJECT_ROOT / "scripts" / "warmup.py"), bot.url],
                       check=True, cwd=PROJECT_ROOT, timeout=timeout, capture_output=True,
                       env=full_env)
    except BaseException:
        bot.stop()
        raise
    bot.ready_after_s = time.monotonic() - started
    return bot


def main(argv: list[str] | None = None) -> int:
    """``make run``: both servers on fixed ports with the state in ``var/``, until Ctrl-C.

    If either server dies, the other is stopped too and the exit status says so.
    """
    parser = argparse.ArgumentParser(prog="python -m bot.launcher", description=main.__doc__)
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("MODEL", DEFAULT_MODEL)))
    parser.add_argument("--endpoints", type=Path, default=None,
                        help="Rasa endpoints file; default: embedded SQLite trackers in var/")
    parser.add_argument("--credentials", type=Path,
                        default=Path(os.environ.get("CREDENTIALS", "bot/credentials.yml")))
    parser.add_argument("--rasa-port", type=int, default=int(os.environ.get("RASA_PORT", 5005)))
    parser.add_argument("--actions-port", type=int,
                        default=int(os.environ.get("ACTIONS_PORT", 5055)))
    args = parser.parse_args(argv)
    endpoints = args.endpoints or (Path(os.environ["ENDPOINTS"]) if os.environ.get("ENDPOINTS")
                                   and os.environ["ENDPOINTS"] != "bot/endpoints.yml" else None)
    state = PROJECT_ROOT / "var"
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        bot = start_bot(state, model=args.model, endpoints=endpoints, rasa_port=args.rasa_port,
                        actions_port=args.actions_port, credentials=args.credentials,
                        stream_logs=True, timeout=600)
    except KeyboardInterrupt:
        return 130
    port = args.rasa_port
    print(f"posbot is ready: REST http://localhost:{port}/webhooks/rest/webhook · widget "
          f"http://localhost:{port}/webhooks/web/ · WeChat /webhooks/wechat/webhook · "
          f"API token in {'POSBOT_RASA_TOKEN' if os.environ.get('POSBOT_RASA_TOKEN') else 'var/rasa-token'}",
          flush=True)
    try:
        while all(proc.poll() is None for proc in bot.processes):
            time.sleep(0.5)
        dead = [proc.args[1:3] for proc in bot.processes if proc.poll() is not None]
        print(f"posbot stopped: a server exited ({dead})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        bot.stop()


if __name__ == "__main__":
    sys.exit(main())
