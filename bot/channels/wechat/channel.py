"""The Rasa input channel: routes, the conversation flow, and Rasa's output channel for pushes.

``WeChatInput`` only decides what to answer; protocol.py checks and renders WeChat's XML,
formatting.py turns bot messages into WeChat text, state.py remembers retries, menus and pages,
delivery.py sends customer-service messages and keeps what WeChat does not take.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

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

from bot.channels.delivery import RECEIPT_KEY, Delivery
from bot.channels.limits import LimitedBlueprint
from bot.handoff_gate import gate
from bot.outage import guard
from bot.settings import Settings

from .delivery import CustomerServiceClient, Outbox
from .formatting import compose, normalize_command, shown_messages
from .protocol import Rejected, WeChatMessage, WeChatProtocol
from .state import (
    DEDUPE_TTL_S,
    STATE_TTL_S,
    MerchantState,
    RetryCache,
    WeChatStore,
    build_store,
)
from .texts import WeChatTexts

logger = logging.getLogger(__name__)

CHANNEL_NAME = "wechat"
#: WeChat's "I got it, no reply" answer; also what we return while a retry's original is running.
SUCCESS = "success"

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]

#: Keys of the channel's section in credentials.yml and the environment variable each replaces.
_CREDENTIAL_VARIABLES: dict[str, str] = {
    "token": "WECHAT_TOKEN",
    "app_id": "WECHAT_APP_ID",
    "aes_key": "WECHAT_AES_KEY",
    "encoding_aes_key": "WECHAT_AES_KEY",
    "app_secret": "WECHAT_APP_SECRET",
    "reply_budget_s": "WECHAT_REPLY_BUDGET_S",
    "max_age_s": "WECHAT_MAX_AGE_S",
    "redis_url": "POSBOT_REDIS_URL",
}


class WeChatInput(InputChannel):
    """Rasa input channel for a WeChat Official Account (plain, compatible and safe mode)."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> WeChatInput:
        """Uses values given in credentials.yml, falling back to the environment (Settings).

        A value given there is read as if it were its environment variable, so both are
        validated the same way.
        """
        env = dict(os.environ)
        for key, variable in _CREDENTIAL_VARIABLES.items():
            value = (credentials or {}).get(key)
            if value is not None and str(value).strip() != "":
                env[variable] = str(value).strip()
        return cls(Settings.from_env(env))

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
        self.texts = texts or WeChatTexts.load()
        self.store = store or build_store(self.settings)
        self.protocol = WeChatProtocol(self.settings, clock)
        self.retries = RetryCache(self.store, dedupe_ttl_s)
        self.state = MerchantState(self.store, state_ttl_s)
        self.outbox = Outbox(self.settings, self.store, self.texts, self.state, wechat_client)
        if not self.settings.wechat_token:
            logger.warning("WeChat channel mounted without WECHAT_TOKEN: every request gets 403.")

    @property
    def crypto(self) -> WeChatCrypto | None:
        """wechatpy's WeChatCrypto for safe/compatible mode, None in plain mode."""
        return self.protocol.crypto

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
            try:
                echostr = self.protocol.verify_url(request.args)
            except Rejected as rejected:
                logger.warning("WeChat URL verification refused: %s", rejected.reason)
                return response.text(rejected.reason, status=rejected.status)
            if not echostr:
                return response.text("missing echostr", status=403)
            return response.text(echostr, content_type="text/plain; charset=utf-8")

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            try:
                incoming = self.protocol.open(
                    request.body or b"", request.args, request.headers.get("content-length")
                )
            except Rejected as rejected:
                logger.warning("WeChat request refused (%s): %s", rejected.status, rejected.reason)
                return response.text(rejected.reason, status=rejected.status)
            content = await self._reply_for(incoming.message, on_new_message)
            if not content:
                return response.text(SUCCESS)
            nonce = request.args.get("nonce", "") if incoming.encrypted else None
            return response.text(
                self.protocol.reply(incoming.message, content, nonce),
                content_type="application/xml; charset=utf-8",
            )

        return webhook

    # ---- answering --------------------------------------------------------------------------

    async def _reply_for(self, message: WeChatMessage, on_new_message: OnNewMessage) -> str | None:
        """Answers once per message; WeChat's retries get the stored answer or "success"."""
        dedupe_id = message.dedupe_id()
        retry = await self.retries.claim(message.from_user, dedupe_id)
        if retry is not None:
            logger.info("WeChat retry of %s from %s answered from cache", dedupe_id, message.from_user)
            return retry.content
        try:
            content = await self._answer(message, on_new_message)
        except Exception:
            logger.exception("Unexpected failure answering %s", message.from_user)
            content = self.texts.bot_error
        await self.retries.remember(message.from_user, dedupe_id, content)
        return content

    async def _answer(self, message: WeChatMessage, on_new_message: OnNewMessage) -> str | None:
        if message.msg_type == "event":
            return await self._answer_event(message, on_new_message)
        openid = message.from_user
        text = message.text_input()
        if text is None:
            logger.debug("WeChat %s message from %s is not text", message.msg_type, openid)
            return await self._own_reply(openid, self.texts.unsupported)
        if normalize_command(text) in self.texts.continue_keywords:
            page = await self.state.next_page(openid)
            return await self._own_reply(openid, self.texts.nothing_more if page is None else page)
        payload = await self.state.menu_payload(openid, text)
        return await self._ask_bot(message, payload or text, on_new_message)

    async def _answer_event(self, message: WeChatMessage, on_new_message: OnNewMessage) -> str | None:
        """Follow → welcome; menu click → mapped payload; other events need no answer."""
        if message.event == "subscribe":
            return await self._ask_bot(message, self.texts.subscribe_payload, on_new_message)
        if message.event == "click":
            key = message.event_key.strip()
            payload = self.texts.menu_click_payloads.get(key)
            if payload is None and key.startswith("/"):
                payload = key
            if payload is None:
                logger.warning("WeChat menu EventKey %r is not mapped in wechat_texts.yml", key)
                return await self._own_reply(message.from_user, self.texts.unsupported)
            return await self._ask_bot(message, payload, on_new_message)
        return None

    async def _ask_bot(self, message: WeChatMessage, text: str, on_new_message: OnNewMessage) -> str | None:
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
        done, _ = await asyncio.wait({task}, timeout=self.settings.wechat_reply_budget_s)
        if task in done:
            return await self._passive_reply(message.from_user, self._answer_of(task, collector))
        logger.info(
            "Bot needs more than %.1fs for %s; answering 'success' and delivering later",
            self.settings.wechat_reply_budget_s,
            message.from_user,
        )
        self.outbox.deliver_later(message.from_user, self._late_answer(task, collector))
        return None

    def _answer_of(
        self, task: asyncio.Task[bool], collector: CollectingOutputChannel
    ) -> list[dict[str, Any]]:
        """What the bot said, or the apology when it failed."""
        return collector.messages if task.result() else [{"text": self.texts.bot_error}]

    async def _late_answer(
        self, task: asyncio.Task[bool], collector: CollectingOutputChannel
    ) -> list[dict[str, Any]]:
        await task
        return self._answer_of(task, collector)

    async def _passive_reply(self, openid: str, answer: list[dict[str, Any]]) -> str | None:
        """Messages kept for this merchant first, then the bot's answer, as one text; its menu
        and further pages are remembered, the first page is returned."""
        kept = await self.outbox.take(openid)
        reply = compose(kept + shown_messages(answer, self.texts), self.texts)
        await self.state.save(openid, menu=reply.menu, pages=reply.pages[1:])
        if not reply.pages:
            logger.info("Bot sent nothing back to %s", openid)
            return None
        return reply.pages[0]

    async def _own_reply(self, openid: str, own: str) -> str:
        """A reply the channel makes by itself ("继续", "please write text"), after any kept
        messages; the rest of a long text joins the pages still unread."""
        kept = await self.outbox.take(openid)
        if not kept:
            return own
        reply = compose(kept, self.texts, tail=own)
        await self.state.add(openid, menu=reply.menu, pages=reply.pages[1:])
        return reply.pages[0] if reply.pages else own

    # ---- pushing (客服消息) -------------------------------------------------------------------

    def get_output_channel(self) -> OutputChannel | None:
        """What Rasa uses for messages outside a merchant's turn (``output_channel=latest``):
        the staff console's agent replies, ``posbot handoff release``, the API's execute."""
        return WeChatOutput(self)

    async def push(self, openid: str, messages: list[dict[str, Any]], receipt: str | None = None) -> Delivery:
        """Sends ``messages`` to ``openid`` now or keeps them for the merchant's next message
        (delivery.py); never raises for WeChat's or the network's failures."""
        return await self.outbox.push(openid, messages, receipt)

    async def delivery_receipt(self, receipt: str) -> Delivery | None:
        """What :meth:`push` did with the message Rasa handed over under ``receipt``."""
        return await self.outbox.receipt(receipt)

    async def undelivered(self, conversation_id: str) -> int:
        """How many messages wait for this merchant's next message."""
        return await self.outbox.waiting(conversation_id)

    async def wait_for_background(self) -> None:
        """Waits for late deliveries (used by tests and for a graceful shutdown)."""
        await self.outbox.wait_for_background()


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
            await self._channel.push(recipient_id, [message], receipt=message.get(RECEIPT_KEY) or None)
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

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"custom": json_message})


async def _run_bot(on_new_message: OnNewMessage, message: UserMessage) -> bool:
    """Calls the bot; an exception becomes a polite apology rather than a 500 to WeChat."""
    try:
        await on_new_message(message)
    except Exception:
        logger.exception("Bot failed on a WeChat message from %s", message.sender_id)
        return False
    return True
