"""Entities found by the KB-generated spaCy EntityRuler, with canonical values."""

from __future__ import annotations

import pytest

from bot.nlu.kb_entities import KBEntityExtractor, build_nlp
from kb.loader import Content
from kb.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def extractor(content: Content) -> KBEntityExtractor:
    vocabulary = Vocabulary.from_content(content)
    ruler = KBEntityExtractor.__new__(KBEntityExtractor)
    ruler._nlp = build_nlp(vocabulary.entity_patterns(), vocabulary.words())
    return ruler


def values(extractor: KBEntityExtractor, text: str) -> list[tuple[str, str, str]]:
    return [(e["entity"], text[e["start"] : e["end"]], e["value"]) for e in extractor.extract(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我的拉卡拉POS机刷卡显示A0", [("brand", "拉卡拉", "拉卡拉"), ("error_code", "A0", "A0")]),
        ("LAKALA的pos机报51", [("brand", "LAKALA", "拉卡拉"), ("error_code", "51", "51")]),
        ("UnionPay客服", [("brand", "UnionPay", "银联")]),
        ("京东金融的机器", [("brand", "京东金融", "京东金融")]),
        ("错误码96怎么办", [("error_code", "96", "96")]),
        ("返回码 55", [("error_code", "55", "55")]),
        ("a0是什么意思", [("error_code", "a0", "A0")]),
        ("51", [("error_code", "51", "51")]),
        ("小票机不出纸", [("component", "小票机", "打印机")]),
        ("储蓄卡刷了两千", [("card_type", "储蓄卡", "借记卡"), ("amount", "两千", "2000")]),
        ("收款QR码刷新不出来", []),
        ("刷了51块 结果机器上报57", [("amount", "51", "51"), ("error_code", "57", "57")]),
        # a code followed by its name in kb/content/error_codes.yml, or after more trigger words
        ("51是余额不足的意思吗", [("error_code", "51", "51")]),
        # one screen text inside another's: the longer, more specific one names the code
        ("刷卡提示发卡行不支持的交易类型", [("error_code", "发卡行不支持的交易类型", "40")]),
        ("刷卡提示发卡行不支持的交易", [("error_code", "发卡行不支持的交易", "12")]),
        ("97终端未登记 新机器刚拿到手", [("error_code", "97", "97")]),
        ("43被窃卡 这笔还做不做", [("error_code", "43", "43")]),
        ("报码77", [("error_code", "77", "77")]),
        ("pos显示code 14", [("error_code", "14", "14")]),
        ("12点开门 30块一杯", [("amount", "30", "30")]),
    ],
)
def test_entities_with_canonical_values(extractor, text, expected) -> None:
    assert values(extractor, text) == expected


def test_numbers_that_are_not_codes_stay_amounts(extractor) -> None:
    assert values(extractor, "刷了51块") == [("amount", "51", "51")]


def test_every_alias_of_every_brand_is_found(extractor, content: Content) -> None:
    for brand in content.brands:
        for alias in [brand["name"], *brand["aliases"]]:
            found = values(extractor, f"我用的是{alias}的POS机")
            assert ("brand", alias, brand["name"]) in found, (alias, found)


def test_a_kb_or_dictionary_edit_changes_the_training_cache_key(tmp_path) -> None:
    from bot.nlu.jieba_tokenizer import DictionaryJiebaTokenizer

    (tmp_path / "vocabulary.yml").write_text("error_code_triggers: [显示]\n", encoding="utf-8")
    config = {"content_dir": str(tmp_path), "dictionary_path": str(tmp_path)}
    before = (KBEntityExtractor.fingerprint_addon(config), DictionaryJiebaTokenizer.fingerprint_addon(config))
    (tmp_path / "vocabulary.yml").write_text("error_code_triggers: [显示, 上报]\n", encoding="utf-8")
    after = (KBEntityExtractor.fingerprint_addon(config), DictionaryJiebaTokenizer.fingerprint_addon(config))
    assert before[0] != after[0] and before[1] != after[1]


def test_retraining_with_everything_cached_does_not_need_the_kb_path() -> None:
    """Rasa hands a cached result on through a node whose config is only {"output": ...}."""
    from bot.nlu.jieba_tokenizer import DictionaryJiebaTokenizer

    assert KBEntityExtractor.fingerprint_addon({"output": object()}) is None
    assert DictionaryJiebaTokenizer.fingerprint_addon({"output": object()}) is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("刷卡提示余额不足", "51"),
        ("顾客刷卡老是密码错误", "55"),
        ("屏幕显示无效商户怎么回事", "03"),
    ],
)
def test_screen_texts_are_the_codes_they_stand_for(extractor, text, code) -> None:
    """The merchant gave the code as the screen shows it: the bot must not ask for the code."""
    assert [(e, v) for e, _, v in values(extractor, text) if e == "error_code"] == [("error_code", code)]


def test_every_screen_text_of_every_code_is_found(extractor, content: Content) -> None:
    missed = [
        (alias, entry["codes"][0])
        for entry in content.error_codes
        for alias in entry["aliases"]
        if ("error_code", alias, entry["codes"][0]) not in values(extractor, alias)
    ]
    assert not missed, missed[:10]
