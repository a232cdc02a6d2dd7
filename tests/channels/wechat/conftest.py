"""Fixtures of the WeChat channel's tests (helpers without fixtures are in kit.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from bot.channels.wechat import RedisStore
from tests.channels.wechat.kit import REDIS_URL

if TYPE_CHECKING:
    from tests.bot.outage_kit import Relay


@pytest_asyncio.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    """A RedisStore on the test Redis (``POSBOT_TEST_REDIS_URL``) under a prefix of its own,
    removed afterwards; the test is skipped when that Redis is not reachable."""
    redis_asyncio = pytest.importorskip("redis.asyncio")
    client = redis_asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        await client.connection_pool.disconnect()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"posbot-test-wechat:{uuid.uuid4().hex}:"
    yield RedisStore(client, prefix=prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.connection_pool.disconnect()


@pytest_asyncio.fixture
async def relayed_redis(redis_store: RedisStore) -> AsyncIterator[tuple[RedisStore, Relay]]:
    """A RedisStore reaching the test Redis through a relay the test can cut (an outage) and
    restore; its keys are those of ``redis_store`` (same prefix), so they are removed too."""
    from tests.bot.outage_kit import Relay  # loads Rasa's stores: only for the tests that cut

    where = urlsplit(REDIS_URL)
    relay = Relay((where.hostname or "127.0.0.1", where.port or 6379))
    database = where.path.lstrip("/") or "0"
    store = RedisStore.from_url(f"redis://127.0.0.1:{relay.port}/{database}", prefix=redis_store._prefix)
    try:
        yield store, relay
    finally:
        relay.cut()
        await store._redis.connection_pool.disconnect()
