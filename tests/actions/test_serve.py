"""The action server's start (actions/serve.py): settings checked, indexes warm, then rasa_sdk."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import rasa_sdk.__main__

import actions.store
from actions import serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the start did, in order, with rasa_sdk's server and the index build replaced."""
    steps: list[str] = []
    monkeypatch.setattr(actions.store, "warm", lambda: steps.append("warm"))
    monkeypatch.setattr(serve, "warm", lambda: steps.append("warm"))

    def serve_actions(args: argparse.Namespace) -> None:
        steps.append(f"serve {args.actions} on {args.port}")

    monkeypatch.setattr(rasa_sdk.__main__, "main_from_args", serve_actions)
    for name in ("POSBOT_WARM_ACTIONS", "POSBOT_ENCODER_THREADS", "POSBOT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return steps


def test_the_indexes_are_warm_before_the_server_answers(started: list[str]) -> None:
    serve.start(["--actions", "actions", "--port", "6155"])
    assert started == ["warm", "serve actions on 6155"]


def test_warming_can_be_switched_off(started: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBOT_WARM_ACTIONS", "0")
    serve.start(["--actions", "actions", "--port", "6155"])
    assert started == ["serve actions on 6155"]


def test_a_bad_setting_stops_the_start_before_anything_runs(
    started: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSBOT_ENCODER_THREADS", "many")
    with pytest.raises(SystemExit) as stopped:
        serve.start(["--actions", "actions", "--port", "6155"])
    assert str(stopped.value.code) == (
        "posbot: bad setting POSBOT_ENCODER_THREADS='many': value is not a valid integer"
    )
    assert started == []


def test_an_operator_sees_one_line_naming_the_variable(tmp_path: Path) -> None:
    """The real process, as the launcher starts it: status 1, one line on stderr, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "actions.serve", "--actions", "actions", "--port", "1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "POSBOT_DATABASE_URL": "var/posbot.sqlite3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "posbot: bad setting POSBOT_DATABASE_URL='var/posbot.sqlite3': "
        "not a SQLAlchemy URL (e.g. postgresql://user@host/db)"
    ]


def test_registering_the_actions_warms_nothing() -> None:
    """rasa_sdk imports every module of the package (this one too) to register the actions;
    before, ``POSBOT_WARM_ACTIONS=1`` made that import build the indexes."""
    script = (
        "import kb.store\n"
        "def refuse(): raise SystemExit('the knowledge store was opened on import')\n"
        "kb.store.shared_store = refuse\n"
        "from rasa_sdk.executor import ActionExecutor\n"
        "ActionExecutor().register_package('actions')\n"
        "import actions.serve\n"
        "print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "POSBOT_WARM_ACTIONS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "imported"), done.stderr
