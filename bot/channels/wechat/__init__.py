"""WeChat Official Account (微信公众号) input channel, one module per job.

WeChat pushes every message a follower sends to ``POST /webhooks/wechat/webhook`` as a small XML
document and shows whatever XML we answer with ("passive reply"). ``bot/credentials.yml`` mounts
``bot.channels.wechat.WeChatInput``.

* protocol.py: signatures (plain) and AES (safe mode) via wechatpy, size-limited defusedxml
  parsing, the replay window, the passive reply XML.
* formatting.py: bot messages as WeChat text: buttons become a numbered menu ("1"/"2" replies are
  mapped back to payloads), long answers are paged at 2048 bytes ("继续" shows the next page).
* state.py: the retry cache (WeChat waits 5 s, then retries: answered once, by MsgId) and each
  merchant's menu and pages, in memory or in Redis when several workers/servers share the load;
  a Redis outage is logged once per kind of failure, not with a traceback per message.
* delivery.py: customer-service messages (客服消息): late answers (over
  ``WECHAT_REPLY_BUDGET_S``), agents' replies and other pushes; what WeChat does not take now
  (no AppSecret, 45015 after 48 hours, 45047) is kept for the merchant's next message, and the
  outcome is recorded for the staff console (bot/channels/delivery.py).
* channel.py: ``WeChatInput`` (routes and the conversation flow) and ``WeChatOutput`` (Rasa's
  output channel for pushes).
* texts.py: what the channel says by itself, from ``bot/channels/wechat_texts.yml``.
"""

from .channel import CHANNEL_NAME, SUCCESS, WeChatInput, WeChatOutput
from .delivery import (
    PENDING_TTL_S,
    RECEIPT_TTL_S,
    CustomerServiceClient,
    Outbox,
    build_wechat_client,
)
from .formatting import (
    CONTENT_LIMIT_BYTES,
    format_bot_messages,
    paginate,
    parse_menu_choice,
    wechat_message,
)
from .protocol import MAX_BODY_BYTES, Rejected, WeChatMessage, WeChatProtocol, parse_xml_fields
from .state import (
    DEDUPE_TTL_S,
    STATE_TTL_S,
    InMemoryStore,
    MerchantState,
    RedisStore,
    RetryCache,
    WeChatStore,
)
from .texts import TEXTS_PATH, WeChatTexts

__all__ = [
    "CHANNEL_NAME",
    "CONTENT_LIMIT_BYTES",
    "DEDUPE_TTL_S",
    "MAX_BODY_BYTES",
    "PENDING_TTL_S",
    "RECEIPT_TTL_S",
    "STATE_TTL_S",
    "SUCCESS",
    "TEXTS_PATH",
    "CustomerServiceClient",
    "InMemoryStore",
    "MerchantState",
    "Outbox",
    "RedisStore",
    "Rejected",
    "RetryCache",
    "WeChatInput",
    "WeChatMessage",
    "WeChatOutput",
    "WeChatProtocol",
    "WeChatStore",
    "WeChatTexts",
    "build_wechat_client",
    "format_bot_messages",
    "paginate",
    "parse_menu_choice",
    "parse_xml_fields",
    "wechat_message",
]
