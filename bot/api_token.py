"""The one secret that guards Rasa's HTTP API (tracker, events, execute, model, train, status).

``rasa run --enable-api --auth-token`` refuses every API route without ``?token=<secret>``; the
merchant channels (``/webhooks/...``, ``/socket.io``) never ask for it. The secret is
``POSBOT_RASA_TOKEN`` when that is set (production: from the secret manager), otherwise a random
value generated on first use and kept in ``var/rasa-token`` (mode 0600, git-ignored). Every
project tool that calls the API (the launcher, warm-up, ``posbot handoff release``, bench, eval,
tests) gets it from :func:`rasa_token`, so there is exactly one place to rotate it.

Why a token and not Rasa's JWT option: the API has one kind of caller, our own tools on the
server side, and no per-user roles to express (staff roles live in the staff console). A JWT
would add a signing key, expiry and a client library for the same yes/no answer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Mapping, Optional

from bot.settings import PROJECT_ROOT

TOKEN_ENV = "POSBOT_RASA_TOKEN"
TOKEN_FILE_ENV = "POSBOT_RASA_TOKEN_FILE"
DEFAULT_TOKEN_FILE = PROJECT_ROOT / "var" / "rasa-token"
MIN_TOKEN_CHARS = 16


class TokenError(RuntimeError):
    """The configured token is unusable (too short, unreadable file, wrong permissions)."""


def token_file(env: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)


def _check(token: str, origin: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"{origin}: the Rasa API token must have at least {MIN_TOKEN_CHARS} "
            "characters (leave it unset to have one generated)"
        )
    return token


def _read_file(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TokenError(f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}`")
    return _check(path.read_text(encoding="utf-8"), str(path))


def rasa_token(env: Optional[Mapping[str, str]] = None, *, create: bool = True) -> str:
    """The API secret: ``POSBOT_RASA_TOKEN``, else the token file (generated when missing).

    The file is created atomically with mode 0600 (``O_EXCL``), so two processes starting at the
    same moment end up with the same secret and no process ever sees a half-written file.
    """
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return _check(env[TOKEN_ENV], TOKEN_ENV)
    path = token_file(env)
    if path.exists() or not create:
        return _read_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32))
    return _read_file(path)


def rotate(env: Optional[Mapping[str, str]] = None) -> Path:
    """Replace the token file with a new random secret; running servers keep the old one
    until they are restarted. Refuses when the token comes from ``POSBOT_RASA_TOKEN``."""
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        raise TokenError(f"{TOKEN_ENV} is set: rotate it where it is set, then restart")
    path = token_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32))
    os.replace(tmp, path)
    return path


def fingerprint(token: str) -> str:
    """What logs and the CLI may show of a token: its first four characters."""
    return f"{token[:4]}…"


def own_url(request: Any) -> str:
    """This Rasa server's own HTTP API. The port is the one the server listens on, never the
    one in the Host header (``request.server_port``): behind a balancer that is the balancer's
    (443 behind TLS)."""
    return f"http://127.0.0.1:{request.conn_info.server_port}"
