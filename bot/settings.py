"""Settings of the Rasa-server side, read from the environment in one place.

Every default runs embedded (SQLite under ``var/``, in-memory caches) so that ``make run`` works
on a fresh machine; production sets the variables documented in the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    """Values of the POSBOT_* and WECHAT_* environment variables, with embedded defaults."""

    redis_url: str = ""
    #: Redis pub/sub channel of the widget's socket.io fan-out (bot/channels/web.py); every
    #: server of one deployment must use the same one.
    socketio_channel: str = "posbot-socketio"
    #: The Rasa servers of this deployment (``POSBOT_RASA_URLS``, comma-separated): where a new
    #: model is published (``PUT /model``); ``make cluster`` sets it for the servers it starts.
    rasa_urls: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    wechat_token: str = ""
    wechat_app_id: str = ""
    wechat_aes_key: str = ""
    wechat_app_secret: str = ""
    wechat_reply_budget_s: float = 4.0
    wechat_max_age_s: float = 300.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            redis_url=env.get("POSBOT_REDIS_URL", ""),
            socketio_channel=env.get("POSBOT_SOCKETIO_CHANNEL", "").strip() or "posbot-socketio",
            rasa_urls=_split(env.get("POSBOT_RASA_URLS", "")),
            cors_origins=_split(env.get("POSBOT_CORS_ORIGINS", "*")) or ["*"],
            wechat_token=env.get("WECHAT_TOKEN", ""),
            wechat_app_id=env.get("WECHAT_APP_ID", ""),
            wechat_aes_key=env.get("WECHAT_AES_KEY", ""),
            wechat_app_secret=env.get("WECHAT_APP_SECRET", ""),
            wechat_reply_budget_s=float(env.get("WECHAT_REPLY_BUDGET_S", "4.0")),
            wechat_max_age_s=float(env.get("WECHAT_MAX_AGE_S", "300")),
        )
