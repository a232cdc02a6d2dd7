"""Length-preserving clean-up of what merchants type, before jieba sees it.

Every transformation maps one character to one character (Traditional → Simplified, full-width →
half-width, emoji and control characters → a space), so entity offsets found on the normalised
text are valid on the text the merchant typed. Only over-long messages are cut, at the end.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from opencc import OpenCC

#: Longer messages are cut before NLU: nothing useful hides after this many characters, and
#: jieba/DIET cost grows with length (a 10,000-character paste must not slow the server down).
MAX_CHARS = 300

_KEEP_CATEGORIES = ("L", "N", "P", "Zs")
_KEEP_SYMBOLS = set("%‰+-*/=.¥$@#&")


@lru_cache(maxsize=1)
def _converter() -> OpenCC:
    return OpenCC("t2s")


def _half_width(char: str) -> str:
    code = ord(char)
    if code == 0x3000:
        return " "
    if 0xFF01 <= code <= 0xFF5E:
        return chr(code - 0xFEE0)
    return char


def _visible(char: str) -> str:
    """Letters, digits, punctuation, spaces and a few symbols stay; emoji, controls → space."""
    if char in _KEEP_SYMBOLS:
        return char
    category = unicodedata.category(char)
    if category.startswith(_KEEP_CATEGORIES):
        return char
    return " "


@lru_cache(maxsize=4096)
def _simplified(char: str) -> str:
    converted = _converter().convert(char)
    return converted if len(converted) == 1 else char


def to_simplified(text: str) -> str:
    """OpenCC t2s, phrase-aware where that keeps the length, per character otherwise."""
    converted = _converter().convert(text)
    if len(converted) == len(text):
        return converted
    return "".join(_simplified(c) for c in text)


def normalize(text: str, max_chars: int = MAX_CHARS) -> str:
    """Normalised text of the same length as ``text[:max_chars]``."""
    text = (text or "")[:max_chars]
    text = "".join(_visible(_half_width(c)) for c in text)
    return to_simplified(text)
