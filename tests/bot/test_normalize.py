"""The normaliser turns what merchants type into one form, without moving any character."""

from __future__ import annotations

from bot.nlu.normalize import MAX_CHARS, normalize


def test_traditional_becomes_simplified() -> None:
    assert normalize("刷卡機打印不出來怎麼辦") == "刷卡机打印不出来怎么办"


def test_full_width_becomes_half_width() -> None:
    assert normalize("ＰＯＳ机显示Ａ０，费率０．６％") == "POS机显示A0,费率0.6%"


def test_emoji_and_control_characters_become_spaces_and_length_is_kept() -> None:
    text = "打印机😡坏了\x00\x07🙏🏻"
    out = normalize(text)
    assert len(out) == len(text)
    assert out.replace(" ", "") == "打印机坏了"


def test_only_emoji_becomes_blank() -> None:
    assert normalize("😀😀😀").strip() == ""


def test_long_messages_are_cut() -> None:
    assert len(normalize("刷" * 10_000)) == MAX_CHARS


def test_empty_and_none_are_safe() -> None:
    assert normalize("") == ""
    assert normalize(None) == ""  # type: ignore[arg-type]
