"""WeChat's side of the webhook: authenticity, untrusted XML, freshness, the passive reply.

* Authenticity: the only proof that a request comes from WeChat is a SHA-1 signature over the
  shared Token (plain mode) or over the Token and the ciphertext (safe mode, AES, via wechatpy).
  Anything that fails the check is :class:`Rejected` with 403 before the bot sees it.
* Hostile input: the body is untrusted XML, so it is size-limited and parsed with defusedxml.
* Replays: a signed request is only good within ``WECHAT_MAX_AGE_S`` of its timestamp.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as defused_fromstring
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

from bot.settings import Settings

logger = logging.getLogger(__name__)

#: Largest body we accept; real WeChat pushes are well under 4 KB.
MAX_BODY_BYTES = 64 * 1024
#: OpenIDs are 28 characters; anything much longer is not from WeChat and must not become a key.
MAX_ID_CHARS = 128

#: The query string of a request (Sanic's ``request.args``: ``get`` gives the first value).
Args = Mapping[str, Any]

_XML_INVALID_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


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
    return {child.tag: (child.text or "").strip() for child in root if isinstance(child.tag, str)}


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
        if max(len(message.to_user), len(message.from_user), len(message.msg_id)) > MAX_ID_CHARS:
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


@dataclass(frozen=True)
class Incoming:
    """An authentic, fresh message; ``encrypted``: the reply must be encrypted too."""

    message: WeChatMessage
    encrypted: bool


class WeChatProtocol:
    """Checks WeChat's requests (plain, compatible and safe mode) and renders passive replies."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.crypto = build_crypto(settings)
        self._clock = clock

    def verify_url(self, args: Args) -> str:
        """The one-time check when the server URL is saved in the WeChat console: checks the
        signature and returns the ``echostr`` to answer with ("" when there is none)."""
        self.check_plain_signature(args)
        return str(args.get("echostr", ""))

    def open(self, body: bytes, args: Args, content_length: str | None) -> Incoming:
        """Checks size, signature (decrypting in safe mode), XML and freshness of a push."""
        check_body_size(content_length, body)
        self.require_token()
        encrypted = args.get("encrypt_type", "").lower() == "aes"
        if encrypted and self.crypto is None:
            encrypted = self._accept_compatible_without_key(args)
        if not encrypted:
            self.check_plain_signature(args)
        fields = parse_xml_fields(body)
        if encrypted:
            fields = self._decrypt(fields, args)
        self.check_fresh(args)
        return Incoming(WeChatMessage.from_fields(fields), encrypted)

    def reply(self, message: WeChatMessage, content: str, nonce: str | None) -> str:
        """Passive text reply (sender and receiver swapped); encrypted again when ``nonce`` is
        given (the request's, in safe mode)."""
        now = str(int(time.time()))
        xml = TextReply(
            source=xml_safe(message.to_user),
            target=xml_safe(message.from_user),
            content=xml_safe(content),
            time=int(now),
        ).render()
        if nonce is not None and self.crypto is not None:
            xml = self.crypto.encrypt_message(xml, nonce, now)
        return str(xml)

    # ---- authenticity -----------------------------------------------------------------------

    def require_token(self) -> str:
        """Without a Token nothing can be authenticated, so everything is refused, loudly."""
        if not self.settings.wechat_token:
            logger.error(
                "WeChat request refused: WECHAT_TOKEN is not configured. Set it to the Token "
                "entered in the WeChat console (基本配置 → 服务器配置)."
            )
            raise Rejected(403, "channel not configured")
        return self.settings.wechat_token

    def check_plain_signature(self, args: Args) -> None:
        token = self.require_token()
        signature = args.get("signature", "")
        timestamp = args.get("timestamp", "")
        nonce = args.get("nonce", "")
        if not (signature and timestamp and nonce):
            raise Rejected(403, "missing signature")
        try:
            check_signature(token, signature, timestamp, nonce)
        except InvalidSignatureException as exc:
            raise Rejected(403, "invalid signature") from exc

    def check_fresh(self, args: Args) -> None:
        """Refuse replays: a signed request is only good within ``WECHAT_MAX_AGE_S`` of its time.

        The plain-mode signature covers Token, timestamp and nonce but not the body, so a
        captured signed URL could otherwise carry any message, forever. WeChat sends and
        retries within seconds; 0 turns the check off.
        """
        max_age = self.settings.wechat_max_age_s
        if max_age <= 0:
            return
        try:
            sent = float(args.get("timestamp", ""))
        except ValueError as exc:
            raise Rejected(403, "invalid timestamp") from exc
        if abs(self._clock() - sent) > max_age:
            raise Rejected(403, "stale timestamp")

    def _accept_compatible_without_key(self, args: Args) -> bool:
        """Encrypted push but no usable EncodingAESKey: only plain-signed compat mode can work."""
        logger.error(
            "WeChat sent an encrypted message but WECHAT_AES_KEY/WECHAT_APP_ID are missing or "
            "invalid; only the plaintext part of 兼容模式 can be handled. Configure the key or "
            "switch the account to 明文模式."
        )
        self.check_plain_signature(args)
        return False

    def _decrypt(self, envelope: dict[str, str], args: Args) -> dict[str, str]:
        """Checks msg_signature over the ciphertext and decrypts it with wechatpy."""
        assert self.crypto is not None
        encrypted = envelope.get("Encrypt", "")
        if not encrypted:
            raise Rejected(400, "encrypted message without Encrypt field")
        msg_signature = args.get("msg_signature", "")
        timestamp = args.get("timestamp", "")
        nonce = args.get("nonce", "")
        if not (msg_signature and timestamp and nonce):
            raise Rejected(403, "missing msg_signature")
        try:
            plaintext = self.crypto.decrypt_message({"Encrypt": encrypted}, msg_signature, timestamp, nonce)
        except InvalidSignatureException as exc:
            raise Rejected(403, "invalid msg_signature") from exc
        # Garbage ciphertext fails in base64, padding, length or app-id checks.
        except Exception as exc:
            raise Rejected(403, "undecryptable message") from exc
        return parse_xml_fields(plaintext.encode("utf-8"))


def check_body_size(declared: str | None, body: bytes) -> None:
    """Refuses oversized bodies by header (``declared``) and by actual size before any parsing."""
    if declared is not None and not declared.strip().isdigit():
        raise Rejected(400, "invalid Content-Length")
    if declared is not None and int(declared) > MAX_BODY_BYTES:
        raise Rejected(413, "body too large")
    if len(body) > MAX_BODY_BYTES:
        raise Rejected(413, "body too large")


def xml_safe(value: str) -> str:
    """Keeps a value valid inside wechatpy's CDATA sections (it does not escape "]]>")."""
    return _XML_INVALID_CHARS.sub("", value).replace("]]>", "]]]]><![CDATA[>")


def build_crypto(settings: Settings) -> WeChatCrypto | None:
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
        logger.error("WECHAT_AES_KEY is not valid base64; encrypted WeChat messages will be refused.")
        return None
