"""Messages outside a merchant's turn, as customer-service messages (客服消息).

What Rasa sends outside a merchant's turn (an agent's reply from the staff console, "我回来了" on
release) and the bot's answers that missed WeChat's reply budget go out through the
customer-service message API. WeChat allows that only within 48 hours of the merchant's last
message (errcode 45015), not too often (45047), and only with the AppSecret; otherwise the
message is kept (``pending:<openid>``) and comes first in the passive reply to the merchant's
next message. The outcome is recorded (``receipt:<id>``) for the staff console
(bot/channels/delivery.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from redis.exceptions import RedisError

from bot.channels import delivery as outcome
from bot.channels.delivery import Delivery
from bot.settings import Settings

from .formatting import compose, shown_messages
from .state import MerchantState, RedisOutage, WeChatStore
from .texts import WeChatTexts

logger = logging.getLogger(__name__)

#: How long a message WeChat would not let us push waits for the merchant's next message.
PENDING_TTL_S = 7 * 24 * 3600.0
#: How long the outcome of a push is kept for the staff console to read (it reads it at once).
RECEIPT_TTL_S = 600.0
#: WeChat's answers to a customer-service message: not within 48 hours of the merchant's last
#: message (or the merchant unfollowed); too many messages since the merchant last wrote.
ERRCODE_WINDOW_CLOSED = 45015
ERRCODE_LIMIT = 45047


class _MessageApi(Protocol):
    def send_text(self, user_id: str, content: str, account: str | None = None) -> Any: ...


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

        session: Any = RedisStorage(redis.Redis.from_url(settings.redis_url), prefix="posbot:wechatpy")
    else:
        session = MemoryStorage()
    client: CustomerServiceClient = WeChatClient(
        settings.wechat_app_id, settings.wechat_app_secret, session=session, timeout=10
    )
    return client


class Outbox:
    """Sends messages to a merchant now, or keeps them for the merchant's next message.

    Nothing here raises for WeChat's or the network's failures: the outcome is returned and
    recorded under the receipt the staff console asked with.
    """

    def __init__(
        self,
        settings: Settings,
        store: WeChatStore,
        texts: WeChatTexts,
        state: MerchantState,
        client: CustomerServiceClient | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._texts = texts
        self._state = state
        self._client = client
        self._client_built = client is not None
        self._token_outage = RedisOutage("WeChat's access-token cache")
        self._background: set[asyncio.Task[None]] = set()

    async def push(self, openid: str, messages: list[dict[str, Any]], receipt: str | None = None) -> Delivery:
        """Sends ``messages`` (Rasa's message dicts) to ``openid`` as a customer-service message.

        Messages kept earlier go first, so the merchant reads everything in order. When WeChat
        cannot take them now they are all kept, for the passive reply to the merchant's next
        message. The outcome is recorded under ``receipt`` for the staff console.
        """
        shown = shown_messages(messages, self._texts)
        batch = (await self.take(openid) + shown) if shown else []
        reason = await self._send_now(openid, batch) if batch else None
        if reason is None:
            result = outcome.DELIVERED  # sent, or nothing WeChat could show (a widget signal)
        else:
            kept = await self._store.append_list(
                f"pending:{openid}",
                [json.dumps(m, ensure_ascii=False) for m in batch],
                PENDING_TTL_S,
                front=True,
            )
            if not kept:
                logger.error("A message for %s could not be sent nor kept: it is lost", openid)
            result = Delivery(True, False, reason if kept else outcome.WECHAT_NOT_KEPT)
        if receipt:
            await self._store.set(f"receipt:{receipt}", json.dumps(result.as_json()), RECEIPT_TTL_S)
        return result

    async def take(self, openid: str) -> list[dict[str, Any]]:
        """The messages kept for ``openid``, removed from the store (each is shown once)."""
        kept = []
        for raw in await self._store.take_list(f"pending:{openid}"):
            try:
                message = json.loads(raw)
            except ValueError:
                logger.warning("Discarding an unreadable kept message for %s", openid)
                continue
            if isinstance(message, dict):
                kept.append(message)
        return kept

    async def waiting(self, openid: str) -> int:
        """How many messages wait for this merchant's next message."""
        return await self._store.list_length(f"pending:{openid}")

    async def receipt(self, receipt: str) -> Delivery | None:
        """What :meth:`push` did with the message handed over under ``receipt``."""
        raw = await self._store.get(f"receipt:{receipt}")
        try:
            recorded = json.loads(raw) if raw else None
        except ValueError:
            recorded = None
        if not isinstance(recorded, dict):
            return None
        reason = recorded.get("reason")
        return Delivery(True, bool(recorded.get("delivered")), str(reason) if reason else None)

    def deliver_later(self, openid: str, answer: Awaitable[list[dict[str, Any]]]) -> None:
        """Pushes ``answer`` (the bot's, still being made) once it is ready, in the background."""
        self._spawn(self._deliver_late(openid, answer))

    async def wait_for_background(self) -> None:
        """Waits for late deliveries (used by tests and for a graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _deliver_late(self, openid: str, answer: Awaitable[list[dict[str, Any]]]) -> None:
        result = await self.push(openid, await answer)
        if result.delivered:
            logger.info("Late answer delivered to %s via customer-service API", openid)
        elif result.reason == outcome.WECHAT_NO_SECRET:
            logger.warning(
                "Answer for %s was ready after the reply budget but could not be delivered now: "
                "WECHAT_APP_SECRET is not set, so the customer-service message API is unavailable. "
                "It comes with the reply to the merchant's next message.",
                openid,
            )

    async def _send_now(self, openid: str, messages: list[dict[str, Any]]) -> str | None:
        """One customer-service text (more pages wait for "继续"); None when WeChat took it,
        else the reason code."""
        client = self._customer_service_client()
        if client is None:
            return outcome.WECHAT_NO_SECRET
        reply = compose(messages, self._texts)
        if not reply.pages:
            return None
        try:
            await asyncio.to_thread(client.message.send_text, openid, reply.pages[0])
        except RedisError as exc:  # wechatpy reads the access token from Redis first
            self._token_outage.failed(
                "token",
                "customer-service messages cannot be sent (they are kept if possible)",
                f"access token for a message to {openid}",
                exc,
            )
            return outcome.WECHAT_ERROR
        except Exception as exc:
            errcode = getattr(exc, "errcode", None)
            if errcode == ERRCODE_WINDOW_CLOSED:
                logger.warning(
                    "WeChat refused a customer-service message to %s (45015: no message from "
                    "them for 48 hours, or they unfollowed); kept for their next message",
                    openid,
                )
                return outcome.WECHAT_WINDOW_CLOSED
            if errcode == ERRCODE_LIMIT:
                logger.warning(
                    "WeChat refused a customer-service message to %s (45047: too many since "
                    "their last message); kept for their next message",
                    openid,
                )
                return outcome.WECHAT_LIMIT
            logger.exception("Customer-service message to %s failed", openid)
            return outcome.WECHAT_ERROR
        self._token_outage.answered()
        await self._state.save(openid, menu=reply.menu, pages=reply.pages[1:])
        return None

    def _customer_service_client(self) -> CustomerServiceClient | None:
        if not self._client_built:
            self._client = build_wechat_client(self._settings)
            self._client_built = True
        return self._client

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
