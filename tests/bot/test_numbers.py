"""Amounts and rates as merchants write them, normalised to yuan and percent."""

from __future__ import annotations

import pytest

from bot.nlu.numbers import chinese_to_number, find_numbers


def found(text: str) -> list[tuple[str, str, str]]:
    return [(f.entity, text[f.start : f.end], f.value) for f in find_numbers(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("刷了10000元信用卡,费率0.6%", [("amount", "10000", "10000"), ("rate", "0.6%", "0.6")]),
        ("刷一万块扣多少手续费", [("amount", "一万", "10000")]),
        ("1.5万的交易", [("amount", "1.5万", "15000")]),
        ("两千五块钱", [("amount", "两千五", "2500")]),
        ("费率千分之六刷5000", [("rate", "千分之六", "0.6"), ("amount", "5000", "5000")]),
        ("0.6个点刷3万", [("rate", "0.6个点", "0.6"), ("amount", "3万", "30000")]),
        ("刷5k", [("amount", "5k", "5000")]),
        ("费率是0.55%,刷1w", [("rate", "0.55%", "0.55"), ("amount", "1w", "10000")]),
        ("刷卡1200 费率千分之六 扣多少钱", [("amount", "1200", "1200"), ("rate", "千分之六", "0.6")]),
        ("一笔800的刷卡要扣几块钱", [("amount", "800", "800")]),
        # a bare number answers the calculator's question: 金额 or 费率
        ("10000", [("amount", "10000", "10000")]),
        (" 0.6 ", [("rate", "0.6", "0.6")]),
    ],
)
def test_amounts_and_rates(text: str, expected: list) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "刷卡显示51",
        "错误码96",
        "打印机不出纸",
        "A0",
        "51",
        "886",
        "13812345678",
        "12345678",
        "一个月就刷几万块钱",
        "刷了几千块",
        "好几百块",  # vague: no amount to calculate with
    ],
)
def test_error_codes_and_plain_text_are_not_numbers(text: str) -> None:
    assert found(text) == []


def test_chinese_numerals() -> None:
    assert chinese_to_number("三千五百") == 3500
    assert chinese_to_number("十二") == 12
    assert chinese_to_number("一万零五百") == 10500
    assert chinese_to_number("一万五") == 15000
    assert chinese_to_number("abc") is None
