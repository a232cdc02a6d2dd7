"""ops/launcher.py is the one launcher: what `make run` and `make shell` start, without starting it.

The live tests (tests/integration, tests/conftest.py) start the same commands for real; these
check the command lines and environments of both processes, that Rasa's own parser reads them as
the server and as its interactive shell, and that the Makefile goes through the launcher.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.serve import rasa_argv
from ops import launcher
from ops.launcher import BIN, PROJECT_ROOT, LaunchPlan, plan

MODEL = Path("models/some.tar.gz")
CREDENTIALS = PROJECT_ROOT / "bot" / "credentials.yml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TF_INTER_OP_PARALLELISM_THREADS",
        "TF_INTRA_OP_PARALLELISM_THREADS",
        "POSBOT_DATABASE_URL",
        "POSBOT_RASA_TOKEN",
        "ENDPOINTS",
        "MODEL",
        "CREDENTIALS",
        "RASA_PORT",
        "ACTIONS_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def launch(tmp_path: Path, *, shell: bool) -> LaunchPlan:
    return plan(tmp_path, model=MODEL, rasa_port=6105, actions_port=6155, shell=shell)


def rasa_args(argv: list[str]) -> argparse.Namespace:
    """The Rasa server's command line as Rasa's own CLI parses it (after bot.serve)."""
    from rasa.__main__ import create_argument_parser

    assert argv[:4] == [str(BIN / "python"), "-m", "bot.serve", "run"]
    return create_argument_parser().parse_args(argv[3:])


@pytest.mark.parametrize("shell", [False, True], ids=["run", "shell"])
def test_both_modes_start_the_same_action_server(tmp_path: Path, shell: bool) -> None:
    started = launch(tmp_path, shell=shell)
    # actions/serve.py: validates the KB side's settings and warms the indexes before /health.
    assert started.actions == [
        str(BIN / "python"),
        "-m",
        "actions.serve",
        "--actions",
        "actions",
        "--port",
        "6155",
    ]
    from rasa_sdk.endpoint import create_argument_parser

    sdk = create_argument_parser().parse_args(started.actions[3:])  # what actions/serve.py parses
    assert (sdk.actions, sdk.port) == ("actions", 6155)
    env = started.actions_env
    assert env["POSBOT_ACTION_URL"] == "http://127.0.0.1:6155/webhook"
    assert env["POSBOT_DATABASE_URL"] == f"sqlite:///{tmp_path / 'posbot.sqlite3'}"
    assert env["RASA_TELEMETRY_ENABLED"] == "false"
    # the action server has no authentication: this machine's Rasa servers alone may reach it
    assert env["SANIC_HOST"] == "127.0.0.1"
    # TensorFlow's thread settings make Rasa's CLI import TensorFlow: never for the action server.
    assert "TF_INTER_OP_PARALLELISM_THREADS" not in env
    assert "TF_INTRA_OP_PARALLELISM_THREADS" not in env


def test_run_serves_the_channels_of_the_credentials(tmp_path: Path) -> None:
    started = launch(tmp_path, shell=False)
    assert started.rasa == [
        str(BIN / "python"),
        "-m",
        "bot.serve",
        "run",
        "--model",
        str(MODEL),
        "--endpoints",
        str(tmp_path / "endpoints.yml"),
        "--credentials",
        str(CREDENTIALS),
        "--enable-api",
        "--port",
        "6105",
    ]
    args = rasa_args(started.rasa)
    assert args.connector is None
    assert args.credentials == str(CREDENTIALS)


def test_shell_is_rasas_interactive_shell_on_the_same_bot(tmp_path: Path) -> None:
    import rasa.cli.run
    import rasa.cli.shell

    run, shell = launch(tmp_path, shell=False), launch(tmp_path, shell=True)
    assert shell.rasa == [
        str(BIN / "python"),
        "-m",
        "bot.serve",
        "run",
        "--model",
        str(MODEL),
        "--endpoints",
        str(tmp_path / "endpoints.yml"),
        "--connector",
        "cmdline",
        "--enable-api",
        "--port",
        "6105",
    ]
    args = rasa_args(shell.rasa)
    # `rasa shell` is `rasa run` with the cmdline connector; through bot.serve the shell gets
    # the settings check, the speed-ups and the in-process token like the server does.
    source = inspect.getsource(rasa.cli.shell.shell)
    assert 'args.connector = "cmdline"' in source and "rasa.cli.run.run(args)" in source
    assert args.func is rasa.cli.run.run
    assert args.connector == "cmdline"
    assert args.enable_api is True
    assert args.model == str(MODEL)
    assert args.port == 6105
    # Everything but the channel is the same as for `make run`.
    assert shell.rasa_env == run.rasa_env
    assert (shell.actions, shell.actions_env) == (run.actions, run.actions_env)


@pytest.mark.parametrize("shell", [False, True], ids=["run", "shell"])
def test_rasa_gets_one_tensorflow_thread_and_the_token_only_in_process(
    tmp_path: Path, shell: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = launch(tmp_path, shell=shell)
    assert started.rasa_env["TF_INTER_OP_PARALLELISM_THREADS"] == "1"
    assert started.rasa_env["TF_INTRA_OP_PARALLELISM_THREADS"] == "1"
    assert started.rasa_env["POSBOT_ACTION_URL"] == "http://127.0.0.1:6155/webhook"
    assert "--auth-token" not in started.rasa
    token = "a-token-of-the-test-0123456789"
    # bot/serve.py adds it inside the Rasa process, for the shell as for the server.
    assert rasa_argv(started.rasa[3:], token)[-1] == f"--auth-token={token}"
    assert token not in " ".join(started.rasa)

    monkeypatch.setenv("TF_INTER_OP_PARALLELISM_THREADS", "2")
    assert launch(tmp_path, shell=shell).rasa_env["TF_INTER_OP_PARALLELISM_THREADS"] == "2"


@pytest.mark.parametrize("shell", [False, True], ids=["run", "shell"])
def test_the_endpoints_copy_points_at_this_action_server_and_tracker_db(tmp_path: Path, shell: bool) -> None:
    launch(tmp_path, shell=shell)
    endpoints = yaml.safe_load((tmp_path / "endpoints.yml").read_text(encoding="utf-8"))
    assert endpoints["action_endpoint"]["url"] == "http://127.0.0.1:6155/webhook"
    assert endpoints["tracker_store"]["db"] == str(tmp_path / "tracker.sqlite3")
    assert endpoints["tracker_store"]["type"] == "bot.stores.CachedSQLTrackerStore"


def test_given_endpoints_are_used_as_they_are(tmp_path: Path) -> None:
    production = PROJECT_ROOT / "bot" / "endpoints.production.yml"
    started = plan(tmp_path, endpoints=production, rasa_port=6105, actions_port=6155)
    assert started.rasa[started.rasa.index("--endpoints") + 1] == str(production)
    assert not (tmp_path / "endpoints.yml").exists()


def test_a_second_server_shares_the_first_ones_action_server(tmp_path: Path) -> None:
    first = launcher.RunningBot(
        "http://127.0.0.1:6105", "http://127.0.0.1:6155", "sqlite:////srv/kb.sqlite3", tmp_path
    )
    second = plan(tmp_path / "b", share_actions_of=first, rasa_port=6106, interface="127.0.0.1")
    assert second.actions is None
    assert second.actions_port == 6155
    assert second.database_url == "sqlite:////srv/kb.sqlite3"
    assert second.rasa[-4:] == ["--port", "6106", "--interface", "127.0.0.1"]


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Path, dict]]:
    """main() with start_bot and shell recorded instead of started."""
    calls: dict[str, tuple[Path, dict]] = {}

    def fake_shell(tmp: Path, **kwargs: object) -> int:
        calls["shell"] = (tmp, kwargs)
        return 0

    def fake_start_bot(tmp: Path, **kwargs: object) -> object:
        calls["run"] = (tmp, kwargs)
        raise KeyboardInterrupt  # stop main() before it waits for the servers

    monkeypatch.setattr(launcher, "shell", fake_shell)
    monkeypatch.setattr(launcher, "start_bot", fake_start_bot)
    return calls


def test_make_shell_and_make_run_read_ports_and_files_from_the_environment(
    recorded: dict[str, tuple[Path, dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RASA_PORT", "6205")
    monkeypatch.setenv("ACTIONS_PORT", "6255")
    monkeypatch.setenv("MODEL", "models/other.tar.gz")
    monkeypatch.setenv("ENDPOINTS", "bot/endpoints.production.yml")
    monkeypatch.setenv("CREDENTIALS", "bot/other-credentials.yml")
    assert launcher.main(["shell"]) == 0
    assert launcher.main(["run"]) == 130
    for mode in ("shell", "run"):
        tmp, kwargs = recorded[mode]
        assert tmp == PROJECT_ROOT / "var"
        assert kwargs["rasa_port"] == 6205 and kwargs["actions_port"] == 6255
        assert kwargs["model"] == Path("models/other.tar.gz")
        assert kwargs["endpoints"] == Path("bot/endpoints.production.yml")
    assert recorded["run"][1]["credentials"] == Path("bot/other-credentials.yml")
    assert recorded["run"][1]["stream_logs"] is True


def test_make_run_keeps_staff_and_kb_in_the_database_the_environment_names(
    recorded: dict[str, tuple[Path, dict]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A `posbot staff add` on POSBOT_DATABASE_URL must be the account the console checks."""
    url = f"sqlite:///{tmp_path / 'shop.sqlite3'}"
    monkeypatch.setenv("POSBOT_DATABASE_URL", url)
    assert launcher.main(["shell"]) == 0
    assert launcher.main(["run"]) == 130
    for mode in ("shell", "run"):
        kwargs = recorded[mode][1]
        launch = plan(tmp_path / mode, env=kwargs["env"])
        assert launch.env["POSBOT_DATABASE_URL"] == url
        assert launch.actions_env["POSBOT_DATABASE_URL"] == url
        assert launch.rasa_env["POSBOT_DATABASE_URL"] == url
    monkeypatch.setenv("POSBOT_DATABASE_URL", " ")  # blank: the default, SQLite in var/
    assert launcher.main(["run"]) == 130
    assert recorded["run"][1]["env"] == {}


@pytest.mark.parametrize("value", [None, "bot/endpoints.yml", str(PROJECT_ROOT / "bot" / "endpoints.yml")])
def test_the_default_endpoints_file_means_the_launchers_own_copy(
    recorded: dict[str, tuple[Path, dict]], monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        monkeypatch.setenv("ENDPOINTS", value)
    assert launcher.main([]) == 130  # no mode: run
    tmp, kwargs = recorded["run"]
    assert kwargs["endpoints"] is None
    assert kwargs["rasa_port"] == 5005 and kwargs["actions_port"] == 5055


@pytest.mark.parametrize("target", ["run", "shell"])
def test_make_goes_through_the_launcher(target: str) -> None:
    dry = subprocess.run(
        ["make", "-n", target], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f".venv/bin/python -m ops.launcher {target}" in dry, dry
    assert "run.sh" not in dry and "rasa shell" not in dry
    assert not (PROJECT_ROOT / "scripts" / "run.sh").exists()


def test_the_launcher_is_a_module_that_starts(tmp_path: Path) -> None:
    """`python -m ops.launcher --help`, as make runs it: it imports and names both modes."""
    result = subprocess.run(
        [sys.executable, "-m", "ops.launcher", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "{run,shell}" in result.stdout


@pytest.mark.integration
def test_make_shell_answers_in_the_terminal_and_stops_both_servers(tmp_path: Path) -> None:
    """The shell on a terminal (a pty), as `make shell` runs it: a KB question answered by the
    action server, then `/stop` ends the shell and the action server with it."""
    import os
    import pty
    import re
    import select
    import signal
    import time

    import requests

    from ops.launcher import DEFAULT_MODEL, free_port

    if not DEFAULT_MODEL.exists():
        pytest.fail(f"{DEFAULT_MODEL} is missing: run `make train` (make test does it for you)")
    rasa_port, actions_port = free_port(), free_port()
    env = {**os.environ, "POSBOT_RASA_TOKEN_FILE": str(tmp_path / "rasa-token")}
    env.pop("POSBOT_RASA_TOKEN", None)
    code = (
        "import sys; from pathlib import Path; from ops.launcher import shell; "
        f"sys.exit(shell(Path({str(tmp_path / 'state')!r}), rasa_port={rasa_port}, "
        f"actions_port={actions_port}))"
    )
    terminal, child_side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=child_side,
        stdout=child_side,
        stderr=child_side,
        start_new_session=True,
    )
    os.close(child_side)
    seen = b""

    def wait_for(pattern: str, timeout: float) -> bool:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([terminal], [], [], 1)[0]:
                try:
                    seen += os.read(terminal, 65536)
                except OSError:  # the shell closed the terminal
                    return False
            if re.search(pattern, seen.decode(errors="replace")):
                return True
        return False

    try:
        assert wait_for("Type a message", 600), seen.decode(errors="replace")[-3000:]
        os.write(terminal, "拉卡拉客服电话多少\r".encode())
        assert wait_for("95016", 120), seen.decode(errors="replace")[-3000:]
        os.write(terminal, b"/stop\r")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the launcher stops both servers
            proc.wait(timeout=60)
        os.close(terminal)
    for port in (rasa_port, actions_port):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
