"""Two Rasa servers, one conversation, messages at the same moment: handled one after another.

Production runs several Rasa servers behind a load balancer, sharing PostgreSQL (trackers) and
Redis (conversation locks, bot/lock_store.py). Here two Rasa servers (one action server) use
bot/endpoints.production.yml with a fresh PostgreSQL database and a Redis key prefix of their
own; four threads (two per server) send the messages of ONE conversation in rounds, all four of
a round at the same moment. The tracker in PostgreSQL must then hold every message exactly once,
each followed by exactly the reply its sender received before the next message (no
interleaving), in the order the lock granted the tickets (``POSBOT_LOCK_TRACE`` logs grants).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from ops.launcher import PROJECT_ROOT, start_bot

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_DB = 14
SENDER = "lock-live-merchant"
# thread → its messages, sent one after another (each waits for its reply); threads 0, 1 talk
# to server A, threads 2, 3 to server B. All distinct, so each can be found exactly once.
MESSAGES = [
    ["拉卡拉客服电话多少", "刷卡显示A0"],
    ["POS机怎么签到", "刷卡显示51"],
    ["你好", "客服电话是多少"],
    ["怎么签到", "刷卡显示A0是什么意思"],
]
GRANTED = re.compile(rf"lock {SENDER}: ticket (\d+) granted after (\d+) poll")


def _said(texts: list[str]) -> str:
    """What the merchant reads, however the channel split it into messages."""
    return "".join("".join(texts).split())


def _texts(messages: list[dict]) -> list[str]:
    return [m.get("text", "") for m in messages if m.get("text")]


def test_two_servers_handle_one_conversation_in_lock_order(tmp_path: Path) -> None:
    tracker_db = f"posbot_locks_{uuid.uuid4().hex[:8]}"
    prefix = f"locktest{uuid.uuid4().hex[:8]}"
    endpoints = tmp_path / "endpoints.yml"
    production = (PROJECT_ROOT / "bot" / "endpoints.production.yml").read_text("utf-8")
    assert "key_prefix: posbot" in production
    endpoints.write_text(production.replace("key_prefix: posbot", f"key_prefix: {prefix}"), encoding="utf-8")
    env = {
        "POSBOT_PG_HOST": "127.0.0.1",
        "POSBOT_PG_PORT": "5432",
        "POSBOT_PG_DB": tracker_db,
        "POSBOT_PG_USER": "postgres",
        "POSBOT_PG_PASSWORD": "",
        "POSBOT_PG_LOGIN_DB": "test",
        "POSBOT_REDIS_HOST": "127.0.0.1",
        "POSBOT_REDIS_PORT": "6379",
        "POSBOT_REDIS_DB": str(REDIS_DB),
        "POSBOT_LOCK_TRACE": "1",
    }
    red = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    servers = []
    try:
        servers.append(start_bot(tmp_path / "a", env=env, endpoints=endpoints))
        servers.append(start_bot(tmp_path / "b", env=env, endpoints=endpoints, share_actions_of=servers[0]))
        replies: dict[str, list[str]] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(MESSAGES), timeout=120)

        def talk(index: int) -> None:
            server = servers[index // 2]
            try:
                for message in MESSAGES[index]:
                    barrier.wait()
                    replies[message] = _texts(server.send(SENDER, message, timeout=120))
            except BaseException as error:  # reported by the main thread
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=talk, args=(i,)) for i in range(len(MESSAGES))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert all(replies.get(m) for ms in MESSAGES for m in ms), f"a message got no reply: {replies}"

        tracker = create_engine(f"{PG}/{tracker_db}")
        with tracker.connect() as conn:
            rows = conn.execute(
                text("SELECT type_name, action_name, data FROM events WHERE sender_id = :s ORDER BY id"),
                {"s": SENDER},
            ).all()
        tracker.dispose()
        # The conversation as stored: turns = a user message and everything up to the next one.
        turns: list[tuple[str, list[str], list[str]]] = []  # (message, bot texts, actions)
        for type_name, action_name, data in rows:
            event = json.loads(data)
            if type_name == "user":
                turns.append((event["text"], [], []))
            elif turns and type_name == "bot" and event.get("text"):
                turns[-1][1].append(event["text"])
            elif turns and type_name == "action":
                turns[-1][2].append(action_name)
        sent = [m for ms in MESSAGES for m in ms]
        stored = [message for message, _, _ in turns]
        assert sorted(stored) == sorted(sent), f"each message exactly once: {stored}"
        for message, said, actions in turns:
            # its own reply, complete, before the next message; the turn ends listening
            assert _said(said) == _said(replies[message]), (message, said, replies[message])
            assert actions and actions[-1] == "action_listen", (message, actions)
        for messages in MESSAGES:  # each sender's messages in the order it sent them
            assert [m for m in stored if m in messages] == messages

        # The order the lock granted: tickets in increasing order, server by server.
        grants: list[tuple[int, int, str]] = []  # (ticket, polls, server)
        for server, name in zip(servers, "ab", strict=True):
            for match in GRANTED.finditer((server.tmp / "rasa.log").read_text("utf-8")):
                grants.append((int(match[1]), int(match[2]), name))
        grants.sort()
        assert len(grants) == len(sent), grants
        server_of = {m: "ab"[i // 2] for i, ms in enumerate(MESSAGES) for m in ms}
        assert [server for _, _, server in grants] == [server_of[m] for m in stored]
        assert any(polls > 0 for _, polls, _ in grants), "no message had to wait: no race tested"
        assert {s for _, _, s in grants} == {"a", "b"}
        assert not red.exists(f"{prefix}:ticketlock:{{{SENDER}}}:tickets"), "tickets released"
    finally:
        for server in servers:
            server.stop()
        keys = list(red.scan_iter(f"{prefix}:*"))
        if keys:
            red.delete(*keys)
        red.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{tracker_db}" WITH (FORCE)'))
        admin.dispose()
