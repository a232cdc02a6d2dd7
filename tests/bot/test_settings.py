"""The settings of the Rasa-server side (bot/settings.py): one typed object, checked at start."""

from __future__ import annotations

import pytest

from bot.settings import Settings, SettingsError


def test_an_empty_environment_runs_embedded() -> None:
    settings = Settings.from_env({})
    assert (settings.redis_url, settings.socketio_channel, settings.rasa_urls, settings.cors_origins) == (
        "",
        "posbot-socketio",
        [],
        ["*"],
    )
    assert (settings.wechat_reply_budget_s, settings.wechat_max_age_s) == (4.0, 300.0)
    assert (
        settings.rasa_patches,
        settings.gc_freeze,
        settings.max_inflight,
        settings.gate_max_wait_s,
        settings.states_cache,
        settings.tracker_cache,
    ) == (True, True, 2, 2.0, 256, 512)


def test_values_are_read_as_the_readme_documents_them() -> None:
    settings = Settings.from_env(
        {
            "POSBOT_RASA_URLS": " http://10.0.0.1:5005, ,http://10.0.0.2:5005 ",
            "POSBOT_CORS_ORIGINS": " , ",  # nothing usable: every origin, as before
            "POSBOT_SOCKETIO_CHANNEL": "   ",
            "POSBOT_REDIS_URL": "redis://cache:6379/0",
            "WECHAT_REPLY_BUDGET_S": "2.5",
            "POSBOT_RASA_PATCHES": "0",
            "POSBOT_GC_FREEZE": "1",
            "POSBOT_MAX_INFLIGHT": "0",
            "POSBOT_GATE_MAX_WAIT_S": "0.5",
            "POSBOT_STATES_CACHE": "0",
            "POSBOT_TRACKER_CACHE": "64",
        }
    )
    assert settings.rasa_urls == ["http://10.0.0.1:5005", "http://10.0.0.2:5005"]
    assert settings.cors_origins == ["*"] and settings.socketio_channel == "posbot-socketio"
    assert settings.redis_url == "redis://cache:6379/0" and settings.wechat_reply_budget_s == 2.5
    assert (
        settings.rasa_patches,
        settings.gc_freeze,
        settings.max_inflight,
        settings.gate_max_wait_s,
        settings.states_cache,
        settings.tracker_cache,
    ) == (False, True, 0, 0.5, 0, 64)


def test_the_given_environment_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSBOT_MAX_INFLIGHT", "7")
    monkeypatch.setenv("POSBOT_RASA_URLS", "http://a:5005,http://b:5005")
    assert Settings.from_env({}).max_inflight == 2
    assert Settings.from_env().max_inflight == 7
    assert Settings().rasa_urls == ["http://a:5005", "http://b:5005"]  # BaseSettings' own reading


@pytest.mark.parametrize(
    "variable, value",
    [
        ("POSBOT_MAX_INFLIGHT", "two"),
        ("POSBOT_MAX_INFLIGHT", "-1"),
        ("POSBOT_GATE_MAX_WAIT_S", "0"),
        ("POSBOT_STATES_CACHE", "lots"),
        ("POSBOT_TRACKER_CACHE", "-5"),
        ("POSBOT_RASA_PATCHES", "maybe"),
        ("POSBOT_GC_FREEZE", "2"),
        ("WECHAT_MAX_AGE_S", "five minutes"),
    ],
)
def test_a_bad_value_is_named_with_what_was_given(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^bad setting {variable}={value!r}: "):
        Settings.from_env({variable: value})


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"POSBOT_MAX_INFLIGHT": "x", "POSBOT_TRACKER_CACHE": "y"})
    assert "POSBOT_MAX_INFLIGHT='x'" in str(raised.value)
    assert "POSBOT_TRACKER_CACHE='y'" in str(raised.value)


def test_settings_do_not_change_once_read() -> None:
    settings = Settings.from_env({})
    with pytest.raises(TypeError):
        settings.max_inflight = 5
