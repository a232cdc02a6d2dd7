"""Settings of the Rasa-server side, read from the environment in one place.

One typed object (pydantic's ``BaseSettings``; Rasa 3.6 pins pydantic 1.10): the channels'
settings (Redis, CORS, WeChat, the cluster's Rasa servers) and the speed-ups' switches
(bot/speedups, docs/performance-settings.md). ``Settings.from_env()`` validates every value and
raises :class:`SettingsError` naming the variable; bot/serve.py does that before Rasa starts, so
a wrong value stops the server at start with one clear line (never at import).

Every default runs embedded (SQLite under ``var/``, in-memory caches) so that ``make run`` works
on a fresh machine; production sets the variables documented in the README.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

from pydantic import Field, validator

from kb.settings import EnvSettings
from kb.settings import SettingsError as SettingsError  # what Settings.from_env raises

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Fields read as comma-separated lists (pydantic would read them as JSON).
_COMMA_LISTS = {"rasa_urls", "cors_origins"}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(EnvSettings):
    """Values of the POSBOT_* and WECHAT_* environment variables, with embedded defaults."""

    redis_url: str = Field("", env="POSBOT_REDIS_URL")
    #: Redis pub/sub channel of the widget's socket.io fan-out (bot/channels/web.py); every
    #: server of one deployment must use the same one.
    socketio_channel: str = Field("posbot-socketio", env="POSBOT_SOCKETIO_CHANNEL")
    #: The Rasa servers of this deployment (``POSBOT_RASA_URLS``, comma-separated): where a new
    #: model is published (``PUT /model``); ``make cluster`` sets it for the servers it starts.
    rasa_urls: List[str] = Field(default_factory=list, env="POSBOT_RASA_URLS")
    cors_origins: List[str] = Field(default_factory=lambda: ["*"], env="POSBOT_CORS_ORIGINS")
    wechat_token: str = Field("", env="WECHAT_TOKEN")
    wechat_app_id: str = Field("", env="WECHAT_APP_ID")
    wechat_aes_key: str = Field("", env="WECHAT_AES_KEY")
    wechat_app_secret: str = Field("", env="WECHAT_APP_SECRET")
    wechat_reply_budget_s: float = Field(4.0, env="WECHAT_REPLY_BUDGET_S")
    wechat_max_age_s: float = Field(300.0, env="WECHAT_MAX_AGE_S")

    # --- speed-ups of the Rasa server (bot/speedups, docs/performance-settings.md) -------------
    #: ``0`` runs Rasa without any speed-up (same answers, slower); the outage fix stays.
    rasa_patches: bool = Field(True, env="POSBOT_RASA_PATCHES")
    #: ``0`` leaves the objects loaded at start in Python's garbage collector.
    gc_freeze: bool = Field(True, env="POSBOT_GC_FREEZE")
    #: Merchants' messages worked on at once per server, first come first served (0 = no gate).
    max_inflight: int = Field(2, ge=0, env="POSBOT_MAX_INFLIGHT")
    #: Seconds a message waits at that gate before it goes ahead without a place.
    gate_max_wait_s: float = Field(2.0, gt=0, env="POSBOT_GATE_MAX_WAIT_S")
    #: (conversation, policy setting) folds of dialogue states kept to resume from (0 = off).
    states_cache: int = Field(256, ge=0, env="POSBOT_STATES_CACHE")
    #: Conversations whose current session the tracker store keeps in memory (0 = off).
    tracker_cache: int = Field(512, ge=0, env="POSBOT_TRACKER_CACHE")

    class Config:
        allow_mutation = False
        case_sensitive = True

        @classmethod
        def parse_env_var(cls, field_name: str, raw_val: str) -> Any:
            if field_name in _COMMA_LISTS:
                return raw_val
            return json.loads(raw_val)

    @validator("socketio_channel", pre=True)
    def _channel_or_default(cls, value: Any) -> Any:
        return value.strip() or "posbot-socketio" if isinstance(value, str) else value

    @validator("rasa_urls", pre=True)
    def _comma_list(cls, value: Any) -> Any:
        return _split(value) if isinstance(value, str) else value

    @validator("cors_origins", pre=True)
    def _origins_or_all(cls, value: Any) -> Any:
        return (_split(value) or ["*"]) if isinstance(value, str) else value
