"""The Rasa API secret: generated once, private to its owner, the same for every tool."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bot.api_token import TOKEN_ENV, TOKEN_FILE_ENV, TokenError, fingerprint, rasa_token, rotate
from bot.serve import rasa_argv


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {TOKEN_FILE_ENV: str(tmp_path / "var" / "rasa-token"), **extra}


def test_first_use_generates_a_long_random_secret_readable_only_by_its_owner(tmp_path: Path) -> None:
    env = _env(tmp_path)
    token = rasa_token(env)
    path = tmp_path / "var" / "rasa-token"
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rasa_token(env) == token, "every tool must read the same secret"
    assert rasa_token(_env(tmp_path / "other")) != token, "another install gets its own secret"


def test_the_environment_variable_wins_over_the_file(tmp_path: Path) -> None:
    env = _env(tmp_path, **{TOKEN_ENV: "from-the-secret-manager-0123"})
    assert rasa_token(env) == "from-the-secret-manager-0123"
    assert not (tmp_path / "var" / "rasa-token").exists()


def test_a_short_token_is_refused_with_a_clear_reason(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="at least 16 characters"):
        rasa_token(_env(tmp_path, **{TOKEN_ENV: "1234"}))


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path)
    rasa_token(env)
    path = tmp_path / "var" / "rasa-token"
    path.chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        rasa_token(env)


def test_tools_do_not_invent_a_secret_the_server_never_had(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rasa_token(_env(tmp_path), create=False)


def test_rotate_replaces_the_secret_and_keeps_it_private(tmp_path: Path) -> None:
    env = _env(tmp_path)
    old = rasa_token(env)
    path = rotate(env)
    assert rasa_token(env) != old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(TokenError, match="rotate it where it is set"):
        rotate(_env(tmp_path, **{TOKEN_ENV: "x" * 20}))


def test_only_a_fingerprint_is_ever_shown() -> None:
    assert fingerprint("abcdefghijklmnopqrstuvwxyz") == "abcd…"


def test_the_server_gets_the_token_only_when_the_api_is_enabled() -> None:
    assert rasa_argv(["run", "--enable-api", "--port", "5005"], "s" * 20) == [
        "run",
        "--enable-api",
        "--port",
        "5005",
        "--auth-token=" + "s" * 20,
    ]
    assert rasa_argv(["run", "--port", "5005"], "s" * 20) == ["run", "--port", "5005"]
    assert rasa_argv(["shell"], "s" * 20) == ["shell"]


@pytest.mark.parametrize("token", ["-starts-with-a-dash-0123456789", "--looks-like-an-option-0123"])
def test_rasa_reads_a_token_that_begins_with_a_dash(token: str) -> None:
    """token_urlsafe begins with "-" once in 64 secrets: Rasa's own parser must still read it."""
    from rasa.__main__ import create_argument_parser

    argv = rasa_argv(["run", "--enable-api", "--port", "5005"], token)
    parsed = create_argument_parser().parse_args(argv)
    assert parsed.auth_token == token
