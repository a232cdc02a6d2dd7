"""The numbers a fee question carries: amounts (元) and rates (%), as merchants write them.

"刷了10000元", "一万块", "1.5万", "5k", "两千五" are amounts; "0.6%", "千分之六", "0.6个点",
"费率0.38" are rates. Values are normalised: amount in yuan, rate in percent, both as plain
decimal strings, so actions never parse Chinese numerals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Optional

_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_BIG = {"万": 10_000, "亿": 100_000_000}
_CN_NUM = "零〇一二两三四五六七八九十百千万亿"

NUM = rf"(?:\d+(?:\.\d+)?|[{_CN_NUM}]+)"
_MAG = r"(?:万|千|百|w|W|k|K)"

_RATE_PATTERNS = [
    (re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*%"), Decimal(1)),
    (re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*‰"), Decimal("0.1")),
    (re.compile(rf"百分之(?P<num>{NUM})"), Decimal(1)),
    (re.compile(rf"千分之(?P<num>{NUM})"), Decimal("0.1")),
    (re.compile(rf"万分之(?P<num>{NUM})"), Decimal("0.01")),
    (re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*个点"), Decimal(1)),
    (
        re.compile(r"(?:费率|扣率|点位)\s*(?:是|为|:)?\s*(?P<num>\d+(?:\.\d+)?)(?![\d%‰.万千wWkK元块])"),
        Decimal(1),
    ),
]
_AMOUNT_WITH_UNIT = re.compile(
    rf"(?P<num>{NUM})\s*(?P<mag>{_MAG})?(?P<mag2>{_MAG})?(?P<tail>[{_CN_NUM[:-2]}]?)\s*"
    r"(?=元|块|圆|rmb|RMB)"
)
_AMOUNT_WITH_MAG = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<mag>万|w|W|k|K|千)(?![分之])")
_AMOUNT_AFTER_VERB = re.compile(
    rf"(?:刷卡?了?|金额|交易了?|收了?|收款|消费了?|一笔|每笔|单笔)\s*(?P<num>\d+(?:\.\d+)?|[{_CN_NUM}]{{2,}})"
    rf"(?P<mag>万|千|w|W|k|K)?(?![\d.%‰个]|分之)"
)


@dataclass(frozen=True)
class Found:
    entity: str
    start: int
    end: int
    value: str


def chinese_to_number(text: str) -> Optional[Decimal]:
    """Value of a Chinese numeral such as 一万五千, 两千五, 十二, 三千五百; None if not one."""
    if not text or any(c not in _CN_NUM for c in text):
        return None
    total, section, number = Decimal(0), Decimal(0), Decimal(0)
    last_unit = 1
    for char in text:
        if char in _DIGITS:
            number = Decimal(_DIGITS[char])
        elif char in _UNITS:
            unit = _UNITS[char]
            section += (number if number or section else Decimal(1)) * unit
            number, last_unit = Decimal(0), unit
        else:
            big = _BIG[char]
            total += (section + number) * big
            section, number, last_unit = Decimal(0), Decimal(0), big
    if number and last_unit >= 10 and len(text) > 1 and text[-2] in _UNITS | _BIG:
        number *= Decimal(last_unit) / 10  # 两千五 = 2500, 一万五 = 15000
    return total + section + number


def to_decimal(text: str) -> Optional[Decimal]:
    try:
        return Decimal(text)
    except InvalidOperation:
        return chinese_to_number(text)


def _magnitude(mag: Optional[str]) -> Decimal:
    return {
        None: Decimal(1),
        "": Decimal(1),
        "万": Decimal(10_000),
        "w": Decimal(10_000),
        "W": Decimal(10_000),
        "千": Decimal(1000),
        "k": Decimal(1000),
        "K": Decimal(1000),
        "百": Decimal(100),
    }[mag]


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def find_rates(text: str) -> list[Found]:
    found: list[Found] = []
    for pattern, scale in _RATE_PATTERNS:
        for match in pattern.finditer(text):
            value = to_decimal(match.group("num"))
            if value is None:
                continue
            start = match.start() if pattern.pattern[0] in "百千万" else match.start("num")
            end = match.end()
            if any(f.start < end and start < f.end for f in found):
                continue
            found.append(Found("rate", start, end, _plain(value * scale)))
    return found


def find_amounts(text: str, taken: list[Found]) -> list[Found]:
    found: list[Found] = []

    def add(start: int, end: int, value: Optional[Decimal]) -> None:
        if value is None or any(f.start < end and start < f.end for f in [*taken, *found]):
            return
        if not value or text[max(0, start - 1) : start] == "几":  # "几万块", "几千": no amount
            return
        found.append(Found("amount", start, end, _plain(value)))

    for match in _AMOUNT_WITH_UNIT.finditer(text):
        base = to_decimal(match.group("num"))
        if base is None:
            continue
        value = base * _magnitude(match.group("mag")) * _magnitude(match.group("mag2"))
        tail = match.group("tail")
        if tail and match.group("mag"):
            value += _DIGITS.get(tail, 0) * _magnitude(match.group("mag")) / 10
        end = (
            match.end("tail")
            if tail
            else match.end("mag2")
            if match.group("mag2")
            else (match.end("mag") if match.group("mag") else match.end("num"))
        )
        add(match.start("num"), end, value)
    for pattern in (_AMOUNT_WITH_MAG, _AMOUNT_AFTER_VERB):
        for match in pattern.finditer(text):
            base = to_decimal(match.group("num"))
            if base is None:
                continue
            mag = match.groupdict().get("mag")
            end = match.end("mag") if mag else match.end("num")
            add(match.start("num"), end, base * _magnitude(mag))
    return found


_BARE_NUMBER = re.compile(r"^\s*(?P<num>\d{4,7}|\d\.\d+)\s*$")


def bare_number(text: str) -> Optional[Found]:
    """A message that is only a number answers the fee calculator's questions (请告诉我金额,
    费率是多少): "0.6" is a rate in percent, "10000" an amount. Two digits are a response code
    ("51"), three are as often chat slang (886 拜拜, 666), eight and more a phone or serial
    number, so none of these counts."""
    match = _BARE_NUMBER.match(text)
    if not match:
        return None
    number = match.group("num")
    kind = "rate" if "." in number else "amount"
    return Found(kind, match.start("num"), match.end("num"), _plain(Decimal(number)))


def find_numbers(text: str) -> list[Found]:
    """Rates first (so "0.6%" is never an amount), then amounts; sorted by position."""
    rates = find_rates(text)
    found = sorted([*rates, *find_amounts(text, rates)], key=lambda f: f.start)
    bare = bare_number(text) if not found else None
    return [bare] if bare else found


#: A number alone, as a reply to a numbered menu ("2", "1."): WeChat turns it into the choice while
#: the bot's last message has options; once that is gone the number means nothing by itself.
_MENU_NUMBER = re.compile(r"^\s*([0-9]{1,2})\s*[.。、)）]?\s*$")
#: Numbers that are words in chat: 88 is 拜拜.
NUMBER_WORDS = {"88"}


def stray_number(text: str, codes: frozenset[str] | set[str] = frozenset()) -> bool:
    """ "2" with no menu to choose from: not a response code in ``codes``, not a word ("88")."""
    found = _MENU_NUMBER.match(text or "")
    return found is not None and found.group(1) not in NUMBER_WORDS and found.group(1) not in codes
