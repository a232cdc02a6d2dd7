"""Bot messages as WeChat text: numbered menus instead of buttons, pages of at most 2048 bytes.

WeChat text replies have no buttons, so the bot's buttons become a numbered menu ("1"/"2"
replies are mapped back to their payloads, see state.py) and long answers are paged ("继续" shows
the next page). An agent's words get a line naming the agent.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.channels.delivery import agent_said

from .texts import WeChatTexts

logger = logging.getLogger(__name__)

#: WeChat's limit for the Content of a text reply (UTF-8 bytes).
CONTENT_LIMIT_BYTES = 2048

_MENU_CHOICE = re.compile(r"^([0-9]{1,2})\s*[.、)。]?$")
_TRAILING_PUNCTUATION = " \t\r\n.。!！~～…,，"
_SENTENCE_ENDS = "。！？；!?;"


def format_bot_messages(messages: list[dict[str, Any]], texts: WeChatTexts) -> tuple[str, list[str]]:
    """Turns collected bot messages into one WeChat text and the payloads of its numbered menu.

    Buttons are numbered across the whole answer so "1", "2", ... are never ambiguous.
    """
    blocks: list[str] = []
    payloads: list[str] = []
    for message in messages:
        lines = [str(message[k]).strip() for k in ("text", "image", "attachment") if message.get(k)]
        menu_lines = _menu_lines(message.get("buttons") or [], payloads)
        if menu_lines:
            lines.append("\n".join([texts.menu_header, *menu_lines]))
        if message.get("custom"):
            logger.debug("WeChat cannot show custom JSON; skipped: %s", message["custom"])
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
    shown: dict[str, Any] = {k: str(message[k]) for k in ("text", "image", "attachment") if message.get(k)}
    buttons = [
        {"title": str(b.get("title") or ""), "payload": str(b.get("payload") or "")}
        for b in message.get("buttons") or []
        if isinstance(b, dict)
    ]
    if buttons:
        shown["buttons"] = buttons
    return shown or None


def shown_messages(messages: list[dict[str, Any]], texts: WeChatTexts) -> list[dict[str, Any]]:
    """The messages WeChat can show (:func:`wechat_message`), in order."""
    return [m for m in (wechat_message(x, texts) for x in messages) if m]


@dataclass(frozen=True)
class Composed:
    """One reply as WeChat shows it: its pages (the first is sent) and its menu's payloads."""

    pages: list[str]
    menu: list[str]


def compose(messages: list[dict[str, Any]], texts: WeChatTexts, tail: str | None = None) -> Composed:
    """Formats ``messages`` (then ``tail``, a text of the channel's own) as one text, paged."""
    text, payloads = format_bot_messages(messages, texts)
    if tail:
        text = "\n\n".join(part for part in (text, tail) if part)
    return Composed(paginate(text, CONTENT_LIMIT_BYTES, texts.continuation_marker), payloads)


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


def normalize_command(text: str) -> str:
    """What a typed command ("继续。", " 继续 ") is compared as."""
    return unicodedata.normalize("NFKC", text).strip().rstrip(_TRAILING_PUNCTUATION)
