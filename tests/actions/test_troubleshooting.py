"""Guided troubleshooting: the symptom is found, stages come one at a time, answers move the walk."""

from __future__ import annotations

import json

import pytest
from rasa_sdk.events import ActiveLoop, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.troubleshooting import (
    ActionAskSymptom,
    ActionAskTsSolved,
    ActionLeaveFlow,
    ActionOfferRepair,
    ActionStartTroubleshooting,
    ActionTroubleshootSolved,
    ValidateTroubleshootForm,
)
from kb.schema import KbMeta
from tests.actions.conftest import answer, response_buttons
from tests.conftest import load_tracker, render

SOLVED_BUTTONS = [("解决了", "/affirm"), ("还没有", "/deny")]


def reset(**values: object) -> list[SlotSet]:
    base = {"ts_stage": 0, "ts_shown": None, "ts_solved": None, "ts_code": None}
    return [SlotSet(k, v) for k, v in {**base, **values}.items()]


async def validate(tracker, domain) -> tuple[list, list[str]]:
    dispatcher = CollectingDispatcher()
    events = await ValidateTroubleshootForm().run(dispatcher, tracker, domain)
    return events, render(domain, dispatcher.messages)


# ---------------------------------------------------------------- starting
@pytest.mark.asyncio
async def test_printer_fault_starts_the_walk_of_the_printer_symptom(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionStartTroubleshooting().run(dispatcher, load_tracker("fault_message"), flow_domain)
    assert events == reset(symptom="printer", ts_start=True)
    assert dispatcher.messages == []


@pytest.mark.asyncio
async def test_vague_fault_starts_the_walk_without_a_symptom(action_store, flow_domain) -> None:
    tracker = answer("fault_message", "POS机坏了", "fault_hardware", entities=[])
    events = await ActionStartTroubleshooting().run(CollectingDispatcher(), tracker, flow_domain)
    assert events == reset(symptom=None, ts_start=True)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text, intent, symptom",
    [
        ("收银台那台机器今天一张票都吐不出来", "fault_hardware", "printer"),
        ("顾客的卡刷了好几次都不行", "fault_hardware", "card_reading"),
        ("一按确认就跳出别的数字", "fault_hardware", "keys"),
        ("交易老是发不出去 右上角信号打了个叉", "fault_network", "network"),
    ],
)
async def test_a_fault_in_words_no_keyword_has_starts_the_walk_it_means(
    action_store, flow_domain, text, intent, symptom
) -> None:
    tracker = answer("fault_message", text, intent, entities=[])
    events = await ActionStartTroubleshooting().run(CollectingDispatcher(), tracker, flow_domain)
    assert events == reset(symptom=symptom, ts_start=True)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text, symptom",
    [
        ("数字键5按了半天屏幕上不出数", "keys"),  # not the how-to of the keys
        ("机器用着用着自己就黑了 充上电也不亮", "no_power"),  # not the battery topic
    ],
)
async def test_topic_or_walk_is_decided_by_one_classifier(action_store, flow_domain, text, symptom) -> None:
    tracker = answer("fault_message", text, "fault_hardware", entities=[])
    events = await ActionStartTroubleshooting().run(CollectingDispatcher(), tracker, flow_domain)
    assert events == reset(symptom=symptom, ts_start=True)


@pytest.mark.asyncio
async def test_a_fault_report_a_topic_answers_better_gets_the_topic(action_store, flow_domain) -> None:
    tracker = answer("fault_message", "热敏纸装进去以后打出来一片白", "fault_hardware", entities=[])
    dispatcher = CollectingDispatcher()
    events = await ActionStartTroubleshooting().run(dispatcher, tracker, flow_domain)
    assert SlotSet("answered_topic", "paper_side") in events
    assert SlotSet("ts_start", False) in events
    assert "热敏" in render(flow_domain, dispatcher.messages)[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("text", ["机器出毛病了", "我这刷卡机好像有点问题"])
async def test_a_fault_that_names_no_symptom_asks_which(action_store, flow_domain, text) -> None:
    tracker = answer("fault_message", text, "fault_hardware", entities=[])
    events = await ActionStartTroubleshooting().run(CollectingDispatcher(), tracker, flow_domain)
    assert events == reset(symptom=None, ts_start=True)


@pytest.mark.asyncio
async def test_symptom_buttons_show_every_kb_label_with_its_id(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    await ActionAskSymptom().run(dispatcher, load_tracker("fault_message"), flow_domain)
    assert render(flow_domain, dispatcher.messages) == [
        "好的，我们一步一步来排查。请问具体是哪种情况？选一个最接近的，或者直接描述一下："
    ]
    shown = response_buttons(flow_domain, dispatcher.messages[0])
    titles = [title for title, _ in shown]
    assert titles[:6] == ["无法开机", "打印问题", "刷卡读卡", "网络连接", "系统卡顿", "屏幕显示错误码"]
    assert ("打印问题", '/fault_hardware{"symptom": "printer"}') in shown
    assert ("网络连接", '/fault_network{"symptom": "network"}') in shown


@pytest.mark.asyncio
async def test_error_code_the_merchant_must_act_on_starts_the_code_walk(action_store, flow_domain) -> None:
    events = await ActionStartTroubleshooting().run(
        CollectingDispatcher(), load_tracker("error_code_explained"), flow_domain
    )
    # the explanation said what the first two stages say (read the code; 重新签到 for A0)
    assert events == reset(symptom="screen_error", ts_stage=1, ts_shown=1, ts_code="A0", ts_start=True)


@pytest.mark.parametrize("code", ["51", "43", "Z9"])
@pytest.mark.asyncio
async def test_card_side_high_risk_or_unknown_codes_start_no_walk(action_store, flow_domain, code) -> None:
    tracker = answer(
        "error_code_explained",
        f"显示{code}",
        "error_code",
        entities=[{"entity": "error_code", "value": code}],
    )
    events = await ActionStartTroubleshooting().run(CollectingDispatcher(), tracker, flow_domain)
    assert events == [SlotSet("ts_start", False)]


# ---------------------------------------------------------------- asking
@pytest.mark.asyncio
async def test_first_stage_introduces_the_walk_and_asks_if_solved(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("troubleshoot_answer", ts_stage=0, ts_shown=None)
    events = await ActionAskTsSolved().run(dispatcher, tracker, flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0] == "明白，您遇到的是“打印问题”。我们从最简单的开始，一步一步排查。"
    assert texts[1].startswith("第1步（共4步）：先检查打印纸\n1. 确认用的是热敏纸")
    assert texts[1].endswith("按上面的方法试过后，问题解决了吗？")
    assert response_buttons(flow_domain, dispatcher.messages[1]) == SOLVED_BUTTONS
    assert events == [SlotSet("ts_shown", 0)]


@pytest.mark.asyncio
async def test_factory_reset_stage_reminds_to_settle_and_back_up_first(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("troubleshoot_answer", ts_stage=2, ts_shown=1)
    await ActionAskTsSolved().run(dispatcher, tracker, flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0].startswith("⚠️ 下一步会恢复出厂设置")
    assert "请务必先做一次结算" in texts[0] and "备份重要数据" in texts[0]
    assert texts[1].startswith("第3步（共4步）：结算备份后恢复出厂设置")


@pytest.mark.asyncio
async def test_stages_without_data_loss_carry_no_backup_reminder(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    await ActionAskTsSolved().run(
        dispatcher, answer("troubleshoot_answer", ts_stage=1, ts_shown=0), flow_domain
    )
    texts = render(flow_domain, dispatcher.messages)
    assert len(texts) == 1 and texts[0].startswith("第2步（共4步）：清洁打印头后重启")


@pytest.mark.asyncio
async def test_last_stage_adds_the_known_brands_hotline(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("troubleshoot_answer", ts_stage=3, ts_shown=2, brand="拉卡拉")
    await ActionAskTsSolved().run(dispatcher, tracker, flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[0] == "您用的是拉卡拉，也可以直接拨打官方客服热线 95016。"
    assert texts[1].startswith("第4步（共4步）：联系客服报修")


@pytest.mark.asyncio
async def test_a_re_ask_does_not_repeat_the_steps(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionAskTsSolved().run(
        dispatcher, answer("troubleshoot_answer", ts_stage=1, ts_shown=1), flow_domain
    )
    assert render(flow_domain, dispatcher.messages) == ["按上面的方法处理后，问题解决了吗？"]
    assert response_buttons(flow_domain, dispatcher.messages[0]) == SOLVED_BUTTONS
    assert events == []


@pytest.mark.asyncio
async def test_after_an_error_code_the_first_question_is_whether_retrying_helped(
    action_store, flow_domain
) -> None:
    dispatcher = CollectingDispatcher()
    tracker = answer("error_code_explained", symptom="screen_error", ts_stage=1, ts_shown=1, ts_code="A0")
    assert await ActionAskTsSolved().run(dispatcher, tracker, flow_domain) == []
    assert render(flow_domain, dispatcher.messages) == ["再试以后，问题解决了吗？"]
    assert response_buttons(flow_domain, dispatcher.messages[0]) == SOLVED_BUTTONS


# ---------------------------------------------------------------- answers
@pytest.mark.parametrize("text", ["还没有", "/deny", "没有"])
@pytest.mark.asyncio
async def test_not_solved_moves_to_the_next_stage(action_store, flow_domain, text) -> None:
    events, said = await validate(answer("troubleshoot_answer", text, "deny"), flow_domain)
    assert events == [SlotSet("ts_solved", None), SlotSet("ts_stage", 1)]
    assert said == []


@pytest.mark.asyncio
async def test_still_broken_described_as_a_fault_counts_as_not_solved(action_store, flow_domain) -> None:
    events, _ = await validate(answer("troubleshoot_answer", "重启了还是一样", "fault_software"), flow_domain)
    assert events == [SlotSet("ts_solved", None), SlotSet("ts_stage", 1)]


@pytest.mark.asyncio
async def test_not_solved_after_the_last_stage_ends_the_walk_unsolved(action_store, flow_domain) -> None:
    events, _ = await validate(answer("troubleshoot_answer", "还是不行", "deny", ts_stage=3), flow_domain)
    assert events == [SlotSet("ts_solved", "unsolved")]


@pytest.mark.parametrize(
    ("text", "intent"),
    [("解决了", "affirm"), ("/affirm", "affirm"), ("解决了", "thanks"), ("好了谢谢", "thanks")],
)
@pytest.mark.asyncio
async def test_solved(action_store, flow_domain, text, intent) -> None:
    events, _ = await validate(answer("troubleshoot_answer", text, intent), flow_domain)
    assert events == [SlotSet("ts_solved", "solved")]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("好的", "affirm"),
        ("好的！", "affirm"),
        ("OK", "affirm"),
        ("收到", "affirm"),
        ("谢谢", "thanks"),
        ("好的谢谢🙏", "thanks"),
        ("我去试试", "affirm"),
        ("稍等我试一下", "affirm"),
        ("谢谢 我先试试看", "thanks"),
        ("好的 我去试试", "out_of_scope"),
        ("等会试试", "nlu_fallback"),
    ],
)
@pytest.mark.asyncio
async def test_steps_read_but_not_yet_tried_are_not_a_solved_walk(
    action_store, flow_domain, text, intent
) -> None:
    events, said = await validate(answer("troubleshoot_answer", text, intent), flow_domain)
    assert events == [SlotSet("ts_solved", None)]  # the form asks again
    assert said == ["好的，不着急，您先按上面的步骤试一试。"]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("试了 好了", "affirm"),
        ("试过了可以了", "affirm"),
        ("好了", "affirm"),
        ("是的", "affirm"),
        ("嗯嗯", "affirm"),
    ],
)
@pytest.mark.asyncio
async def test_a_result_after_trying_is_solved(action_store, flow_domain, text, intent) -> None:
    events, said = await validate(answer("troubleshoot_answer", text, intent), flow_domain)
    assert events == [SlotSet("ts_solved", "solved")] and said == []


@pytest.mark.parametrize(
    ("text", "intent", "stage"),
    [("还是不行 我再试试", "deny", 1), ("试试重启 还是一样", "fault_software", 1)],
)
@pytest.mark.asyncio
async def test_trying_words_in_a_result_do_not_hold_the_walk(
    action_store, flow_domain, text, intent, stage
) -> None:
    events, said = await validate(answer("troubleshoot_answer", text, intent, 0.9), flow_domain)
    assert events == [SlotSet("ts_solved", None), SlotSet("ts_stage", stage)] and said == []


@pytest.mark.parametrize("text", ["算了", "不用了", "算了不修了"])
@pytest.mark.asyncio
async def test_stop_words_end_the_walk(action_store, flow_domain, text) -> None:
    events, said = await validate(answer("troubleshoot_answer", text, "deny"), flow_domain)
    assert events == [SlotSet("ts_solved", "stopped")]
    assert said == []


@pytest.mark.asyncio
async def test_stop_words_are_the_kbs(action_store, flow_domain) -> None:
    """Staff add a word to vocabulary.yml ``flow_stop_words``; after `posbot kb build` it ends the
    walk (before, "不搞了" was a plain "not solved": the next stage)."""
    tracker = answer("troubleshoot_answer", "不搞了", "deny")
    assert (await validate(tracker, flow_domain))[0] == [SlotSet("ts_solved", None), SlotSet("ts_stage", 1)]
    with Session(action_store.engine) as session, session.begin():
        row = session.get(KbMeta, "flow_stop_words")
        row.value = json.dumps([*json.loads(row.value), "不搞了"], ensure_ascii=False)
        session.get(KbMeta, "digest").value = "rebuilt with a new stop word"  # as every build does
    assert (await validate(tracker, flow_domain))[0] == [SlotSet("ts_solved", "stopped")]


@pytest.mark.asyncio
async def test_a_different_question_is_not_taken_as_an_answer(action_store, flow_domain) -> None:
    # No slot at all: Rasa's form rejects itself and data/rules/leave_flows.yml answers instead.
    events, said = await validate(answer("troubleshoot_answer", "手续费怎么算", "fees", 0.99), flow_domain)
    assert events == [] and said == []


@pytest.mark.parametrize(
    ("text", "intent", "confidence"), [("嗯那个啥", "nlu_fallback", 0.3), ("正常了", "fault_software", 0.51)]
)
@pytest.mark.asyncio
async def test_an_unclear_answer_is_asked_again(action_store, flow_domain, text, intent, confidence) -> None:
    events, said = await validate(answer("troubleshoot_answer", text, intent, confidence), flow_domain)
    assert events == [SlotSet("ts_solved", None)]
    assert said == ["抱歉，我没太明白。"]


@pytest.mark.asyncio
async def test_a_new_fault_description_switches_the_symptom(action_store, flow_domain) -> None:
    events, _ = await validate(
        answer("troubleshoot_answer", "现在刷卡也读不了卡", "fault_hardware"), flow_domain
    )
    assert events == [
        SlotSet("symptom", "card_reading"),
        SlotSet("ts_stage", 0),
        SlotSet("ts_shown", None),
        SlotSet("ts_code", None),
    ]


def brand_said(text: str, brand: str = "拉卡拉") -> list[dict]:
    start = text.index(brand)
    return [{"entity": "brand", "value": brand, "start": start, "end": start + len(brand)}]


@pytest.mark.parametrize(
    ("text", "intent", "confidence"),
    [
        ("拉卡拉的", "nlu_fallback", 0.4),
        ("我用的是拉卡拉的机器！", "choose_brand", 0.9),
        ("拉卡拉", "fault_hardware", 0.55),
    ],
)
@pytest.mark.asyncio
async def test_a_brand_named_mid_walk_is_noted_and_the_walk_asks_again(
    action_store, flow_domain, text, intent, confidence
) -> None:
    # Rasa's slot mapping (from_entity) has already put the brand in its slot.
    tracker = answer(
        "troubleshoot_answer",
        text,
        intent,
        confidence,
        entities=brand_said(text),
        candidate=("brand", "拉卡拉"),
    )
    dispatcher = CollectingDispatcher()
    events = await ValidateTroubleshootForm().run(dispatcher, tracker, flow_domain)
    assert events == [SlotSet("ts_solved", None)]  # no ending, no next stage, not rejected
    tracker.add_slots(events)
    await ActionAskTsSolved().run(dispatcher, tracker, flow_domain)  # the form's next question
    assert render(flow_domain, dispatcher.messages) == [
        "好的，已记下您用的是拉卡拉。",
        "按上面的方法处理后，问题解决了吗？",
    ]
    assert response_buttons(flow_domain, dispatcher.messages[1]) == SOLVED_BUTTONS


def test_rasa_fills_the_brand_slot_while_a_form_runs(flow_domain) -> None:
    """The validation above only acknowledges: the slot itself is Rasa's from_entity mapping,
    which applies during a form as long as it has no conditions."""
    mappings = flow_domain["slots"]["brand"]["mappings"]
    assert mappings == [{"type": "from_entity", "entity": "brand"}]


@pytest.mark.asyncio
async def test_a_brand_noted_mid_walk_brings_its_hotline_with_the_last_stage(
    action_store, flow_domain
) -> None:
    tracker = answer(
        "troubleshoot_answer",
        "拉卡拉的",
        "nlu_fallback",
        0.4,
        entities=brand_said("拉卡拉的"),
        candidate=("brand", "拉卡拉"),
        ts_stage=3,
        ts_shown=2,
    )
    dispatcher = CollectingDispatcher()
    tracker.add_slots(await ValidateTroubleshootForm().run(dispatcher, tracker, flow_domain))
    await ActionAskTsSolved().run(dispatcher, tracker, flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts[:2] == ["好的，已记下您用的是拉卡拉。", "您用的是拉卡拉，也可以直接拨打官方客服热线 95016。"]
    assert texts[2].startswith("第4步（共4步）：联系客服报修")


@pytest.mark.asyncio
async def test_a_fault_with_a_brand_is_still_an_answer(action_store, flow_domain) -> None:
    """ "拉卡拉的机器还是打不出来": a result of the walk that names the brand, not a brand statement."""
    text = "拉卡拉的机器还是打不出来"
    tracker = answer(
        "troubleshoot_answer",
        text,
        "fault_hardware",
        0.9,
        entities=brand_said(text),
        candidate=("brand", "拉卡拉"),
    )
    events, said = await validate(tracker, flow_domain)
    assert SlotSet("ts_stage", 1) in events and said == []


# ---------------------------------------------------------------- choosing the symptom
@pytest.mark.asyncio
async def test_symptom_button_is_accepted_and_starts_at_the_first_stage(action_store, flow_domain) -> None:
    events, _ = await validate(load_tracker("troubleshoot_choose_symptom"), flow_domain)
    assert events == [
        SlotSet("symptom", "network"),
        SlotSet("ts_stage", 0),
        SlotSet("ts_shown", None),
        SlotSet("ts_code", None),
    ]


@pytest.mark.asyncio
async def test_typed_description_finds_the_symptom(action_store, flow_domain) -> None:
    tracker = answer(
        "troubleshoot_choose_symptom",
        "小票打出来是白纸",
        "fault_hardware",
        entities=[],
        candidate=("symptom", None),
    )
    events, _ = await validate(tracker, flow_domain)
    assert events[0] == SlotSet("symptom", "printer")


@pytest.mark.asyncio
async def test_unrecognised_description_asks_again(action_store, flow_domain) -> None:
    tracker = answer(
        "troubleshoot_choose_symptom",
        "就是不好用",
        "fault_hardware",
        entities=[],
        candidate=("symptom", None),
    )
    events, said = await validate(tracker, flow_domain)
    assert events == [SlotSet("symptom", None)]
    assert said == ["抱歉，我没能从您的描述判断出是哪一类问题。"]


@pytest.mark.asyncio
async def test_a_brand_named_instead_of_a_symptom_is_noted_and_asked_again(action_store, flow_domain) -> None:
    text = "我用的是拉卡拉"
    tracker = answer(
        "troubleshoot_choose_symptom",
        text,
        "nlu_fallback",
        0.4,
        entities=brand_said(text),
        candidate=("symptom", None),
    )
    events, said = await validate(tracker, flow_domain)
    assert events == [SlotSet("symptom", None)]
    assert said == ["好的，已记下您用的是拉卡拉。"]  # then the symptom buttons again


@pytest.mark.parametrize(("text", "ending"), [("都不是", "unsolved"), ("算了", "stopped")])
@pytest.mark.asyncio
async def test_none_of_the_symptoms_or_stop_ends_the_form(action_store, flow_domain, text, ending) -> None:
    tracker = answer("troubleshoot_choose_symptom", text, "deny", entities=[], candidate=("symptom", None))
    events, _ = await validate(tracker, flow_domain)
    assert SlotSet("ts_solved", ending) in events
    assert SlotSet("requested_slot", None) in events


# ---------------------------------------------------------------- endings
@pytest.mark.asyncio
async def test_solved_closes_with_the_prevention_tip(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    await ActionTroubleshootSolved().run(dispatcher, load_tracker("troubleshoot_answer"), flow_domain)
    assert render(flow_domain, dispatcher.messages) == [
        "太好了，问题解决了！小提示：备用同规格的热敏纸，换纸时注意热敏面朝向打印头。"
    ]


@pytest.mark.asyncio
async def test_exhausted_steps_offer_a_ticket_or_a_human(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionOfferRepair().run(dispatcher, load_tracker("troubleshoot_answer"), flow_domain)
    texts = render(flow_domain, dispatcher.messages)
    assert texts == [
        "能试的步骤都试过了，问题还是没有解决，机器可能需要维修。我可以帮您登记报修单，"
        "由售后人员按您留的电话联系您；也可以为您转人工客服。"
    ]
    assert response_buttons(flow_domain, dispatcher.messages[0]) == [
        ("登记报修", "/affirm"),
        ("转人工客服", "/human_handoff"),
        ("暂时不用", "/deny"),
    ]
    assert events == [SlotSet("contact_phone", None), SlotSet("terminal_sn", None)]


@pytest.mark.asyncio
async def test_leaving_ends_the_form_and_clears_its_answers(action_store, flow_domain) -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionLeaveFlow().run(dispatcher, load_tracker("troubleshoot_answer"), flow_domain)
    assert events == [
        ActiveLoop(None),
        SlotSet("requested_slot", None),
        SlotSet("ts_solved", None),
        SlotSet("contact_phone", None),
        SlotSet("terminal_sn", None),
    ]
    assert dispatcher.messages == []
