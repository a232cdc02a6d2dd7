"""Short-lived state of the WeChat channel, in memory or shared through Redis.

* :class:`WeChatStore`: a small key-value store with expiry and lists; :class:`InMemoryStore` for
  one process, :class:`RedisStore` when several workers or servers share the load
  (``POSBOT_REDIS_URL``).
* :class:`RetryCache`: WeChat retries a message it got no answer for; the first request claims
  its MsgId, the retries get the stored answer (``dedupe:<openid>:<msgid>``).
* :class:`MerchantState`: each merchant's numbered menu (``menu:<openid>``) and the unread pages
  of a long answer (``pages:<openid>``).

Kept messages (``pending:<openid>``) and delivery receipts (``receipt:<id>``) use the same store;
delivery.py owns them. A Redis outage is logged by :class:`RedisOutage`: one WARNING line per kind
of failure, one when Redis answers again; merchants still get answers meanwhile.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from bot.outage import describe
from bot.settings import Settings

from .formatting import parse_menu_choice

logger = logging.getLogger(__name__)

#: How long a MsgId is remembered: WeChat's three retries span about 15 s, keep a wide margin.
DEDUPE_TTL_S = 300.0
#: How long a user's numbered menu and unread pages stay available.
STATE_TTL_S = 1800.0

_PENDING = json.dumps({"pending": True})


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


class WeChatStore(abc.ABC):
    """Small key-value store with expiry.

    ``claim`` is the atomic "first one wins" operation that makes retry deduplication safe when
    several workers receive WeChat's retries of the same message.
    """

    @abc.abstractmethod
    async def claim(self, key: str, value: str, ttl_s: float) -> str | None:
        """Sets ``key`` if absent. Returns None when we claimed it, else the existing value."""
        raise NotImplementedError

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """Returns the live value of ``key`` or None."""
        raise NotImplementedError

    @abc.abstractmethod
    async def set(self, key: str, value: str, ttl_s: float) -> None:
        """Stores ``value`` under ``key`` for ``ttl_s`` seconds."""
        raise NotImplementedError

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Removes ``key`` if present."""
        raise NotImplementedError

    @abc.abstractmethod
    async def append_list(self, key: str, values: list[str], ttl_s: float, *, front: bool = False) -> bool:
        """Adds ``values`` at the end of the list ``key`` (``front``: before its items, in
        order) and restarts its expiry; False when they could not be stored."""
        raise NotImplementedError

    @abc.abstractmethod
    async def take_list(self, key: str) -> list[str]:
        """Returns and removes the list ``key`` in one step, so its items are taken once."""
        raise NotImplementedError

    @abc.abstractmethod
    async def list_length(self, key: str) -> int:
        """How many items the list ``key`` holds (0 when absent)."""
        raise NotImplementedError

    async def pop_first(self, key: str, ttl_s: float) -> str | None:
        """Removes and returns the first item of the JSON list of strings stored (``set``)
        under ``key``, keeping the rest for ``ttl_s``; None when there is none.

        The default reads and writes back: atomic only where nothing runs in between (the
        in-memory store). A shared store must do it in one step (RedisStore).
        """
        raw = await self.get(key)
        try:
            items = json.loads(raw) if raw else []
        except ValueError:
            logger.warning("Discarding unreadable WeChat state %s", key)
            items = []
        if not isinstance(items, list) or not items:
            if raw:
                await self.delete(key)
            return None
        if len(items) > 1:
            await self.set(key, json.dumps(items[1:], ensure_ascii=False), ttl_s)
        else:
            await self.delete(key)
        return str(items[0])


class InMemoryStore(WeChatStore):
    """Per-process store; fine for a single worker. Bounded so a flood cannot exhaust memory."""

    def __init__(self, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, tuple[float, str]] = {}
        self._max_entries = max_entries
        self._clock = clock

    def _live(self, key: str) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= self._clock():
            del self._data[key]
            return None
        return value

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expires_at, _) in self._data.items() if expires_at <= now]:
            del self._data[key]
        while len(self._data) >= self._max_entries:
            del self._data[next(iter(self._data))]

    def _put(self, key: str, value: str, ttl_s: float) -> None:
        if key not in self._data and len(self._data) >= self._max_entries:
            self._evict()
        self._data[key] = (self._clock() + ttl_s, value)

    async def claim(self, key: str, value: str, ttl_s: float) -> str | None:
        existing = self._live(key)
        if existing is not None:
            return existing
        self._put(key, value, ttl_s)
        return None

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        self._put(key, value, ttl_s)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    # Lists are JSON arrays here; no await between read and write, so each call is atomic.
    def _list(self, key: str) -> list[str]:
        raw = self._live(key)
        return [str(v) for v in json.loads(raw)] if raw else []

    async def append_list(self, key: str, values: list[str], ttl_s: float, *, front: bool = False) -> bool:
        items = self._list(key)
        items = [*values, *items] if front else [*items, *values]
        self._put(key, json.dumps(items, ensure_ascii=False), ttl_s)
        return True

    async def take_list(self, key: str) -> list[str]:
        items = self._list(key)
        self._data.pop(key, None)
        return items

    async def list_length(self, key: str) -> int:
        return len(self._list(key))


class RedisOutage:
    """Says that Redis is unreachable without a traceback per message.

    The first failure of each kind logs one WARNING line (what failed, why, and what merchants
    lose meanwhile); later failures of that kind only log at DEBUG, each with its traceback. The
    first call that works again logs one WARNING line, and the next outage is reported afresh.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._failures: dict[str, int] = {}  # kind -> failed calls since Redis last answered

    def failed(self, kind: str, consequence: str, call: str, error: BaseException) -> None:
        logger.debug("Redis call for %s failed: %s", self._what, call, exc_info=error)
        seen = self._failures.get(kind, 0)
        self._failures[kind] = seen + 1
        if not seen:
            logger.warning(
                "Redis unavailable for %s (%s); until it is back, %s",
                self._what,
                describe(error),
                consequence,
            )

    def answered(self) -> None:
        if self._failures:
            logger.warning(
                "Redis reachable again for %s (%d calls had failed)", self._what, sum(self._failures.values())
            )
            self._failures.clear()


#: Kinds of failure of :class:`RedisStore` calls, and what merchants lose meanwhile.
_CLAIM, _READ, _WRITE, _KEEP, _KEPT = "claim", "read", "write", "keep", "kept"
_LOSSES = {
    _CLAIM: "WeChat's retries are not recognised (a retried message may be answered twice)",
    _READ: "numbered menus, unread pages and delivery receipts cannot be read",
    _WRITE: "numbered menus, unread pages and delivery receipts are not stored",
    _KEEP: "messages WeChat does not take now cannot be kept for the merchant's next message",
    _KEPT: "messages kept for merchants cannot be read or counted (they stay in Redis)",
}


class RedisStore(WeChatStore):
    """Shared store for several workers or servers (``POSBOT_REDIS_URL``).

    Redis outages are treated as "nothing stored": merchants still get answers, only retry
    deduplication, menu/page memory and kept messages are lost meanwhile. They are logged by
    :class:`RedisOutage` (one line per kind of failure, one when Redis is back).
    """

    def __init__(self, client: Any, prefix: str = "posbot:wechat:") -> None:
        self._redis = client
        self._prefix = prefix
        self._outage = RedisOutage("the WeChat channel's state")

    @classmethod
    def from_url(cls, url: str, prefix: str = "posbot:wechat:") -> RedisStore:
        """Creates a lazily connecting redis.asyncio client (no I/O until first use)."""
        import redis.asyncio as redis_asyncio

        return cls(redis_asyncio.Redis.from_url(url, decode_responses=True), prefix)

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _failed(self, kind: str, call: str, key: str, error: RedisError) -> None:
        self._outage.failed(kind, _LOSSES[kind], f"{call} {key}", error)

    # pop_first in one step: two servers answering "继续" of one merchant at the same moment
    # must not show the same page twice.
    _POP_FIRST = """
    local raw = redis.call('GET', KEYS[1])
    if not raw then return false end
    local ok, items = pcall(cjson.decode, raw)
    if not ok or type(items) ~= 'table' or #items == 0 then
      redis.call('DEL', KEYS[1])
      return false
    end
    local first = table.remove(items, 1)
    if #items == 0 then
      redis.call('DEL', KEYS[1])
    else
      redis.call('SET', KEYS[1], cjson.encode(items), 'PX', ARGV[1])
    end
    return tostring(first)
    """

    async def pop_first(self, key: str, ttl_s: float) -> str | None:
        try:
            first = await self._redis.eval(self._POP_FIRST, 1, self._key(key), _ms(ttl_s))
        except RedisError as error:
            self._failed(_READ, "pop_first", key, error)
            return None
        self._outage.answered()
        if isinstance(first, bytes):
            first = first.decode("utf-8")
        return first if isinstance(first, str) else None

    async def claim(self, key: str, value: str, ttl_s: float) -> str | None:
        try:
            for _ in range(2):  # the existing key may expire between SET NX and GET
                if await self._redis.set(self._key(key), value, nx=True, px=_ms(ttl_s)):
                    self._outage.answered()
                    return None
                existing = await self._redis.get(self._key(key))
                if existing is not None:
                    self._outage.answered()
                    return str(existing)
        except RedisError as error:
            self._failed(_CLAIM, "claim", key, error)
        return None

    async def get(self, key: str) -> str | None:
        try:
            value = await self._redis.get(self._key(key))
        except RedisError as error:
            self._failed(_READ, "get", key, error)
            return None
        self._outage.answered()
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        try:
            await self._redis.set(self._key(key), value, px=_ms(ttl_s))
        except RedisError as error:
            self._failed(_WRITE, "set", key, error)
            return
        self._outage.answered()

    async def delete(self, key: str) -> None:
        try:
            await self._redis.delete(self._key(key))
        except RedisError as error:
            self._failed(_WRITE, "delete", key, error)
            return
        self._outage.answered()

    async def append_list(self, key: str, values: list[str], ttl_s: float, *, front: bool = False) -> bool:
        if not values:
            return True
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                if front:  # LPUSH puts each value before the previous one: reverse to keep order
                    pipe.lpush(self._key(key), *reversed(values))
                else:
                    pipe.rpush(self._key(key), *values)
                pipe.pexpire(self._key(key), _ms(ttl_s))
                await pipe.execute()
        except RedisError as error:
            self._failed(_KEEP, "append_list", key, error)
            return False
        self._outage.answered()
        return True

    async def take_list(self, key: str) -> list[str]:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(self._key(key), 0, -1)
                pipe.delete(self._key(key))
                items, _ = await pipe.execute()
        except RedisError as error:
            self._failed(_KEPT, "take_list", key, error)
            return []
        self._outage.answered()
        return [str(item) for item in items or []]

    async def list_length(self, key: str) -> int:
        try:
            length = int(await self._redis.llen(self._key(key)))
        except RedisError as error:
            self._failed(_KEPT, "list_length", key, error)
            return 0
        self._outage.answered()
        return length


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def build_store(settings: Settings) -> WeChatStore:
    """Redis when ``POSBOT_REDIS_URL`` is set (shared by every worker and server), else memory."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url)
    return InMemoryStore()


# --------------------------------------------------------------------------------------------
# What the store keeps for the conversation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """WeChat's retry of a message already claimed; ``content`` is the answer it got, or None
    while the first request is still being answered (WeChat then gets "success")."""

    content: str | None


class RetryCache:
    """Answers each message once: WeChat retries get the stored answer, never a second run.

    Messages are identified by sender and MsgId (events: sender and CreateTime); one without
    either is answered every time.
    """

    def __init__(self, store: WeChatStore, ttl_s: float = DEDUPE_TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s

    @staticmethod
    def _key(sender: str, dedupe_id: str) -> str:
        return f"dedupe:{sender}:{dedupe_id}"

    async def claim(self, sender: str, dedupe_id: str | None) -> Retry | None:
        """None when this request is the first (it must answer), else the :class:`Retry`."""
        if dedupe_id is None:
            return None
        previous = await self._store.claim(self._key(sender, dedupe_id), _PENDING, self._ttl_s)
        return None if previous is None else Retry(_replayed_content(previous))

    async def remember(self, sender: str, dedupe_id: str | None, content: str | None) -> None:
        """Stores the answer for WeChat's retries of the message."""
        if dedupe_id is not None:
            await self._store.set(self._key(sender, dedupe_id), json.dumps({"content": content}), self._ttl_s)


def _replayed_content(stored: str) -> str | None:
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("pending"):
        return None
    content = value.get("content")
    return content if isinstance(content, str) else None


class MerchantState:
    """Each merchant's numbered menu (the payloads of "1", "2", …) and unread pages ("继续")."""

    def __init__(self, store: WeChatStore, ttl_s: float = STATE_TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s

    async def save(self, openid: str, menu: list[str], pages: list[str]) -> None:
        """After a new answer: its menu and unread pages replace the earlier ones."""
        for key, values in ((f"menu:{openid}", menu), (f"pages:{openid}", pages)):
            if values:
                await self._set_list(key, values)
            else:
                await self._store.delete(key)

    async def add(self, openid: str, menu: list[str], pages: list[str]) -> None:
        """After the channel's own reply with kept messages: a menu among them replaces the
        earlier one; their unread pages come before the pages still unread."""
        if menu:
            await self._set_list(f"menu:{openid}", menu)
        if pages:
            await self._set_list(f"pages:{openid}", pages + await self._load(f"pages:{openid}"))

    async def menu_payload(self, openid: str, text: str) -> str | None:
        """Maps "1"/"2"/... to the payload of the user's last numbered menu, if there is one."""
        choice = parse_menu_choice(text)
        if choice is None:
            return None
        menu = await self._load(f"menu:{openid}")
        if 1 <= choice <= len(menu):
            return menu[choice - 1]
        return None

    async def next_page(self, openid: str) -> str | None:
        """Takes the next unread page (once, also with several servers); None when none is left."""
        return await self._store.pop_first(f"pages:{openid}", self._ttl_s)

    async def _set_list(self, key: str, values: list[str]) -> None:
        await self._store.set(key, json.dumps(values, ensure_ascii=False), self._ttl_s)

    async def _load(self, key: str) -> list[str]:
        raw = await self._store.get(key)
        if not raw:
            return []
        try:
            values = json.loads(raw)
        except ValueError:
            logger.warning("Discarding unreadable WeChat state %s", key)
            return []
        return [str(v) for v in values] if isinstance(values, list) else []
