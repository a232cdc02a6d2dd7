"""Every topic family and the new response codes, answered end to end as a merchant asks them.

Through REST for a sample of each family (one topic per family, asked in a merchant's words),
the response codes the table gained, screen texts that stand for codes, and WeChat for a long
answer with its related topics as a numbered menu (pages beyond WeChat's limit come with 继续).
"""

from __future__ import annotations

import uuid

import pytest

from kb.loader import Content
from ops.launcher import RunningBot
from tests.integration.test_wechat_live import _fields, _post_plain, _warm_up

pytestmark = pytest.mark.integration


def sender() -> str:
    return f"coverage-{uuid.uuid4().hex[:10]}"


def one_topic_per_family(content: Content) -> list[dict]:
    seen: dict[str, dict] = {}
    for topic in content.topics:
        seen.setdefault(topic["family"], topic)
    return list(seen.values())


def test_a_topic_of_every_family_is_answered_with_its_facts(live_bot: RunningBot, content: Content) -> None:
    missed = []
    for topic in one_topic_per_family(content):
        text = live_bot.texts(sender(), topic["questions"][0])
        if topic["family"] == "overview":  # a fault report: the guided walk asks what is wrong
            if "一步一步来排查" not in text:
                missed.append((topic["family"], topic["questions"][0], text[:60]))
        elif topic["answer"][:30] not in text:
            missed.append((topic["family"], topic["questions"][0], text[:60]))
    assert not missed, missed


@pytest.mark.parametrize(
    ("message", "code", "fact"),
    [
        ("刷卡显示62是什么意思", "62", "62"),
        ("交易失败 返回码59", "59", "59"),
        ("pos机报错91怎么办", "91", "91"),
        ("屏幕显示A7", "A7", "A7"),
    ],
)
def test_codes_the_table_gained_are_explained(
    live_bot: RunningBot, message: str, code: str, fact: str
) -> None:
    text = live_bot.texts(sender(), message)
    assert f"应答码 {code}" in text, text[:200]


def test_a_screen_text_is_explained_as_its_code_without_asking_for_it(live_bot: RunningBot) -> None:
    text = live_bot.texts(sender(), "顾客刷卡提示余额不足")
    assert "应答码 51" in text, text[:200]


def test_a_long_answer_reaches_wechat_in_pages(live_bot: RunningBot, content: Content) -> None:
    url = live_bot.url.rstrip("/")
    _warm_up(url)
    [topic] = [t for t in content.topics if t["id"] == "frozen_unfreeze"]
    merchant = f"oCover{uuid.uuid4().hex[:10]}"
    reply = _post_plain(url, topic["questions"][0], merchant)
    assert reply.status_code == 200 and reply.text != "success"
    first = _fields(reply.text)["Content"]
    assert topic["answer"][:20] in first
    assert "回复数字选择" in first, "related topics become a numbered menu on WeChat"
    if "回复“继续”查看" in first:  # longer than one reply: the rest comes with 继续
        rest = _fields(_post_plain(url, "继续", merchant).text)["Content"]
        assert rest and rest != first


def test_a_fault_in_plain_words_starts_the_walk_it_means(live_bot: RunningBot) -> None:
    text = live_bot.texts(sender(), "收银台那台机器今天一张票都吐不出来")
    assert "明白，您遇到的是“打印问题”" in text, text[:200]
    assert "先检查打印纸" in text


def test_two_brands_named_get_both_hotlines(live_bot: RunningBot) -> None:
    text = live_bot.texts(sender(), "拉卡拉和银联的客服电话分别多少")
    assert "拉卡拉的官方客服热线是 95016" in text and "银联的官方客服热线是 95516" in text, text


@pytest.mark.parametrize("message", ["买股票手续费怎么算", "花呗还款日能改吗"])
def test_finance_outside_card_acquiring_is_declined_politely(live_bot: RunningBot, message: str) -> None:
    text = live_bot.texts(sender(), message)
    assert text.startswith("抱歉，这个问题超出了我的服务范围"), text[:200]
    assert "×" not in text and "转人工" not in text


@pytest.mark.parametrize("message", ["我要报修", "机器坏了 帮我登记一下维修"])
def test_a_request_to_file_a_repair_opens_the_ticket_form(live_bot: RunningBot, message: str) -> None:
    text = live_bot.texts(sender(), message)
    assert "请留一个方便售后人员联系您的电话" in text, text[:200]


def test_the_ticket_button_under_a_repair_answer_opens_the_form(live_bot: RunningBot) -> None:
    text = live_bot.texts(sender(), '/contact_support{"flow": "ticket"}')
    assert "请留一个方便售后人员联系您的电话" in text, text[:200]


def test_the_calculator_button_under_a_fee_answer_asks_for_the_amount(live_bot: RunningBot):
    text = live_bot.texts(sender(), '/fees{"flow": "fee_calc"}')
    assert "金额" in text, text[:200]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("pos老掉线怎么回事", "明白，您遇到的是“网络连接”"),  # a fault report, not the fault overview
        ("签购单打出来是白的", "纸卷装反了"),  # blank paper, not faded print
    ],
)
def test_merchants_words_for_a_dropping_line_and_a_blank_slip(
    live_bot: RunningBot, message: str, expected: str
) -> None:
    text = live_bot.texts(sender(), message)
    assert expected in text, text[:200]


@pytest.mark.parametrize(
    ("message", "topic_id"),
    [
        ("刷卡机让人偷了", "pos_lost"),
        ("有个电话说我的pos下个月停用 要给我换新的", "scam_calls"),
        ("客人拿外国的万事达卡刷不了", "foreign_cards"),
        ("顾客能用花呗在我这付钱吗", "huabei_on_pos"),  # a customer's 花呗: not declined
        ("办pos会查征信吗", "credit_record"),
        ("pos机能开电子发票吗", "tax_invoice"),
        ("开机提示主密钥不存在", "key_errors"),
        ("结算卡被公安冻结了", "settle_card_frozen"),
        ("收到调单通知 让我提供签购单", "chargeback_retrieval"),
        ("店换了名字 小票上的名称怎么改", "merchant_info_change"),
        ("回老家能用这台刷卡机吗", "use_elsewhere"),
        ("卖机器给我的业务员联系不上了", "agent_unreachable"),
        ("机器的日期不对", "date_time"),
    ],
)
def test_questions_merchants_ask_beyond_faults_get_their_own_answer(
    live_bot: RunningBot, content: Content, message: str, topic_id: str
) -> None:
    """Session 14's coverage: each was a catch-all, a decline or a walk before."""
    topic = next(t for t in content.topics if t["id"] == topic_id)
    text = live_bot.texts(sender(), message)
    assert topic["answer"][:30] in text, text[:200]


@pytest.mark.parametrize(
    ("message", "expected", "not_expected"),
    [
        ("每笔交易另外多收3块钱 这是什么费", "", "请问您签约的费率是多少"),  # a charge, not a sale
        ("打印机坏了 要报修 帮我提交一下", "请留一个方便售后人员联系您的电话", ""),
        ("A7是什么问题 刷不了", "应答码 A7", "您是想问"),
        ("签到了还是a0", "重新下载密钥", ""),
    ],
)
def test_what_a_merchant_already_said_is_used(
    live_bot: RunningBot, message: str, expected: str, not_expected: str
) -> None:
    text = live_bot.texts(sender(), message)
    assert expected in text and (not not_expected or not_expected not in text), text[:300]


@pytest.mark.parametrize("message", ["你是机器人吗", "跟我说话的是真人吗"])
def test_a_merchant_asking_who_answers_is_told_and_offered_a_person(
    live_bot: RunningBot, message: str
) -> None:
    replies = live_bot.send(sender(), message)
    text = "\n".join(r.get("text") or "" for r in replies)
    assert "我是POS机智能客服" in text and "超出了我的服务范围" not in text, text[:200]
    assert any(b["title"] == "转人工客服" for r in replies for b in r.get("buttons") or [])
