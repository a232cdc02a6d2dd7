"""Bot messages as WeChat text (bot/channels/wechat/formatting.py): numbered menus instead of
buttons, pages of at most 2048 bytes and "继续"."""

from __future__ import annotations

import pytest

from bot.channels.wechat import CONTENT_LIMIT_BYTES, paginate, parse_menu_choice
from tests.channels.wechat.kit import MENU_SCRIPT, TEXTS, FakeBot, harness, long_answer

# --------------------------------------------------------------------------------------------
# Numbered menu
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("choice", ["2", "２", "2.", " 2、", "2。"])
async def test_numbered_menu_round_trip(choice: str) -> None:
    h = harness(FakeBot(script=MENU_SCRIPT))
    first = await h.say("机器坏了")
    assert first == "请问是哪种问题？\n回复数字选择：\n1. 打印机故障\n2. 刷卡失败"
    assert await h.say(choice) == "收到:/fault_card"
    assert h.bot.texts == ["机器坏了", "/fault_card"]


@pytest.mark.asyncio
async def test_number_without_menu_or_out_of_range_goes_to_bot_as_text() -> None:
    h = harness(FakeBot(script=MENU_SCRIPT))
    assert await h.say("1") == "收到:1"
    await h.say("机器坏了")
    assert await h.say("9") == "收到:9"
    assert await h.say("1") == "收到:1"  # the answer to "9" had no buttons: menu replaced
    assert h.bot.texts == ["1", "机器坏了", "9", "1"]


# --------------------------------------------------------------------------------------------
# Long answers
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_long_answer_is_paged_with_continue_chain() -> None:
    answer = long_answer()
    assert len(answer.encode()) > 3 * CONTENT_LIMIT_BYTES
    h = harness(FakeBot(script={"怎么排查": [{"text": answer}]}))
    pages = [await h.say("怎么排查")]
    while pages[-1].endswith(TEXTS.continuation_marker):
        pages.append(await h.say("继续"))
        assert len(pages) < 20
    assert len(pages) >= 4
    for page in pages:
        assert len(page.encode("utf-8")) <= CONTENT_LIMIT_BYTES
    for page in pages[:-1]:
        assert page.endswith("\n" + TEXTS.continuation_marker)
        assert page[: -len(TEXTS.continuation_marker) - 1].endswith("。")  # cut at a line end
    shown = [p.removesuffix("\n" + TEXTS.continuation_marker) for p in pages]
    assert "\n".join(shown) == answer
    assert await h.say("继续。") == TEXTS.nothing_more
    assert h.bot.texts == ["怎么排查"]


@pytest.mark.asyncio
async def test_long_line_without_breaks_is_cut_at_character_boundary() -> None:
    answer = ("汉字😀" * 700).strip()
    h = harness(FakeBot(script={"长": [{"text": answer}]}))
    first = await h.say("长")
    second = await h.say("继续")
    assert len(first.encode()) <= CONTENT_LIMIT_BYTES
    assert first.endswith(TEXTS.continuation_marker)
    rest = [second]
    while rest[-1].endswith(TEXTS.continuation_marker):
        rest.append(await h.say("继续"))
    joined = "".join(p.removesuffix("\n" + TEXTS.continuation_marker) for p in [first, *rest])
    assert joined == answer


@pytest.mark.asyncio
async def test_continue_without_pending_pages() -> None:
    h = harness()
    assert await h.say("继续") == TEXTS.nothing_more
    assert h.bot.calls == []


def test_paginate_keeps_short_text_and_respects_limit() -> None:
    assert paginate("短消息", 2048, "(more)") == ["短消息"]
    assert paginate("", 2048, "(more)") == []
    pages = paginate("a" * 5000, 2048, TEXTS.continuation_marker)
    assert all(len(p.encode()) <= 2048 for p in pages)
    assert "".join(p.removesuffix("\n" + TEXTS.continuation_marker) for p in pages) == "a" * 5000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("１", 1),
        ("1.", 1),
        ("12", 12),
        ("3、", 3),
        ("4)", 4),
        ("一", None),
        ("1 2", None),
        ("123", None),
        ("继续", None),
    ],
)
def test_parse_menu_choice(text: str, expected: int | None) -> None:
    assert parse_menu_choice(text) == expected
