"""Start a complete posbot (action server + Rasa server) as child processes, and stop it.

The one launcher: ``make run`` (``python -m ops.launcher run``), ``make shell``
(``python -m ops.launcher shell``), ``make cluster`` (ops/cluster.py), the integration tests
(tests/conftest.py) and ``make bench`` (scripts/bench.py) all start the same commands
(:func:`plan`) with the same credentials, TensorFlow settings and Rasa API token
(bot/api_token.py). Tests and bench use a temporary KB and tracker store and free ports;
``make run`` and ``make shell`` use ``var/`` and ports 5005/5055 (``RASA_PORT``, ``ACTIONS_PORT``;
``MODEL``, ``ENDPOINTS``, ``CREDENTIALS`` name the files).

The Rasa server always starts through bot/serve.py (``python -m bot.serve run``): it validates
the settings, installs the speed-ups and adds the API token inside the process, so the token is
never in ``ps``. No ``--cors``: the API answers no browser on another site; the widget's
socket.io checks ``POSBOT_CORS_ORIGINS`` itself (bot/channels/web.py). The action server starts
through actions/serve.py (``python -m actions.serve``): it validates the KB side's settings
(kb/settings.py) and builds the retrieval indexes before its ``/health`` answers.
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
from typing import IO, Any, Mapping

import requests
import yaml

from bot.api_token import rasa_token
from bot.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
DEFAULT_MODEL = PROJECT_ROOT / "models" / "posbot.tar.gz"
DEFAULT_ENDPOINTS = PROJECT_ROOT / "bot" / "endpoints.yml"
DEFAULT_CREDENTIALS = PROJECT_ROOT / "bot" / "credentials.yml"
# The Rasa server's TensorFlow settings: one thread per op. DIET's ops are tiny, and with 2 cores
# more threads only hand work back and forth (make bench: 28 → 32 msg/s). Only for the Rasa
# server: Rasa's CLI imports TensorFlow to apply them, which would cost the action server 350 MB.
# A value in the environment wins.
SERVING_TF_THREADS = {"TF_INTER_OP_PARALLELISM_THREADS": "1", "TF_INTRA_OP_PARALLELISM_THREADS": "1"}


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
        response = requests.post(
            f"{self.url}/webhooks/rest/webhook", json={"sender": sender, "message": message}, timeout=timeout
        )
        response.raise_for_status()
        return response.json()

    def api(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        """Call the Rasa HTTP API with the token, as staff tools do."""
        return requests.request(
            method,
            f"{self.url}{path}",
            json=json,
            timeout=timeout,
            params={**(params or {}), "token": self.token},
        )

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


@dataclass
class LaunchPlan:
    """What the launcher starts, before anything runs: both command lines and environments.

    ``actions`` is None when the bot shares another bot's action server. ``env`` is the
    environment of the KB build and the warm-up; the servers get ``actions_env``/``rasa_env``.
    """

    rasa_port: int
    actions_port: int
    database_url: str
    endpoints: Path
    env: dict[str, str]
    actions: list[str] | None
    actions_env: dict[str, str]
    rasa: list[str]
    rasa_env: dict[str, str]


def plan(
    tmp: Path,
    *,
    model: Path = DEFAULT_MODEL,
    env: dict[str, str] | None = None,
    endpoints: Path | None = None,
    rasa_port: int | None = None,
    actions_port: int | None = None,
    credentials: Path | None = None,
    share_actions_of: RunningBot | None = None,
    interface: str | None = None,
    shell: bool = False,
) -> LaunchPlan:
    """The commands of a bot living in ``tmp`` (see :func:`start_bot` for the arguments).

    Without ``endpoints``, writes ``tmp/endpoints.yml``: bot/endpoints.yml pointed at this
    action server and a tracker database in ``tmp``. ``shell``: the Rasa server talks to this
    terminal (Rasa's interactive shell, ``rasa shell``, is ``rasa run --connector cmdline``)
    instead of serving the channels of ``credentials``; everything else is the same.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    rasa_port = rasa_port or free_port()
    if share_actions_of is not None:
        actions_port = int(share_actions_of.actions_url.rsplit(":", 1)[1])
    actions_port = actions_port or free_port()
    credentials = credentials or DEFAULT_CREDENTIALS
    database_url = (
        (env or {}).get("POSBOT_DATABASE_URL")
        or (share_actions_of.database_url if share_actions_of else None)
        or f"sqlite:///{tmp / 'posbot.sqlite3'}"
    )
    full_env = {
        **os.environ,
        **(env or {}),
        "POSBOT_DATABASE_URL": database_url,
        "POSBOT_ACTION_URL": f"http://127.0.0.1:{actions_port}/webhook",
        "RASA_TELEMETRY_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if endpoints is None:
        # make run's own endpoints file, pointed at this action server and a tracker DB in tmp.
        config = yaml.safe_load(DEFAULT_ENDPOINTS.read_text("utf-8"))
        config["action_endpoint"]["url"] = f"http://127.0.0.1:{actions_port}/webhook"
        config["tracker_store"]["db"] = str(tmp / "tracker.sqlite3")
        endpoints = tmp / "endpoints.yml"
        endpoints.write_text(yaml.safe_dump(config), encoding="utf-8")
    channels = ["--connector", "cmdline"] if shell else ["--credentials", str(credentials)]
    return LaunchPlan(
        rasa_port=rasa_port,
        actions_port=actions_port,
        database_url=database_url,
        endpoints=endpoints,
        env=full_env,
        actions=None
        if share_actions_of is not None
        else [
            str(BIN / "python"),
            "-m",
            "actions.serve",
            "--actions",
            "actions",
            "--port",
            str(actions_port),
        ],
        # rasa_sdk listens on SANIC_HOST (its default: every interface); the action server has
        # no authentication and only the Rasa servers on this machine call it
        actions_env={"SANIC_HOST": "127.0.0.1", **full_env},
        rasa=[
            str(BIN / "python"),
            "-m",
            "bot.serve",
            "run",
            "--model",
            str(model),
            "--endpoints",
            str(endpoints),
            *channels,
            "--enable-api",
            "--port",
            str(rasa_port),
            *(["--interface", interface] if interface else []),
        ],
        rasa_env={**SERVING_TF_THREADS, **full_env},
    )


def _wait(
    url: str, proc: subprocess.Popen, log: Path | None, timeout: float, params: dict[str, str] | None = None
) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            detail = f"see {log}:\n{log.read_text()[-3000:]}" if log else "see its output above"
            raise RuntimeError(f"process exited early, {detail}")
        try:
            if requests.get(url, params=params, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout} s; see {log or 'its output above'}")


def _build_kb(launch: LaunchPlan) -> None:
    subprocess.run(
        [str(BIN / "posbot"), "kb", "build"],
        env=launch.env,
        check=True,
        cwd=PROJECT_ROOT,
        capture_output=True,
    )


def _warm_up(bot: RunningBot, launch: LaunchPlan, timeout: float) -> None:
    subprocess.run(
        [str(BIN / "python"), str(PROJECT_ROOT / "scripts" / "warmup.py"), bot.url],
        check=True,
        cwd=PROJECT_ROOT,
        timeout=timeout,
        capture_output=True,
        env=launch.env,
    )


def start_bot(
    tmp: Path,
    *,
    model: Path = DEFAULT_MODEL,
    env: dict[str, str] | None = None,
    endpoints: Path | None = None,
    timeout: float = 240,
    rasa_port: int | None = None,
    actions_port: int | None = None,
    credentials: Path | None = None,
    stream_logs: bool = False,
    share_actions_of: RunningBot | None = None,
    interface: str | None = None,
) -> RunningBot:
    """Build the KB, start both servers (on free ports unless given), warm them up.

    By default everything lives in ``tmp`` (SQLite KB and trackers). With ``endpoints`` (e.g.
    bot/endpoints.production.yml) Rasa reads its stores from that file and the environment;
    ``POSBOT_ACTION_URL`` is set to the action server started here. ``stream_logs`` sends the
    servers' output to this terminal instead of files in ``tmp``.

    ``share_actions_of`` (several Rasa servers, as in production): start only a Rasa server,
    using that bot's action server and KB; its ``processes`` are this Rasa server alone.
    ``interface``: the address the Rasa server listens on (Rasa's default: all of them);
    ``make cluster`` keeps its servers on 127.0.0.1 behind the balancer (ops/cluster.py).
    """
    started = time.monotonic()
    launch = plan(
        tmp,
        model=model,
        env=env,
        endpoints=endpoints,
        rasa_port=rasa_port,
        actions_port=actions_port,
        credentials=credentials,
        share_actions_of=share_actions_of,
        interface=interface,
    )
    if launch.actions is not None:
        _build_kb(launch)
    logs = {name: tmp / f"{name}.log" for name in ("actions", "rasa")}
    token = rasa_token(launch.env)
    bot = RunningBot(
        f"http://127.0.0.1:{launch.rasa_port}",
        f"http://127.0.0.1:{launch.actions_port}",
        launch.database_url,
        tmp,
        token=token,
    )

    def output(name: str) -> IO[Any] | None:
        return None if stream_logs else logs[name].open("w")

    if launch.actions is not None:
        bot.processes.append(
            subprocess.Popen(
                launch.actions,
                cwd=PROJECT_ROOT,
                env=launch.actions_env,
                stdout=output("actions"),
                stderr=subprocess.STDOUT,
            )
        )
    bot.processes.append(
        subprocess.Popen(
            launch.rasa,
            cwd=PROJECT_ROOT,
            env=launch.rasa_env,
            stdout=output("rasa"),
            stderr=subprocess.STDOUT,
        )
    )
    try:
        if launch.actions is not None:
            _wait(
                f"{bot.actions_url}/health",
                bot.processes[0],
                None if stream_logs else logs["actions"],
                timeout,
            )
        _wait(
            f"{bot.url}/status",
            bot.processes[-1],
            None if stream_logs else logs["rasa"],
            timeout,
            {"token": token},
        )
        _warm_up(bot, launch, timeout)
    except BaseException:
        bot.stop()
        raise
    bot.ready_after_s = time.monotonic() - started
    return bot


def given_database(environ: Mapping[str, str]) -> dict[str, str]:
    """``make run`` / ``make shell`` keep the KB, records and staff accounts where
    ``POSBOT_DATABASE_URL`` says (e.g. PostgreSQL), else in ``var/posbot.sqlite3``."""
    url = environ.get("POSBOT_DATABASE_URL", "").strip()
    return {"POSBOT_DATABASE_URL": url} if url else {}


def shell(
    tmp: Path,
    *,
    model: Path = DEFAULT_MODEL,
    env: dict[str, str] | None = None,
    endpoints: Path | None = None,
    rasa_port: int | None = None,
    actions_port: int | None = None,
    timeout: float = 600,
) -> int:
    """``make shell``: chat with the bot in this terminal, until ``/stop`` or Ctrl-C.

    The same bot as :func:`start_bot` (KB build, action server, model, endpoints, TensorFlow
    settings, API token); the Rasa server reads this terminal instead of serving the channels.
    No warm-up (its API calls would log through the chat), so the first reply takes a few
    seconds longer. The action server's output goes to ``tmp/actions.log`` so that it does not
    run through the chat either. Returns the exit status of the Rasa shell.
    """
    launch = plan(
        tmp,
        model=model,
        env=env,
        endpoints=endpoints,
        rasa_port=rasa_port,
        actions_port=actions_port,
        shell=True,
    )
    assert launch.actions is not None  # a shell always has its own action server
    token = rasa_token(launch.env)
    bot = RunningBot(
        f"http://127.0.0.1:{launch.rasa_port}",
        f"http://127.0.0.1:{launch.actions_port}",
        launch.database_url,
        tmp,
        token=token,
    )
    actions_log = tmp / "actions.log"
    try:
        _build_kb(launch)
        with actions_log.open("w") as log:
            bot.processes.append(
                subprocess.Popen(
                    launch.actions,
                    cwd=PROJECT_ROOT,
                    env=launch.actions_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        print(f"starting the action server (log: {actions_log}) …", flush=True)
        _wait(f"{bot.actions_url}/health", bot.processes[0], actions_log, timeout)
        # The shell reads this terminal: Rasa gets the launcher's stdin and stdout.
        rasa = subprocess.Popen(launch.rasa, cwd=PROJECT_ROOT, env=launch.rasa_env)
        bot.processes.append(rasa)
        return rasa.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the Rasa shell too, which stops by itself
        return 130
    finally:
        bot.stop()


def _endpoints_from(value: str | None) -> Path | None:
    """``--endpoints``/``ENDPOINTS``; None for bot/endpoints.yml, whose copy in the state
    folder the launcher writes (pointed at ``ACTIONS_PORT``, trackers in ``var/``)."""
    if not value:
        return None
    path = Path(value)
    resolved = (path if path.is_absolute() else PROJECT_ROOT / path).resolve()
    return None if resolved == DEFAULT_ENDPOINTS.resolve() else path


def main(argv: list[str] | None = None) -> int:
    """``make run``: both servers on fixed ports with the state in ``var/``, until Ctrl-C.
    ``make shell``: the same bot, chatting in this terminal.

    In run mode, if either server dies, the other is stopped too and the exit status says so.
    """
    parser = argparse.ArgumentParser(prog="python -m ops.launcher", description=main.__doc__)
    parser.add_argument(
        "mode",
        nargs="?",
        choices=("run", "shell"),
        default="run",
        help="run: serve the channels (default); shell: chat in this terminal",
    )
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("MODEL", DEFAULT_MODEL)))
    parser.add_argument(
        "--endpoints",
        default=os.environ.get("ENDPOINTS"),
        help="Rasa endpoints file (ENDPOINTS); default: bot/endpoints.yml with "
        "embedded SQLite trackers in var/",
    )
    parser.add_argument(
        "--credentials", type=Path, default=Path(os.environ.get("CREDENTIALS", "bot/credentials.yml"))
    )
    parser.add_argument("--rasa-port", type=int, default=int(os.environ.get("RASA_PORT", 5005)))
    parser.add_argument("--actions-port", type=int, default=int(os.environ.get("ACTIONS_PORT", 5055)))
    args = parser.parse_args(argv)
    endpoints = _endpoints_from(args.endpoints)
    state = PROJECT_ROOT / "var"
    env = given_database(os.environ)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.mode == "shell":
        return shell(
            state,
            model=args.model,
            env=env,
            endpoints=endpoints,
            rasa_port=args.rasa_port,
            actions_port=args.actions_port,
        )
    try:
        bot = start_bot(
            state,
            model=args.model,
            env=env,
            endpoints=endpoints,
            rasa_port=args.rasa_port,
            actions_port=args.actions_port,
            credentials=args.credentials,
            stream_logs=True,
            timeout=600,
        )
    except KeyboardInterrupt:
        return 130
    port = args.rasa_port
    print(
        f"posbot is ready: REST http://localhost:{port}/webhooks/rest/webhook · widget "
        f"http://localhost:{port}/webhooks/web/ · WeChat /webhooks/wechat/webhook · "
        f"API token in {'POSBOT_RASA_TOKEN' if os.environ.get('POSBOT_RASA_TOKEN') else 'var/rasa-token'}",
        flush=True,
    )
    try:
        while all(proc.poll() is None for proc in bot.processes):
            time.sleep(0.5)
        dead = [
            proc.args[1:3]
            for proc in bot.processes
            if proc.poll() is not None and isinstance(proc.args, list)
        ]
        print(f"posbot stopped: a server exited ({dead})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        bot.stop()


if __name__ == "__main__":
    sys.exit(main())
