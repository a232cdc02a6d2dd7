"""Settings of the action-server/KB side, read from the environment in one place.

One typed object (pydantic's ``BaseSettings``, as bot/settings.py is for the Rasa server): where
the KB and the records live, the KB's YAML folder, the sentence encoder's threads, the action
server's warm-up, and the Rasa server the staff CLI talks to. ``Settings.from_env()`` validates
every value and raises :class:`SettingsError` naming the variable; ``python -m actions.serve``
(the action server, actions/serve.py) does that before it serves, so a wrong value stops it at
start with one line. Nothing here reads the environment at import time.

Every default runs embedded (SQLite under ``var/``, the content in kb/content); production sets
the variables documented in docs/configuration.md. ``kb`` imports neither ``bot`` nor
``actions``; the Rasa server's settings build on :class:`EnvSettings` and :class:`SettingsError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

from pydantic import BaseSettings, Field, ValidationError, validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTENT_DIR = Path(__file__).resolve().parent / "content"
VAR_DIR = PROJECT_ROOT / "var"
#: The embedded database: SQLite in var/ (created on first use).
EMBEDDED_DATABASE_URL = f"sqlite:///{VAR_DIR / 'posbot.sqlite3'}"
DEFAULT_RASA_URL = "http://localhost:5005"

#: Intents of the contract that are answered from topics.yml (error_code has its own table).
TOPIC_INTENTS: tuple[str, ...] = (
    "avoid_faults",
    "contact_support",
    "brand_differences",
    "fees",
    "fault_hardware",
    "fault_software",
    "fault_network",
    "apply_pos",
    "usage_tips",
    "choose_brand",
    "training",
    "bill_query",
)


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use; the message names it."""


S = TypeVar("S", bound="EnvSettings")


def _or_default(value: Any, default: Any) -> Any:
    """A blank variable means the default, as it always has for these variables."""
    if isinstance(value, str):
        return value.strip() or default
    return value


class EnvSettings(BaseSettings):
    """Settings read from named environment variables (``Field(..., env=NAME)``), validated
    all at once: the base of this side's :class:`Settings` and of the Rasa server's
    (bot/settings.py)."""

    class Config:
        allow_mutation = False
        case_sensitive = True

    @classmethod
    def variable(cls, field_name: str) -> str:
        """The environment variable of a field (``max_inflight`` → ``POSBOT_MAX_INFLIGHT``)."""
        return str(cls.__fields__[field_name].field_info.extra["env"])

    @classmethod
    def from_env(cls: type[S], env: Optional[Mapping[str, str]] = None) -> S:
        """The settings in ``env`` (default: this process's environment), validated.

        Raises :class:`SettingsError` naming every variable with a bad value.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        for name, field in cls.__fields__.items():
            variable = cls.variable(name)
            if variable in env:
                values[name] = given[name] = env[variable]
            else:  # explicit defaults: nothing is read from os.environ behind ``env``'s back
                values[name] = field.get_default()
        try:
            return cls(**values)
        except ValidationError as error:
            problems = []
            for found in error.errors():
                name = str(found["loc"][0])
                problems.append(f"{cls.variable(name)}={given.get(name, '')!r}: {found['msg']}")
            raise SettingsError("bad setting " + "; ".join(problems)) from None


class Settings(EnvSettings):
    """Values of the action-server/KB side's environment variables, with embedded defaults."""

    #: SQLAlchemy URL of the KB, the records (tickets, handoffs, feedback) and staff accounts.
    database_url: str = Field(EMBEDDED_DATABASE_URL, env="POSBOT_DATABASE_URL")
    #: Folder of the KB's YAML files (``posbot kb build``, the console's editor).
    kb_content: Path = Field(CONTENT_DIR, env="POSBOT_KB_CONTENT")
    #: Engine threads of the sentence encoder (kb/encoder.py) per process. The servers are
    #: already parallel across requests; one thread per call keeps a burst of merchants from
    #: oversubscribing the cores.
    encoder_threads: int = Field(1, ge=1, env="POSBOT_ENCODER_THREADS")
    #: Folder of what is slow to compute and safe to recompute (kb/cache.py): the encoder's
    #: vectors of KB questions and training texts, fitted retrieval indexes. Deleting it costs
    #: the next build, training and server start their full time, nothing else.
    cache_dir: Path = Field(VAR_DIR / "cache", env="POSBOT_CACHE_DIR")
    #: ``0``: the action server answers ``/health`` at once and builds the retrieval indexes on
    #: the first question instead of before it serves (actions/store.py ``warm``).
    warm_actions: bool = Field(True, env="POSBOT_WARM_ACTIONS")
    #: The Rasa server that ``posbot handoff release`` resumes conversations on.
    rasa_url: str = Field(DEFAULT_RASA_URL, env="POSBOT_RASA_URL")

    class Config:
        allow_mutation = False
        case_sensitive = True

    @validator("database_url", pre=True)
    def _database_url(cls, value: Any) -> Any:
        value = _or_default(value, EMBEDDED_DATABASE_URL)
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError("not a SQLAlchemy URL (e.g. postgresql://user@host/db)") from None
        return value

    @validator("kb_content", pre=True)
    def _content_default(cls, value: Any) -> Any:
        return _or_default(value, CONTENT_DIR)

    @validator("kb_content")
    def _content_is_a_folder(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError("no such folder")
        return value

    @validator("cache_dir", pre=True)
    def _cache_default(cls, value: Any) -> Any:
        return _or_default(value, VAR_DIR / "cache")

    @validator("rasa_url", pre=True)
    def _rasa_url(cls, value: Any) -> Any:
        value = _or_default(value, DEFAULT_RASA_URL)
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            raise ValueError("not an http:// or https:// URL")
        return value


def database_url(env: Mapping[str, str] | None = None) -> str:
    """SQLAlchemy URL of the KB and records database: ``POSBOT_DATABASE_URL`` or SQLite in var/."""
    url = Settings.from_env(env).database_url
    if url == EMBEDDED_DATABASE_URL:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
    return url


def content_dir(env: Mapping[str, str] | None = None) -> Path:
    """Folder of the YAML content: ``POSBOT_KB_CONTENT`` or kb/content."""
    return Settings.from_env(env).kb_content
