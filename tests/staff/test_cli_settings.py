"""The staff CLI names a bad setting in one line instead of a traceback."""

from __future__ import annotations

import pytest

from staff.cli import main


def test_a_bad_database_url_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBOT_DATABASE_URL", "not a url")
    with pytest.raises(SystemExit) as stopped:
        main(["kb", "lint"])
    assert str(stopped.value).startswith("posbot: bad setting POSBOT_DATABASE_URL='not a url': ")
    assert "\n" not in str(stopped.value)


def test_a_bad_rasa_url_is_named_before_any_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBOT_RASA_URL", "localhost:5005")
    with pytest.raises(SystemExit, match="^posbot: bad setting POSBOT_RASA_URL='localhost:5005'"):
        main(["user", "list"])
