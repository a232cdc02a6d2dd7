"""Where the knowledge base and the operational records live, read from the environment once."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTENT_DIR = Path(__file__).resolve().parent / "content"
VAR_DIR = PROJECT_ROOT / "var"

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


def database_url(env: dict[str, str] | None = None) -> str:
    """SQLAlchemy URL of the KB and records database: ``POSBOT_DATABASE_URL`` or SQLite in var/."""
    env = dict(os.environ if env is None else env)
    url = env.get("POSBOT_DATABASE_URL", "").strip()
    if url:
        return url
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{VAR_DIR / 'posbot.sqlite3'}"


def content_dir(env: dict[str, str] | None = None) -> Path:
    """Folder of the YAML content: ``POSBOT_KB_CONTENT`` or kb/content."""
    env = dict(os.environ if env is None else env)
    value = env.get("POSBOT_KB_CONTENT", "").strip()
    return Path(value) if value else CONTENT_DIR
