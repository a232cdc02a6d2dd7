"""KBTopicIntent: the KB topic retrieval is sure of decides the intent, except where it cannot know."""

from __future__ import annotations

import pytest
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

import bot.nlu.kb_intent as kb_intent
from bot.nlu.kb_entities import KBEntityExtractor
from bot.nlu.kb_intent import KBTopicIntent


def parsed(
    text: str, ranking: list[tuple[str, float]], entities: list[dict] | None = None, intent: str | None = None
) -> Message:
    message = Message(data={TEXT: text})
    rows = [{"name": name, "confidence": confidence} for name, confidence in ranking]
    message.set(INTENT, {"name": intent or rows[0]["name"], "confidence": rows[0]["confidence"]})
    message.set(INTENT_RANKING_KEY, rows)
    message.set(ENTITIES, entities or [])
    return message


@pytest.fixture()
def component(store, monkeypatch) -> KBTopicIntent:
    monkeypatch.setattr(kb_intent, "shared_store", lambda: store)
    return KBTopicIntent({**KBTopicIntent.get_default_config()})


def intent(message: Message) -> str:
    return str(message.get(INTENT)["name"])


def test_a_sure_topic_sets_its_intent_even_after_a_fallback(component, store) -> None:
    message = parsed(
        "电签机的电池能不能自己拆下来换", [("nlu_fallback", 0.55), ("apply_pos", 0.30), ("usage_tips", 0.28)]
    )
    component.process([message])
    expected = store.topic("battery_removal").intent
    assert expected != "apply_pos" and intent(message) == expected
    ranking = message.get(INTENT_RANKING_KEY)
    assert ranking[0]["name"] == expected and ranking[0]["confidence"] >= 0.3
    assert "nlu_fallback" not in [r["name"] for r in ranking]


def test_a_question_about_a_component_is_not_held_as_a_fault_report(component, store) -> None:
    message = parsed("确认键是哪个键 取消键又是哪个", [("fault_hardware", 0.62), ("training", 0.30)])
    component.process([message])
    assert store.topic("op_keys").intent == "training" and intent(message) == "training"


@pytest.mark.parametrize(
    "text, ranking, entities",
    [
        ("我要找人工客服", [("human_handoff", 0.7), ("contact_support", 0.25)], []),
        ("刷卡显示51", [("error_code", 0.6), ("fees", 0.2)], [{"entity": "error_code", "value": "51"}]),
        ("打印机不出纸了", [("fault_hardware", 0.8), ("usage_tips", 0.1)], []),
        ("0.6%", [("fees", 1.0), ("usage_tips", 0.0)], []),
        ("你好", [("greet", 0.9), ("usage_tips", 0.05)], []),
    ],
)
def test_what_retrieval_cannot_judge_keeps_the_nlu_intent(component, text, ranking, entities):
    message = parsed(text, ranking, entities)
    component.process([message])
    assert intent(message) == ranking[0][0]


def test_without_a_built_kb_the_nlu_intent_stays(monkeypatch) -> None:
    def no_kb():
        raise RuntimeError("no such table: kb_meta")

    monkeypatch.setattr(kb_intent, "shared_store", no_kb)
    message = parsed("电签机的电池能不能自己拆下来换", [("apply_pos", 0.5), ("usage_tips", 0.4)])
    KBTopicIntent(KBTopicIntent.get_default_config()).process([message])
    assert intent(message) == "apply_pos"


def test_a_bad_threshold_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="answer_at"):
        KBTopicIntent.validate_config({"answer_at": 0})


def test_after_a_fallback_a_clear_fault_report_gets_its_symptoms_fault_intent(component) -> None:
    message = parsed(
        "收银台那台机器今天一张票都吐不出来",
        [("nlu_fallback", 0.6), ("fault_hardware", 0.3), ("usage_tips", 0.28)],
    )
    component.process([message])
    assert intent(message) == "fault_hardware"


def test_after_a_fallback_a_vague_report_gets_no_guessed_symptom(component) -> None:
    message = parsed("机器出毛病了", [("nlu_fallback", 0.6), ("usage_tips", 0.3)])
    component.process([message])
    assert intent(message) not in {"fault_hardware", "fault_software", "fault_network"}


@pytest.mark.parametrize(
    "text, ranking",
    [
        ("我用的是拉卡拉", [("nlu_fallback", 0.6), ("contact_support", 0.3), ("choose_brand", 0.25)]),
        ("好的 我去试试", [("nlu_fallback", 0.6), ("affirm", 0.42), ("out_of_scope", 0.37)]),
    ],
)
def test_after_a_fallback_that_was_no_fault_no_walk_is_guessed(component, text, ranking) -> None:
    message = parsed(text, ranking)
    component.process([message])
    assert intent(message) not in {"fault_hardware", "fault_software", "fault_network"}


@pytest.mark.parametrize(
    "text, fault",
    [("屏幕碎了", "fault_hardware"), ("一直死机", "fault_software"), ("老是连不上网", "fault_network")],
)
def test_a_fault_said_without_naming_the_pos_is_the_pos_fault_not_declined(component, text, fault) -> None:
    message = parsed(text, [("out_of_scope", 0.7), ("fault_hardware", 0.2)])
    component.process([message])
    assert intent(message) == fault


def test_a_declined_message_in_pos_words_gets_the_topic_retrieval_is_sure_of(component, store) -> None:
    message = parsed("收款音箱不报语音了", [("out_of_scope", 0.7), ("usage_tips", 0.2)])
    component.process([message])
    assert intent(message) == store.topic("voice_broadcast").intent != "out_of_scope"


def test_a_phone_number_is_no_other_device(component, store) -> None:
    """ "换了手机号" names no device to repair: the POS words decide, as without it."""
    assert store.is_other_device("手机屏幕碎了") and not store.is_other_device("换了手机号 刷卡机的app登不上")
    message = parsed("换了手机号 刷卡机的商户app登不上了", [("out_of_scope", 0.7), ("usage_tips", 0.2)])
    component.process([message])
    assert intent(message) == store.topic("merchant_app_login").intent != "out_of_scope"


@pytest.mark.parametrize(
    "text",
    [
        "手机屏幕碎了",
        "电脑一直死机",
        "花呗还款连不上",
        "今天天气怎么样",
        "顺丰快递客服电话多少",
        "微信提现到银行卡要手续费吗",
    ],
)
def test_another_device_finance_or_no_fault_stays_declined(component, text) -> None:
    message = parsed(text, [("out_of_scope", 0.7), ("fault_hardware", 0.2)])
    component.process([message])
    assert intent(message) == "out_of_scope"


@pytest.mark.parametrize(
    "text, code",
    [("返回41是什么情况 要不要把卡扣下", "41"), ("客人刷卡老提示余额不足 是他卡里没钱了吗", "51")],
)
def test_a_code_in_a_message_the_nlu_gave_up_on_is_a_code_question(component, text, code):
    message = parsed(
        text,
        [("nlu_fallback", 0.45), ("usage_tips", 0.3), ("bill_query", 0.2)],
        [{"entity": "error_code", "value": code}],
    )
    component.process([message])
    assert intent(message) == "error_code"
    without_code = parsed(text, [("nlu_fallback", 0.45), ("usage_tips", 0.3)])
    component.process([without_code])
    assert intent(without_code) != "error_code"


@pytest.mark.parametrize(
    "text, code, fault",
    [
        ("pos机报错A0怎么解决", "A0", "fault_software"),
        ("刷卡一直提示余额不足", "51", "fault_hardware"),
    ],
)
def test_a_fault_report_naming_a_known_code_is_a_code_question(component, text, code, fault):
    message = parsed(text, [(fault, 0.7), ("error_code", 0.2)], [{"entity": "error_code", "value": code}])
    component.process([message])
    assert intent(message) == "error_code"


def test_a_number_that_is_no_code_leaves_the_fault_report_alone(component) -> None:
    message = parsed(
        "打印机刷了50笔就卡纸",
        [("fault_hardware", 0.8), ("usage_tips", 0.1)],
        [{"entity": "error_code", "value": "50"}],
    )
    component.process([message])
    assert intent(message) == "fault_hardware"


def code_entity(text: str, span: str, code: str) -> dict:
    start = text.index(span)
    return {"entity": "error_code", "value": code, "start": start, "end": start + len(span)}


@pytest.mark.parametrize(
    "text, span, code, asked",
    [
        ("小票上写着有缺陷的成功 这钱收到没", "有缺陷的成功", "A2", "bill_query"),
        ("顾客输错几次 现在提示密码错误次数超限", "密码错误次数超限", "38", "usage_tips"),
        ("A7是什么问题 刷不了", "A7", "A7", "usage_tips"),
    ],
)
def test_a_question_naming_a_code_unmistakably_is_a_code_question(component, text, span, code, asked):
    """Not only fault reports: a question whose other words are near some topic."""
    message = parsed(text, [(asked, 0.6), ("error_code", 0.3)], [code_entity(text, span, code)])
    component.process([message])
    assert intent(message) == "error_code"


@pytest.mark.parametrize(
    "text, span, code, asked",
    [
        ("机器莫名其妙扣了99 是什么钱", "99", "99", "bill_query"),  # an amount
        ("扣了99块是什么费", "99", "99", "fees"),
        ("密码输错太多次被锁了", "密码输错", "55", "usage_tips"),  # maybe the manager password
    ],
)
def test_a_number_or_common_words_outside_a_fault_report_stay_what_they_were(
    component, text, span, code, asked
):
    message = parsed(text, [(asked, 0.6), ("error_code", 0.3)], [code_entity(text, span, code)])
    component.process([message])
    assert intent(message) != "error_code"


@pytest.mark.parametrize(
    "text, span, code, topic, asked",
    [
        ("退货的时候机器提示余额不足 退不了", "余额不足", "51", "refund_fail_fee", "error_code"),
        ("商户app登录一直提示密码错误", "密码错误", "55", "merchant_app_login", "error_code"),
    ],
)
def test_a_screen_text_in_a_topics_situation_gets_that_topic_not_the_code(
    component, store, text, span, code, topic, asked
):
    """The merchant's own balance on a refund is not the customer's card (51)."""
    message = parsed(text, [(asked, 0.6), ("usage_tips", 0.3)], [code_entity(text, span, code)])
    component.process([message])
    assert intent(message) == store.topic(topic).intent != "error_code"


@pytest.mark.parametrize(
    "text, span, code",
    [
        ("顾客刷卡提示余额不足", "余额不足", "51"),  # the customer's card: the code
        ("退货的时候显示51", "51", "51"),  # a code typed as such is explained
    ],
)
def test_a_screen_text_outside_a_topics_situation_stays_a_code(component, text, span, code):
    message = parsed(text, [("error_code", 0.6), ("usage_tips", 0.3)], [code_entity(text, span, code)])
    component.process([message])
    assert intent(message) == "error_code"


def test_a_known_code_leaves_a_request_for_a_person_alone(component) -> None:
    message = parsed(
        "一直报A0 我要找人工",
        [("human_handoff", 0.8), ("error_code", 0.1)],
        [{"entity": "error_code", "value": "A0"}],
    )
    component.process([message])
    assert intent(message) == "human_handoff"


def test_a_loaded_model_builds_the_indexes_before_its_first_merchant(store, monkeypatch) -> None:
    """Built lazily, the first KB question held the Rasa server's event loop for seconds."""
    built: list[str] = []

    class Recording:
        def __getattr__(self, name: str):
            if name in ("topic_index", "symptom_index"):
                built.append(name)
            return getattr(store, name)

    monkeypatch.setattr(kb_intent, "shared_store", Recording)
    component = KBTopicIntent.load({"answer_at": 0.3}, None, None, None)
    assert sorted(built) == ["symptom_index", "topic_index"]
    message = parsed("电签机的电池能不能自己拆下来换", [("nlu_fallback", 0.55), ("apply_pos", 0.3)])
    component.process([message])
    assert intent(message) == store.topic("battery_removal").intent


def test_a_load_whose_index_build_fails_still_serves(store, monkeypatch, caplog) -> None:
    class Broken:
        def digest(self) -> str:
            return "d"

        def topic_index(self):
            raise OSError("disk full")

    monkeypatch.setattr(kb_intent, "shared_store", Broken)
    component = KBTopicIntent.load({"answer_at": 0.3}, None, None, None)
    assert isinstance(component, KBTopicIntent)
    assert "could not build the retrieval indexes" in caplog.text


@pytest.mark.parametrize("top", ["affirm", "deny", "thanks"])
def test_a_bare_brand_statement_taken_for_small_talk_goes_the_fallback_way(component, top) -> None:
    """ "我用的是拉卡拉" is noted by the fallback path (the brand is remembered, the bot asks what
    the question is); some trainings call it affirm, which answered "好的" and forgot nothing."""
    text = "我用的是拉卡拉"
    at = text.index("拉卡拉")
    brand = [{"entity": "brand", "value": "拉卡拉", "start": at, "end": at + 3}]
    message = parsed(text, [(top, 0.5), ("contact_support", 0.3)], brand)
    component.process([message])
    assert intent(message) == "nlu_fallback"
    asked = parsed(
        "拉卡拉好不好用", [("affirm", 0.5), ("choose_brand", 0.3)], [{**brand[0], "start": 0, "end": 3}]
    )
    component.process([asked])
    assert intent(asked) != "nlu_fallback", "a question about the brand is no bare statement"


@pytest.mark.parametrize(
    "text, top",
    [
        ("你好 有没有人工 我的机子刷卡一直提示交易失败 急", "fault_software"),
        ("打印机一直不出纸 试了好几次了 转人工吧", "fault_hardware"),
        ("商户被冻结了 转个人工 快点", "fault_software"),
    ],
)
def test_a_person_asked_for_inside_a_longer_message_is_a_handoff(component, text, top) -> None:
    message = parsed(text, [(top, 0.8), ("human_handoff", 0.1)])
    component.process([message])
    assert intent(message) == "human_handoff"
    assert [r["name"] for r in message.get(INTENT_RANKING_KEY)].count("human_handoff") == 1
    # Also when the NLU gave up with the handoff second ("nlu_fallback" first).
    unsure = parsed(text, [("nlu_fallback", 0.45), ("human_handoff", 0.43), (top, 0.24)])
    component.process([unsure])
    assert intent(unsure) == "human_handoff"


@pytest.mark.parametrize(
    "text, top",
    [
        ("拉卡拉人工客服电话多少", "contact_support"),
        ("银联的人工热线怎么转 按几", "contact_support"),
        ("拉卡拉客服95016怎么转人工", "contact_support"),
        ("不转人工了 我自己再试试", "deny"),
        ("不转人工 我再试试", "deny"),
        ("别转人工了", "deny"),
        ("不需要转人工", "deny"),
        ("不要人工 帮我登记报修", "contact_support"),
        ("上门维修要人工费吗", "contact_support"),
        ("上门维修有没有人工费", "contact_support"),
        ("进件需要人工审核吗 多久能下来", "apply_pos"),
        ("刷卡提示需要人工核实是什么意思", "error_code"),
        ("你是真人客服吗", "bot_challenge"),
    ],
)
def test_a_question_about_a_phone_route_or_a_cancelled_request_is_no_handoff(component, text, top) -> None:
    message = parsed(text, [(top, 0.8), ("human_handoff", 0.1)])
    component.process([message])
    assert intent(message) != "human_handoff"


def declined(text: str, span: str, code: str) -> Message:
    start = text.index(span)
    entities = [{"entity": "error_code", "value": code, "start": start, "end": start + len(span)}]
    return parsed(text, [("out_of_scope", 0.6), ("bill_query", 0.2)], entities)


def test_a_declined_message_naming_a_screen_text_on_the_pos_is_a_code_question(component) -> None:
    message = declined("刷卡提示余额不足 客户手机上看额度明明还有", "余额不足", "51")
    component.process([message])
    assert intent(message) == "error_code"


@pytest.mark.parametrize(
    "text, span, code",
    [
        ("手机银行提示余额不足", "余额不足", "51"),
        ("微信提示余额不足", "余额不足", "51"),
        ("信用卡还款提示余额不足", "余额不足", "51"),
        ("家里洗碗机屏幕上显示E4 是啥故障", "E4", "E4"),
        ("自己的银行卡在ATM上密码输错三次被锁了", "密码输错", "55"),
    ],
)
def test_a_screen_text_of_something_else_stays_declined(component, text, span, code) -> None:
    message = declined(text, span, code)
    component.process([message])
    assert intent(message) == "out_of_scope"


def test_a_declined_card_that_will_not_go_through_is_the_pos_question_it_is(component, store) -> None:
    """POS words and no sure topic: not declined; the fallback looks across all topics."""
    message = parsed("5万的信用卡大额刷不出去 有什么办法", [("out_of_scope", 0.6), ("fees", 0.2)])
    component.process([message])
    assert intent(message) in ("nlu_fallback", store.topic("amount_limits").intent)


@pytest.mark.parametrize("text", ["地铁闸机刷公交卡老是刷不出来", "小区门禁卡刷不了", "信用卡还款 刷不出来"])
def test_other_cards_and_card_repayments_stay_declined(component, text) -> None:
    message = parsed(text, [("out_of_scope", 0.6), ("fault_hardware", 0.2)])
    component.process([message])
    assert intent(message) == "out_of_scope"


def test_what_the_training_data_declines_is_no_code_and_no_clarification(component, content) -> None:
    """Every out_of_scope training example, with the entities the KB rules find in it: none is
    taken for a response code or a POS question to clarify. (A fault said without naming a
    device can still get its walk: "微信一打开就闪退" does, a known gap.)"""
    import re
    from pathlib import Path

    import yaml

    from bot.nlu.kb_entities import build_nlp
    from kb.vocabulary import Vocabulary

    vocabulary = Vocabulary.from_content(content)
    extractor = KBEntityExtractor.__new__(KBEntityExtractor)
    extractor._nlp = build_nlp(vocabulary.entity_patterns(), vocabulary.words())
    data = yaml.safe_load(Path("data/nlu/out_of_scope.yml").read_text(encoding="utf-8"))
    [block] = [b for b in data["nlu"] if b.get("intent") == "out_of_scope"]
    lines = [line.strip()[2:] for line in block["examples"].splitlines() if line.strip().startswith("- ")]
    texts = [re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line).strip() for line in lines]  # [打印机](component)
    assert len(texts) > 30
    rescued = []
    for text in texts:
        message = parsed(text, [("out_of_scope", 0.7), ("fault_hardware", 0.2)], extractor.extract(text))
        component.process([message])
        if intent(message) in ("error_code", "nlu_fallback"):
            rescued.append((text, intent(message)))
    assert rescued == [], "\n".join(f"{t} → {i}" for t, i in rescued)
