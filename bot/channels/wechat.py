"""WeChat Official Account (微信公众号) input channel.

WeChat pushes every message a follower sends to ``POST /webhooks/wechat/webhook`` as a small XML
document and shows whatever XML we answer with ("passive reply").  The protocol has a few sharp
edges that this module handles so the rest of the bot can stay channel-agnostic:

* Authenticity: the only proof that a request comes from WeChat is a SHA-1 signature over the
  shared Token (plain mode) or over the Token and the ciphertext (safe mode, AES).  Anything that
  fails the check is refused with 403 before the bot sees it.
* Hostile input: the body is untrusted XML, so it is size-limited and parsed with defusedxml.
* Time: WeChat waits 5 s, then retries the same message three times.  We answer within a budget
  (``WECHAT_REPLY_BUDGET_S``), deduplicate retries by MsgId and, when the bot is slow, answer
  "success" and deliver the late answer through the customer-service message API (客服消息).
* Text only: WeChat text replies have no buttons and at most 2048 bytes, so bot buttons become a
  numbered menu ("1"/"2" replies are mapped back to payloads) and long answers are paged
  ("继续" shows the next page).  Per-user menu and page state lives in the same store as the
  retry cache: in memory, or Redis when several workers/servers share the load.
* Pushing: what Rasa sends outside a merchant's turn (an agent's reply from the staff console,
  "我回来了" on release) goes out as a customer-service message (``get_output_channel``).
  WeChat allows that only within 48 hours of the merchant's last message (errcode 45015) and
  only with the AppSecret; otherwise the message is kept in the same store and comes first in
  the passive reply to the merchant's next message. The outcome is recorded for the console
  (bot/channels/delivery.py).

The Chinese texts the channel sends on its own live in ``wechat_texts.yml`` next to this file.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as defused_fromstring
from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    OutputChannel,
    UserMessage,
)
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

from bot.channels import delivery
from bot.channels.delivery import RECEIPT_KEY, Delivery, agent_said
from bot.channels.limits import LimitedBlueprint
from bot.handoff_gate import gate
from bot.outage import guard
from bot.settings import Settings

logger = logging.getLogger(__name__)

CHANNEL_NAME = "wechat"
TEXTS_PATH = Path(__file__).with_name("wechat_texts.yml")

#: WeChat's "I got it, no reply" answer; also what we return while a retry's original is running.
SUCCESS = "success"
#: Largest body we accept; real WeChat pushes are well under 4 KB.
MAX_BODY_BYTES = 64 * 1024
#: WeChat's limit for the Content of a text reply (UTF-8 bytes).
CONTENT_LIMIT_BYTES = 2048
#: How long a MsgId is remembered: WeChat's three retries span about 15 s, keep a wide margin.
DEDUPE_TTL_S = 300.0
#: How long a user's numbered menu and unread pages stay available.
STATE_TTL_S = 1800.0
#: OpenIDs are 28 characters; anything much longer is not from WeChat and must not become a key.
MAX_ID_CHARS = 128
#: How long a message WeChat would not let us push waits for the merchant's next message.
PENDING_TTL_S = 7 * 24 * 3600.0
#: How long the outcome of a push is kept for the staff console to read (it reads it at once).
RECEIPT_TTL_S = 600.0
#: WeChat's answers to a customer-service message: not within 48 hours of the merchant's last
#: message (or the merchant unfollowed); too many messages since the merchant last wrote.
ERRCODE_WINDOW_CLOSED = 45015
ERRCODE_LIMIT = 45047

_PENDING = json.dumps({"pending": True})
_MENU_CHOICE = re.compile(r"^([0-9]{1,2})\s*[.、)。]?$")
_TRAILING_PUNCTUATION = " \t\r\n.。!！~～…,，"
_XML_INVALID_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SENTENCE_ENDS = "。！？；!?;"

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


# --------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeChatTexts:
    """What the channel says by itself; loaded from YAML so wording changes need no code change."""

    unsupported: str
    bot_error: str
    menu_header: str
    continuation_marker: str
    continue_keywords: tuple[str, ...]
    nothing_more: str
    subscribe_payload: str
    menu_click_payloads: dict[str, str]
    agent_prefix: str

    @classmethod
    def load(cls, path: Path = TEXTS_PATH) -> WeChatTexts:
        """Reads and validates the texts file; a missing key is a packaging bug, so fail fast."""
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        missing = [f.name for f in dataclasses.fields(cls) if not data.get(f.name)]
        if missing:
            raise ValueError(f"{path} lacks required keys: {', '.join(missing)}")
        try:
            str(data["agent_prefix"]).format(name="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{path}: agent_prefix may only use the {{name}} placeholder") from exc
        return cls(
            unsupported=str(data["unsupported"]).strip(),
            bot_error=str(data["bot_error"]).strip(),
            menu_header=str(data["menu_header"]).strip(),
            continuation_marker=str(data["continuation_marker"]).strip(),
            continue_keywords=tuple(str(k).strip() for k in data["continue_keywords"]),
            nothing_more=str(data["nothing_more"]).strip(),
            subscribe_payload=str(data["subscribe_payload"]).strip(),
            menu_click_payloads={
                str(k).strip(): str(v).strip()
                for k, v in data["menu_click_payloads"].items()
            },
            agent_prefix=str(data["agent_prefix"]).strip(),
        )

    def agent_line(self, name: str) -> str:
        """The line above an agent's words, naming the agent."""
        return self.agent_prefix.format(name=name.strip())


# --------------------------------------------------------------------------------------------
# Store: retry cache + per-user menu / page state
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
    async def append_list(
        self, key: str, values: list[str], ttl_s: float, *, front: bool = False
    ) -> bool:
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

    def __init__(
        self, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
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
        for key in [
            k for k, (expires_at, _) in self._data.items() if expires_at <= now
        ]:
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

    async def append_list(
        self, key: str, values: list[str], ttl_s: float, *, front: bool = False
    ) -> bool:
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


class RedisStore(WeChatStore):
    """Shared store for several workers or servers (``POSBOT_REDIS_URL``).

    Redis outages are logged and treated as "nothing stored": merchants still get answers, only
    retry deduplication and menu/page memory are lost meanwhile.
    """

    def __init__(self, client: Any, prefix: str = "posbot:wechat:") -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "posbot:wechat:") -> RedisStore:
        """Creates a lazily connecting redis.asyncio client (no I/O until first use)."""
        import redis.asyncio as redis_asyncio

        return cls(redis_asyncio.Redis.from_url(url, decode_responses=True), prefix)

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

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
        from redis.exceptions import RedisError

        try:
            first = await self._redis.eval(self._POP_FIRST, 1, self._key(key), _ms(ttl_s))
        except RedisError:
            logger.exception("Redis unavailable; cannot read WeChat state %s", key)
            return None
        if isinstance(first, bytes):
            first = first.decode("utf-8")
        return first if isinstance(first, str) else None

    async def claim(self, key: str, value: str, ttl_s: float) -> str | None:
        from redis.exceptions import RedisError

        try:
            for _ in range(2):  # the existing key may expire between SET NX and GET
                if await self._redis.set(self._key(key), value, nx=True, px=_ms(ttl_s)):
                    return None
                existing = await self._redis.get(self._key(key))
                if existing is not None:
                    return str(existing)
        except RedisError:
            logger.exception(
                "Redis unavailable; WeChat retry deduplication is off for %s", key
            )
        return None

    async def get(self, key: str) -> str | None:
        from redis.exceptions import RedisError

        try:
            value = await self._redis.get(self._key(key))
        except RedisError:
            logger.exception("Redis unavailable; cannot read WeChat state %s", key)
            return None
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(self._key(key), value, px=_ms(ttl_s))
        except RedisError:
            logger.exception("Redis unavailable; cannot store WeChat state %s", key)

    async def delete(self, key: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.delete(self._key(key))
        except RedisError:
            logger.exception("Redis unavailable; cannot delete WeChat state %s", key)

    async def append_list(
        self, key: str, values: list[str], ttl_s: float, *, front: bool = False
    ) -> bool:
        from redis.exceptions import RedisError

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
        except RedisError:
            logger.exception("Redis unavailable; cannot keep WeChat messages under %s", key)
            return False
        return True

    async def take_list(self, key: str) -> list[str]:
        from redis.exceptions import RedisError

        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(self._key(key), 0, -1)
                pipe.delete(self._key(key))
                items, _ = await pipe.execute()
        except RedisError:
            logger.exception("Redis unavailable; cannot read WeChat messages under %s", key)
            return []
        return [str(item) for item in items or []]

    async def list_length(self, key: str) -> int:
        from redis.exceptions import RedisError

        try:
            return int(await self._redis.llen(self._key(key)))
        except RedisError:
            logger.exception("Redis unavailable; cannot count WeChat messages under %s", key)
            return 0


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# --------------------------------------------------------------------------------------------
# Incoming XML
# --------------------------------------------------------------------------------------------


class Rejected(Exception):
    """A request we refuse; carries the HTTP status so every failure becomes a clear 4xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_xml_fields(body: bytes) -> dict[str, str]:
    """Parses a WeChat XML document into its top-level fields.

    DTDs are forbidden outright (WeChat never sends one), which also stops entity-expansion
    bombs and external entities before any expansion happens.
    """
    try:
        root = defused_fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise Rejected(400, f"forbidden XML construct ({type(exc).__name__})") from exc
    except (ParseError, ValueError, UnicodeError) as exc:
        raise Rejected(400, "malformed XML") from exc
    if root.tag != "xml":
        raise Rejected(400, "unexpected XML root element")
    return {
        child.tag: (child.text or "").strip()
        for child in root
        if isinstance(child.tag, str)
    }


@dataclass(frozen=True)
class WeChatMessage:
    """The fields of a pushed message or event that the channel uses."""

    to_user: str
    from_user: str
    msg_type: str
    create_time: str = ""
    msg_id: str = ""
    content: str = ""
    recognition: str = ""
    event: str = ""
    event_key: str = ""

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> WeChatMessage:
        """Validates the envelope; a message without sender, receiver or type is unusable."""
        message = cls(
            to_user=fields.get("ToUserName", ""),
            from_user=fields.get("FromUserName", ""),
            msg_type=fields.get("MsgType", "").lower(),
            create_time=fields.get("CreateTime", ""),
            msg_id=fields.get("MsgId", ""),
            content=fields.get("Content", ""),
            recognition=fields.get("Recognition", ""),
            event=fields.get("Event", "").lower(),
            event_key=fields.get("EventKey", ""),
        )
        if not (message.to_user and message.from_user and message.msg_type):
            raise Rejected(400, "ToUserName, FromUserName and MsgType are required")
        if (
            max(len(message.to_user), len(message.from_user), len(message.msg_id))
            > MAX_ID_CHARS
        ):
            raise Rejected(400, "identifier too long")
        return message

    def text_input(self) -> str | None:
        """What the user "said": text, or voice transcribed by WeChat; None for anything else."""
        if self.msg_type == "text" and self.content.strip():
            return self.content.strip()
        if self.msg_type == "voice" and self.recognition.strip():
            return self.recognition.strip()
        return None

    def dedupe_id(self) -> str | None:
        """MsgId for messages; events have none, so WeChat's docs say FromUserName+CreateTime."""
        if self.msg_id:
            return self.msg_id
        if self.create_time:
            return f"event-{self.create_time}"
        return None


# --------------------------------------------------------------------------------------------
# Outgoing text
# --------------------------------------------------------------------------------------------


def format_bot_messages(
    messages: list[dict[str, Any]], texts: WeChatTexts
) -> tuple[str, list[str]]:
    """Turns collected bot messages into one WeChat text and the payloads of its numbered menu.

    Buttons are numbered across the whole answer so "1", "2", ... are never ambiguous.
    """
    blocks: list[str] = []
    payloads: list[str] = []
    for message in messages:
        lines = [
            str(message[k]).strip()
            for k in ("text", "image", "attachment")
            if message.get(k)
        ]
        menu_lines = _menu_lines(message.get("buttons") or [], payloads)
        if menu_lines:
            lines.append("\n".join([texts.menu_header, *menu_lines]))
        if message.get("custom"):
            logger.debug(
                "WeChat cannot show custom JSON; skipped: %s", message["custom"]
            )
        if lines:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks), payloads


def wechat_message(message: Mapping[str, Any], texts: WeChatTexts) -> dict[str, Any] | None:
    """One message of the bot (or of an agent) as WeChat can show it, or None when nothing shows.

    An agent's words (custom ``{"posbot": {"agent_message": …}}``) become text under a line
    naming the agent; other custom JSON (signals for the website widget) is dropped.
    """
    said = agent_said(message.get("custom"))
    if said is not None:
        if not said["text"].strip():
            return None
        return {"text": f"{texts.agent_line(said['name'])}\n{said['text'].strip()}"}
    shown: dict[str, Any] = {
        k: str(message[k]) for k in ("text", "image", "attachment") if message.get(k)
    }
    buttons = [
        {"title": str(b.get("title") or ""), "payload": str(b.get("payload") or "")}
        for b in message.get("buttons") or []
        if isinstance(b, dict)
    ]
    if buttons:
        shown["buttons"] = buttons
    return shown or None


def _menu_lines(buttons: list[dict[str, Any]], payloads: list[str]) -> list[str]:
    lines: list[str] = []
    for button in buttons:
        title = str(button.get("title") or "").strip()
        payload = str(button.get("payload") or title).strip()
        if not title or not payload:
            continue
        payloads.append(payload)
        lines.append(f"{len(payloads)}. {title}")
    return lines


def paginate(text: str, limit_bytes: int, marker: str) -> list[str]:
    """Cuts ``text`` into pages of at most ``limit_bytes`` UTF-8 bytes, marker included.

    Every page but the last ends with the continuation marker.  Cuts happen at a character
    boundary, preferably after a line break or a sentence end in the second half of the page.
    """
    suffix = "\n" + marker
    budget = limit_bytes - len(suffix.encode("utf-8"))
    if budget < 8:
        raise ValueError("continuation marker leaves no room for content")
    pages: list[str] = []
    rest = text.strip()
    while len(rest.encode("utf-8")) > limit_bytes:
        head = _page_head(rest, budget)
        pages.append(head.rstrip() + suffix)
        rest = rest[len(head) :].lstrip()
    if rest:
        pages.append(rest)
    return pages


def _page_head(text: str, budget: int) -> str:
    size = 0
    end = 0
    for index, char in enumerate(text):
        size += len(char.encode("utf-8"))
        if size > budget:
            break
        end = index + 1
    prefix = text[:end]
    for separators in ("\n", _SENTENCE_ENDS):
        cut = max(prefix.rfind(sep) for sep in separators)
        if cut >= len(prefix) // 2 and prefix[: cut + 1].strip():
            return prefix[: cut + 1]
    return prefix


def parse_menu_choice(text: str) -> int | None:
    """Reads "1", "１", "1.", "1、", "1。" ... as menu number 1; None when the text is not a number."""
    match = _MENU_CHOICE.match(unicodedata.normalize("NFKC", text).strip())
    return int(match.group(1)) if match else None


def _normalize_command(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().rstrip(_TRAILING_PUNCTUATION)


def _xml_safe(value: str) -> str:
    """Keeps a value valid inside wechatpy's CDATA sections (it does not escape "]]>")."""
    return _XML_INVALID_CHARS.sub("", value).replace("]]>", "]]]]><![CDATA[>")


# --------------------------------------------------------------------------------------------
# Customer-service client (客服消息)
# --------------------------------------------------------------------------------------------


class _MessageApi(Protocol):
    def send_text(
        self, user_id: str, content: str, account: str | None = None
    ) -> Any: ...


class CustomerServiceClient(Protocol):
    """The part of ``wechatpy.WeChatClient`` we use; tests pass a fake with the same shape."""

    message: _MessageApi


def build_wechat_client(settings: Settings) -> CustomerServiceClient | None:
    """Creates wechatpy's client with a shared access-token cache, or None without a secret.

    The access token is rate-limited by WeChat (2000 fetches a day), so it is cached in Redis
    when several servers run, in memory otherwise.
    """
    if not (settings.wechat_app_id and settings.wechat_app_secret):
        return None
    from wechatpy import WeChatClient
    from wechatpy.session.memorystorage import MemoryStorage
    from wechatpy.session.redisstorage import RedisStorage

    if settings.redis_url:
        import redis

        session: Any = RedisStorage(
            redis.Redis.from_url(settings.redis_url), prefix="posbot:wechatpy"
        )
    else:
        session = MemoryStorage()
    client: CustomerServiceClient = WeChatClient(
        settings.wechat_app_id, settings.wechat_app_secret, session=session, timeout=10
    )
    return client


# --------------------------------------------------------------------------------------------
# The channel
# --------------------------------------------------------------------------------------------

_CREDENTIAL_FIELDS: dict[str, str] = {
    "token": "wechat_token",
    "app_id": "wechat_app_id",
    "aes_key": "wechat_aes_key",
    "encoding_aes_key": "wechat_aes_key",
    "app_secret": "wechat_app_secret",
    "reply_budget_s": "wechat_reply_budget_s",
    "max_age_s": "wechat_max_age_s",
    "redis_url": "redis_url",
}


class WeChatInput(InputChannel):
    """Rasa input channel for a WeChat Official Account (plain, compatible and safe mode)."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> WeChatInput:
        """Uses values given in credentials.yml, falling back to the environment (Settings)."""
        settings = Settings.from_env()
        overrides: dict[str, Any] = {}
        for key, field_name in _CREDENTIAL_FIELDS.items():
            value = (credentials or {}).get(key)
            if value is None or str(value).strip() == "":
                continue
            if field_name in ("wechat_reply_budget_s", "wechat_max_age_s"):
                overrides[field_name] = float(value)
            else:
                overrides[field_name] = str(value).strip()
        return cls(dataclasses.replace(settings, **overrides))

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: WeChatStore | None = None,
        texts: WeChatTexts | None = None,
        wechat_client: CustomerServiceClient | None = None,
        dedupe_ttl_s: float = DEDUPE_TTL_S,
        state_ttl_s: float = STATE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._clock = clock
        self.texts = texts or WeChatTexts.load()
        self.store = store or _build_store(self.settings)
        self.crypto = _build_crypto(self.settings)
        self._wechat_client = wechat_client
        self._wechat_client_built = wechat_client is not None
        self._dedupe_ttl_s = dedupe_ttl_s
        self._state_ttl_s = state_ttl_s
        self._background: set[asyncio.Task[None]] = set()
        if not self.settings.wechat_token:
            logger.warning(
                "WeChat channel mounted without WECHAT_TOKEN: every request gets 403."
            )

    # ---- HTTP -------------------------------------------------------------------------------

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """GET /webhook answers WeChat's URL check, POST /webhook receives messages."""
        on_new_message = gate(on_new_message)  # no silence while waiting for a person
        on_new_message = guard(on_new_message)  # store/lock outage: "请稍后再发一次" (bot/outage.py)
        webhook = LimitedBlueprint("wechat_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            return self._verify_url(request)

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            try:
                return await self._receive(request, on_new_message)
            except Rejected as rejected:
                logger.warning(
                    "WeChat request refused (%s): %s", rejected.status, rejected.reason
                )
                return response.text(rejected.reason, status=rejected.status)

        return webhook

    def _verify_url(self, request: Request) -> HTTPResponse:
        """The one-time check when the server URL is saved in the WeChat console."""
        echostr = request.args.get("echostr", "")
        try:
            self._check_plain_signature(request)
        except Rejected as rejected:
            logger.warning("WeChat URL verification refused: %s", rejected.reason)
            return response.text(rejected.reason, status=rejected.status)
        if not echostr:
            return response.text("missing echostr", status=403)
        return response.text(echostr, content_type="text/plain; charset=utf-8")

    async def _receive(
        self, request: Request, on_new_message: OnNewMessage
    ) -> HTTPResponse:
        _check_body_size(request)
        self._require_token()
        encrypted = request.args.get("encrypt_type", "").lower() == "aes"
        if encrypted and self.crypto is None:
            encrypted = self._accept_compatible_without_key(request)
        if not encrypted:
            self._check_plain_signature(request)
        fields = parse_xml_fields(request.body or b"")
        if encrypted:
            fields = self._decrypt(fields, request)
        self._check_fresh(request)
        message = WeChatMessage.from_fields(fields)
        content = await self._reply_for(message, on_new_message)
        return self._render(message, content, request if encrypted else None)

    # ---- authenticity -----------------------------------------------------------------------

    def _require_token(self) -> str:
        """Without a Token nothing can be authenticated, so everything is refused, loudly."""
        if not self.settings.wechat_token:
            logger.error(
                "WeChat request refused: WECHAT_TOKEN is not configured. Set it to the Token "
                "entered in the WeChat console (基本配置 → 服务器配置)."
            )
            raise Rejected(403, "channel not configured")
        return self.settings.wechat_token

    def _check_plain_signature(self, request: Request) -> None:
        token = self._require_token()
        signature = request.args.get("signature", "")
        timestamp = request.args.get("timestamp", "")
        nonce = request.args.get("nonce", "")
        if not (signature and timestamp and nonce):
            raise Rejected(403, "missing signature")
        try:
            check_signature(token, signature, timestamp, nonce)
        except InvalidSignatureException as exc:
            raise Rejected(403, "invalid signature") from exc

    def _check_fresh(self, request: Request) -> None:
        """Refuse replays: a signed request is only good within ``WECHAT_MAX_AGE_S`` of its time.

        The plain-mode signature covers Token, timestamp and nonce but not the body, so a
        captured signed URL could otherwise carry any message, forever. WeChat sends and
        retries within seconds; 0 turns the check off.
        """
        max_age = self.settings.wechat_max_age_s
        if max_age <= 0:
            return
        try:
            sent = float(request.args.get("timestamp", ""))
        except ValueError as exc:
            raise Rejected(403, "invalid timestamp") from exc
        if abs(self._clock() - sent) > max_age:
            raise Rejected(403, "stale timestamp")

    def _accept_compatible_without_key(self, request: Request) -> bool:
        """Encrypted push but no usable EncodingAESKey: only plain-signed compat mode can work."""
        logger.error(
            "WeChat sent an encrypted message but WECHAT_AES_KEY/WECHAT_APP_ID are missing or "
            "invalid; only the plaintext part of 兼容模式 can be handled. Configure the key or "
            "switch the account to 明文模式."
        )
        self._check_plain_signature(request)
        return False

    def _decrypt(self, envelope: dict[str, str], request: Request) -> dict[str, str]:
        """Checks msg_signature over the ciphertext and decrypts it with wechatpy."""
        assert self.crypto is not None
        encrypted = envelope.get("Encrypt", "")
        if not encrypted:
            raise Rejected(400, "encrypted message without Encrypt field")
        msg_signature = request.args.get("msg_signature", "")
        timestamp = request.args.get("timestamp", "")
        nonce = request.args.get("nonce", "")
        if not (msg_signature and timestamp and nonce):
            raise Rejected(403, "missing msg_signature")
        try:
            plaintext = self.crypto.decrypt_message(
                {"Encrypt": encrypted}, msg_signature, timestamp, nonce
            )
        except InvalidSignatureException as exc:
            raise Rejected(403, "invalid msg_signature") from exc
        # Garbage ciphertext fails in base64, padding, length or app-id checks.
        except Exception as exc:
            raise Rejected(403, "undecryptable message") from exc
        return parse_xml_fields(plaintext.encode("utf-8"))

    # ---- answering --------------------------------------------------------------------------

    async def _reply_for(
        self, message: WeChatMessage, on_new_message: OnNewMessage
    ) -> str | None:
        """Answers once per message; WeChat's retries get the stored answer or "success"."""
        dedupe_id = message.dedupe_id()
        key = f"dedupe:{message.from_user}:{dedupe_id}"
        if dedupe_id is not None:
            previous = await self.store.claim(key, _PENDING, self._dedupe_ttl_s)
            if previous is not None:
                logger.info(
                    "WeChat retry of %s from %s answered from cache",
                    dedupe_id,
                    message.from_user,
                )
                return _replayed_content(previous)
        try:
            content = await self._answer(message, on_new_message)
        except Exception:
            logger.exception("Unexpected failure answering %s", message.from_user)
            content = self.texts.bot_error
        if dedupe_id is not None:
            await self.store.set(
                key, json.dumps({"content": content}), self._dedupe_ttl_s
            )
        return content

    async def _answer(
        self, message: WeChatMessage, on_new_message: OnNewMessage
    ) -> str | None:
        if message.msg_type == "event":
            return await self._answer_event(message, on_new_message)
        text = message.text_input()
        if text is None:
            logger.debug(
                "WeChat %s message from %s is not text",
                message.msg_type,
                message.from_user,
            )
            return await self._with_pending(message.from_user, self.texts.unsupported)
        if _normalize_command(text) in self.texts.continue_keywords:
            return await self._with_pending(
                message.from_user, await self._next_page(message.from_user)
            )
        payload = await self._menu_payload(message.from_user, text)
        return await self._ask_bot(message, payload or text, on_new_message)

    async def _answer_event(
        self, message: WeChatMessage, on_new_message: OnNewMessage
    ) -> str | None:
        """Follow → welcome; menu click → mapped payload; other events need no answer."""
        if message.event == "subscribe":
            return await self._ask_bot(
                message, self.texts.subscribe_payload, on_new_message
            )
        if message.event == "click":
            key = message.event_key.strip()
            payload = self.texts.menu_click_payloads.get(key)
            if payload is None and key.startswith("/"):
                payload = key
            if payload is None:
                logger.warning(
                    "WeChat menu EventKey %r is not mapped in wechat_texts.yml", key
                )
                return await self._with_pending(message.from_user, self.texts.unsupported)
            return await self._ask_bot(message, payload, on_new_message)
        return None

    async def _ask_bot(
        self, message: WeChatMessage, text: str, on_new_message: OnNewMessage
    ) -> str | None:
        """Runs the bot within the reply budget; a late answer goes out via 客服消息 instead."""
        collector = CollectingOutputChannel()
        metadata: dict[str, Any] = {
            "channel": CHANNEL_NAME,
            "msg_type": message.msg_type,
        }
        if message.event:
            metadata["event"] = message.event
        user_message = UserMessage(
            text,
            collector,
            message.from_user,
            input_channel=CHANNEL_NAME,
            metadata=metadata,
        )
        task = asyncio.create_task(_run_bot(on_new_message, user_message))
        done, _ = await asyncio.wait(
            {task}, timeout=self.settings.wechat_reply_budget_s
        )
        if task in done:
            return await self._finish(message.from_user, task.result(), collector)
        logger.info(
            "Bot needs more than %.1fs for %s; answering 'success' and delivering later",
            self.settings.wechat_reply_budget_s,
            message.from_user,
        )
        self._spawn(self._deliver_late(message.from_user, task, collector))
        return None

    async def _finish(
        self, openid: str, succeeded: bool, collector: CollectingOutputChannel
    ) -> str | None:
        """The passive reply: messages kept for this merchant first, then the bot's answer.

        Formats them as one text, remembers its menu and further pages, returns the first page.
        """
        answer = collector.messages if succeeded else [{"text": self.texts.bot_error}]
        messages = await self._take_pending(openid) + self._shown(answer)
        text, payloads = format_bot_messages(messages, self.texts)
        pages = paginate(text, CONTENT_LIMIT_BYTES, self.texts.continuation_marker)
        await self._save_state(openid, menu=payloads, pages=pages[1:])
        if not pages:
            logger.info("Bot sent nothing back to %s", openid)
            return None
        return pages[0]

    async def _with_pending(self, openid: str, own: str | None) -> str | None:
        """A reply the channel makes by itself ("继续", "please write text"), after any kept
        messages; the rest of a long text joins the pages still unread."""
        waiting = await self._take_pending(openid)
        if not waiting:
            return own
        text, payloads = format_bot_messages(waiting, self.texts)
        pages = paginate(
            "\n\n".join(part for part in (text, own) if part),
            CONTENT_LIMIT_BYTES,
            self.texts.continuation_marker,
        )
        if payloads:
            await self.store.set(
                f"menu:{openid}", json.dumps(payloads, ensure_ascii=False), self._state_ttl_s
            )
        if len(pages) > 1:
            unread = pages[1:] + await self._load_list(f"pages:{openid}")
            await self.store.set(
                f"pages:{openid}", json.dumps(unread, ensure_ascii=False), self._state_ttl_s
            )
        return pages[0] if pages else own

    async def _deliver_late(
        self,
        openid: str,
        task: asyncio.Task[bool],
        collector: CollectingOutputChannel,
    ) -> None:
        succeeded = await task
        answer = collector.messages if succeeded else [{"text": self.texts.bot_error}]
        result = await self.push(openid, answer)
        if result.delivered:
            logger.info("Late answer delivered to %s via customer-service API", openid)
        elif result.reason == delivery.WECHAT_NO_SECRET:
            logger.warning(
                "Answer for %s was ready after the reply budget but could not be delivered now: "
                "WECHAT_APP_SECRET is not set, so the customer-service message API is unavailable. "
                "It comes with the reply to the merchant's next message.",
                openid,
            )

    # ---- pushing (客服消息) -------------------------------------------------------------------

    def get_output_channel(self) -> OutputChannel | None:
        """What Rasa uses for messages outside a merchant's turn (``output_channel=latest``):
        the staff console's agent replies, ``posbot handoff release``, the API's execute."""
        return WeChatOutput(self)

    async def push(
        self, openid: str, messages: list[dict[str, Any]], receipt: str | None = None
    ) -> Delivery:
        """Sends ``messages`` (Rasa's message dicts) to ``openid`` as a customer-service message.

        Messages kept earlier go first, so the merchant reads everything in order. When WeChat
        cannot take them now they are all kept, for the passive reply to the merchant's next
        message. Never raises for WeChat's or the network's failures; the outcome is recorded
        under ``receipt`` for the staff console (bot/channels/delivery.py).
        """
        shown = self._shown(messages)
        batch = (await self._take_pending(openid) + shown) if shown else []
        reason = await self._send_now(openid, batch) if batch else None
        if reason is None:
            result = delivery.DELIVERED  # sent, or nothing WeChat could show (a widget signal)
        else:
            kept = await self.store.append_list(
                f"pending:{openid}",
                [json.dumps(m, ensure_ascii=False) for m in batch],
                PENDING_TTL_S,
                front=True,
            )
            if not kept:
                logger.error("A message for %s could not be sent nor kept: it is lost", openid)
            result = Delivery(True, False, reason if kept else delivery.WECHAT_NOT_KEPT)
        if receipt:
            await self.store.set(
                f"receipt:{receipt}", json.dumps(result.as_json()), RECEIPT_TTL_S
            )
        return result

    async def _send_now(self, openid: str, messages: list[dict[str, Any]]) -> str | None:
        """One customer-service text (more pages wait for "继续"); None when WeChat took it,
        else the reason code."""
        client = self._customer_service_client()
        if client is None:
            return delivery.WECHAT_NO_SECRET
        text, payloads = format_bot_messages(messages, self.texts)
        pages = paginate(text, CONTENT_LIMIT_BYTES, self.texts.continuation_marker)
        if not pages:
            return None
        try:
            await asyncio.to_thread(client.message.send_text, openid, pages[0])
        except Exception as exc:
            errcode = getattr(exc, "errcode", None)
            if errcode == ERRCODE_WINDOW_CLOSED:
                logger.warning(
                    "WeChat refused a customer-service message to %s (45015: no message from "
                    "them for 48 hours, or they unfollowed); kept for their next message",
                    openid,
                )
                return delivery.WECHAT_WINDOW_CLOSED
            if errcode == ERRCODE_LIMIT:
                logger.warning(
                    "WeChat refused a customer-service message to %s (45047: too many since "
                    "their last message); kept for their next message",
                    openid,
                )
                return delivery.WECHAT_LIMIT
            logger.exception("Customer-service message to %s failed", openid)
            return delivery.WECHAT_ERROR
        await self._save_state(openid, menu=payloads, pages=pages[1:])
        return None

    def _shown(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in (wechat_message(x, self.texts) for x in messages) if m]

    async def _take_pending(self, openid: str) -> list[dict[str, Any]]:
        kept = []
        for raw in await self.store.take_list(f"pending:{openid}"):
            try:
                message = json.loads(raw)
            except ValueError:
                logger.warning("Discarding an unreadable kept message for %s", openid)
                continue
            if isinstance(message, dict):
                kept.append(message)
        return kept

    async def delivery_receipt(self, receipt: str) -> Delivery | None:
        """What :meth:`push` did with the message Rasa handed over under ``receipt``."""
        raw = await self.store.get(f"receipt:{receipt}")
        try:
            outcome = json.loads(raw) if raw else None
        except ValueError:
            outcome = None
        if not isinstance(outcome, dict):
            return None
        reason = outcome.get("reason")
        return Delivery(True, bool(outcome.get("delivered")), str(reason) if reason else None)

    async def undelivered(self, conversation_id: str) -> int:
        """How many messages wait for this merchant's next message."""
        return await self.store.list_length(f"pending:{conversation_id}")

    def _customer_service_client(self) -> CustomerServiceClient | None:
        if not self._wechat_client_built:
            self._wechat_client = build_wechat_client(self.settings)
            self._wechat_client_built = True
        return self._wechat_client

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        """Keeps a reference to background work so it is not garbage-collected mid-flight."""

        async def guarded() -> None:
            try:
                await coroutine
            except Exception:
                logger.exception("WeChat background delivery failed")

        task = asyncio.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_for_background(self) -> None:
        """Waits for late deliveries (used by tests and for a graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ---- per-user state ---------------------------------------------------------------------

    async def _save_state(self, openid: str, menu: list[str], pages: list[str]) -> None:
        for key, values in ((f"menu:{openid}", menu), (f"pages:{openid}", pages)):
            if values:
                await self.store.set(
                    key, json.dumps(values, ensure_ascii=False), self._state_ttl_s
                )
            else:
                await self.store.delete(key)

    async def _load_list(self, key: str) -> list[str]:
        raw = await self.store.get(key)
        if not raw:
            return []
        try:
            values = json.loads(raw)
        except ValueError:
            logger.warning("Discarding unreadable WeChat state %s", key)
            return []
        return [str(v) for v in values] if isinstance(values, list) else []

    async def _menu_payload(self, openid: str, text: str) -> str | None:
        """Maps "1"/"2"/... to the payload of the user's last numbered menu, if there is one."""
        choice = parse_menu_choice(text)
        if choice is None:
            return None
        menu = await self._load_list(f"menu:{openid}")
        if 1 <= choice <= len(menu):
            return menu[choice - 1]
        return None

    async def _next_page(self, openid: str) -> str:
        page = await self.store.pop_first(f"pages:{openid}", self._state_ttl_s)
        return self.texts.nothing_more if page is None else page

    # ---- reply rendering --------------------------------------------------------------------

    def _render(
        self,
        message: WeChatMessage,
        content: str | None,
        encrypt_for: Request | None,
    ) -> HTTPResponse:
        """Passive text reply (sender and receiver swapped); encrypted again in safe mode."""
        if not content:
            return response.text(SUCCESS)
        now = str(int(time.time()))
        xml = TextReply(
            source=_xml_safe(message.to_user),
            target=_xml_safe(message.from_user),
            content=_xml_safe(content),
            time=int(now),
        ).render()
        if encrypt_for is not None and self.crypto is not None:
            xml = self.crypto.encrypt_message(
                xml, encrypt_for.args.get("nonce", ""), now
            )
        return response.text(xml, content_type="application/xml; charset=utf-8")


class WeChatOutput(OutputChannel):
    """Messages Rasa sends outside a merchant's turn, as customer-service messages (客服消息).

    Rasa's API calls this for a WeChat conversation with ``output_channel=latest`` (the staff
    console's agent replies and ``posbot handoff release`` do). Each message goes out whole
    (text, numbered menu, an agent's name line); what WeChat refuses is kept for the merchant's
    next message. Nothing here raises: a failure must not turn Rasa's API call into a 500.
    """

    def __init__(self, channel: WeChatInput) -> None:
        self._channel = channel

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        try:
            await self._channel.push(
                recipient_id, [message], receipt=message.get(RECEIPT_KEY) or None
            )
        except Exception:
            logger.exception("Could not push a message to WeChat user %s", recipient_id)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {**kwargs, "text": text})

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self.send_response(recipient_id, {**kwargs, "text": text, "buttons": buttons})

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"image": image})

    async def send_attachment(self, recipient_id: str, attachment: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"attachment": attachment})

    async def send_custom_json(
        self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any
    ) -> None:
        await self.send_response(recipient_id, {"custom": json_message})


async def _run_bot(on_new_message: OnNewMessage, message: UserMessage) -> bool:
    """Calls the bot; an exception becomes a polite apology rather than a 500 to WeChat."""
    try:
        await on_new_message(message)
    except Exception:
        logger.exception("Bot failed on a WeChat message from %s", message.sender_id)
        return False
    return True


def _replayed_content(stored: str) -> str | None:
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("pending"):
        return None
    content = value.get("content")
    return content if isinstance(content, str) else None


def _check_body_size(request: Request) -> None:
    """Refuses oversized bodies by header and by actual size before any parsing."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise Rejected(400, "invalid Content-Length")
    if declared is not None and int(declared) > MAX_BODY_BYTES:
        raise Rejected(413, "body too large")
    if len(request.body or b"") > MAX_BODY_BYTES:
        raise Rejected(413, "body too large")


def _build_store(settings: Settings) -> WeChatStore:
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url)
    return InMemoryStore()


def _build_crypto(settings: Settings) -> WeChatCrypto | None:
    """WeChatCrypto for safe/compatible mode, or None (plain mode only) with a clear log line."""
    key = settings.wechat_aes_key.strip()
    if not key:
        return None
    if not settings.wechat_token or not settings.wechat_app_id:
        logger.error(
            "WECHAT_AES_KEY is set but WECHAT_TOKEN or WECHAT_APP_ID is missing; "
            "encrypted WeChat messages will be refused."
        )
        return None
    if len(key) != 43:
        logger.error(
            "WECHAT_AES_KEY must be the 43-character EncodingAESKey (got %d "
            "characters); encrypted WeChat messages will be refused.",
            len(key),
        )
        return None
    try:
        return WeChatCrypto(settings.wechat_token, key, settings.wechat_app_id)
    except (ValueError, AssertionError):
        logger.error(
            "WECHAT_AES_KEY is not valid base64; encrypted WeChat messages will be refused."
        )
        return None
