"""The production configuration: conversations in PostgreSQL, locks in Redis, KB in PostgreSQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from ops.launcher import PROJECT_ROOT, start_bot

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
PG = "postgresql://postgres@127.0.0.1:5432"


def test_conversation_is_stored_in_postgres_with_redis_locks(tmp_path: Path) -> None:
    tracker_db = f"posbot_tracker_{uuid.uuid4().hex[:8]}"
    kb_schema = f"posbot_kb_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{kb_schema}"'))
    env = {
        "POSBOT_PG_HOST": "127.0.0.1",
        "POSBOT_PG_PORT": "5432",
        "POSBOT_PG_DB": tracker_db,
        "POSBOT_PG_USER": "postgres",
        "POSBOT_PG_PASSWORD": "",
        "POSBOT_PG_LOGIN_DB": "test",
        "POSBOT_REDIS_HOST": "127.0.0.1",
        "POSBOT_REDIS_PORT": "6379",
        "POSBOT_REDIS_DB": "14",
        "POSBOT_DATABASE_URL": f"{PG}/test?options=-csearch_path%3D{kb_schema}",
    }
    bot = start_bot(tmp_path, env=env, endpoints=PROJECT_ROOT / "bot" / "endpoints.production.yml")
    try:
        assert "95016" in bot.texts("prod-merchant", "拉卡拉客服电话多少")
        assert "签到" in bot.texts("prod-merchant", "刷卡显示A0")
    finally:
        bot.stop()
    try:
        tracker = create_engine(f"{PG}/{tracker_db}")
        with tracker.connect() as conn:
            texts = (
                conn.execute(
                    text("SELECT data FROM events WHERE sender_id = 'prod-merchant' AND type_name = 'user'")
                )
                .scalars()
                .all()
            )
        tracker.dispose()
        assert "拉卡拉客服电话多少" in [json.loads(t)["text"] for t in texts]
        assert redis.Redis(host="127.0.0.1", port=6379, db=14).ping()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{kb_schema}" CASCADE'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{tracker_db}"'))
        admin.dispose()
