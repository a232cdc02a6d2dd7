"""Whole conversations through the REST channel of a running bot (trained model, real actions).

Plus the dialogue-level test stories (tests/stories) through `rasa test core` on the same model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from kb.loader import load_content
from kb.settings import CONTENT_DIR
from ops.launcher import DEFAULT_MODEL, RunningBot
from records.store import RecordStore
from staff.accounts import StaffStore
from staff.handoff import release

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def sender() -> str:
    return f"live-{uuid.uuid4().hex[:10]}"


def text_of(messages: list[dict]) -> str:
    return "\n".join(m.get("text", "") for m in messages)


def button_titles(messages: list[dict]) -> list[str]:
    return [b["title"] for m in messages for b in m.get("buttons") or []]


def records(bot: RunningBot) -> RecordStore:
    return RecordStore(create_engine(bot.database_url))


def test_printer_fault_walked_stage_by_stage_then_a_ticket(live_bot: RunningBot) -> None:
    merchant = sender()
    first = live_bot.send(merchant, "打印机不出纸")
    assert "明白，您遇到的是“打印问题”" in text_of(first)
    assert "第1步（共4步）：先检查打印纸" in text_of(first)
    assert button_titles(first) == ["解决了", "还没有"]

    assert "第2步（共4步）：清洁打印头后重启" in live_bot.texts(merchant, "/deny")
    third = live_bot.texts(merchant, "还是不行")
    assert "请务必先做一次结算" in third and "第3步（共4步）：结算备份后恢复出厂设置" in third
    assert "第4步（共4步）：联系客服报修" in live_bot.texts(merchant, "/deny")

    offer = live_bot.send(merchant, "/deny")
    assert "能试的步骤都试过了" in text_of(offer)
    assert button_titles(offer) == ["登记报修", "转人工客服", "暂时不用"]

    assert "请留一个方便售后人员联系您的电话" in live_bot.texts(merchant, "/affirm")
    reask = live_bot.texts(merchant, "12345")
    assert "这个号码格式不对" in reask and "请留一个方便售后人员联系您的电话" in reask
    assert "序列号（SN）" in live_bot.texts(merchant, "13812345678")
    done = live_bot.texts(merchant, "SN:N6G1234567")
    [ticket] = records(live_bot).tickets(merchant)
    assert f"报修单已登记，单号 {ticket.number}" in done
    assert (ticket.symptom, ticket.contact, ticket.sn) == ("printer", "13812345678", "N6G1234567")
    assert len(ticket.steps_tried) == 4


def test_ok_after_the_steps_is_not_taken_for_solved(live_bot: RunningBot) -> None:
    merchant = sender()
    assert "第1步（共4步）：先检查打印纸" in live_bot.texts(merchant, "打印机不出纸")
    reply = live_bot.send(merchant, "好的 我去试试")
    assert "您先按上面的步骤试一试" in text_of(reply)
    assert "问题解决了" not in text_of(reply).replace("问题解决了吗", "")
    assert button_titles(reply) == ["解决了", "还没有"]
    assert "太好了，问题解决了" in live_bot.texts(merchant, "试了，好了")


def test_repair_offer_answered_by_typing_starts_the_ticket(live_bot: RunningBot) -> None:
    merchant = sender()
    live_bot.send(merchant, "POS机连不上网")
    for _ in range(3):
        reply = live_bot.texts(merchant, "/deny")
    assert "能试的步骤都试过了" in reply
    assert "请留一个方便售后人员联系您的电话" in live_bot.texts(merchant, "我要登记报修")


def test_fee_calculator_questions_answered_by_typing(live_bot: RunningBot) -> None:
    merchant = sender()
    assert "费率是多少" in live_bot.texts(merchant, "刷一万块扣多少手续费")
    assert "借记卡（储蓄卡）还是信用卡" in live_bot.texts(merchant, "0.6%")
    credit = live_bot.texts(merchant, "信用卡")
    assert "10,000 元 × 0.6% = 60 元" in credit and "没有单笔封顶" in credit
    debit = live_bot.texts(merchant, "那借记卡呢")
    assert "10,000 元 × 0.6% = 60 元" in debit and "封顶" in debit


def test_fee_calculator_answered_with_bare_numbers(live_bot: RunningBot) -> None:
    """The calculator's own examples ("10000元", "0.6%") and plain numbers are answers, not 拜拜."""
    merchant = sender()
    assert "费率是多少" in live_bot.texts(merchant, "刷一万块扣多少手续费")
    assert "借记卡（储蓄卡）还是信用卡" in live_bot.texts(merchant, "0.6")
    assert "10,000 元 × 0.6% = 60 元" in live_bot.texts(merchant, "信用卡")
    other = sender()
    assert "交易的金额" in live_bot.texts(other, "0.6%")
    assert "借记卡（储蓄卡）还是信用卡" in live_bot.texts(other, "10000元")
    assert "20,000 元 × 0.6% = 120 元" in live_bot.texts(other, "信用卡 2万")


def test_solved_walk_closes_with_a_tip_and_a_new_question_leaves_the_walk(live_bot: RunningBot) -> None:
    merchant = sender()
    assert "第1步（共3步）：先检查网络连接" in live_bot.texts(merchant, "POS机连不上网")
    assert "小提示：留意流量卡的余量" in live_bot.texts(merchant, "/affirm")

    other = sender()
    assert "问题解决了吗" in live_bot.texts(other, "打印机不出纸")
    fees = live_bot.texts(other, "手续费怎么算")
    assert "手续费" in fees and "问题解决了吗" not in fees
    assert live_bot.texts(other, "好的") == "好的。还有什么可以帮您的吗？"


def test_stop_words_end_the_walk_politely(live_bot: RunningBot) -> None:
    merchant = sender()
    live_bot.send(merchant, "打印机不出纸")
    assert live_bot.texts(merchant, "算了") == "好的，先不排查了。还有其他问题可以直接问我。"


def test_error_code_to_act_on_asks_whether_the_advice_helped(live_bot: RunningBot) -> None:
    merchant = sender()
    reply = live_bot.texts(merchant, "刷卡显示A0")
    assert reply.startswith("应答码 A0：") and reply.endswith("再试以后，问题解决了吗？")
    # re-signing in was the explanation's advice: the next step is the acquirer, not 重新签到 again
    step = live_bot.texts(merchant, "/deny")
    assert "第3步（共3步）：联系收单机构" in step and "重新签到后再试" not in step
    assert "小提示：每天开工先签到" in live_bot.texts(merchant, "/affirm")


def test_vague_fault_offers_symptom_buttons(live_bot: RunningBot) -> None:
    merchant = sender()
    choices = live_bot.send(merchant, "/fault_hardware")
    assert button_titles(choices)[:6] == [
        "无法开机",
        "打印问题",
        "刷卡读卡",
        "网络连接",
        "系统卡顿",
        "屏幕显示错误码",
    ]
    assert "第1步（共3步）：先检查电源和充电" in live_bot.texts(
        merchant, '/fault_hardware{"symptom": "no_power"}'
    )


def test_kb_answer_rated_unhelpful_is_stored(live_bot: RunningBot) -> None:
    merchant = sender()
    reply = live_bot.send(merchant, "怎么申请POS机")
    assert "这个回答对您有帮助吗？" in text_of(reply)
    assert button_titles(reply)[:2] == ["有帮助", "没帮助"]
    # related topics are offered: the standard questions of other application topics
    others = {
        t["question"]
        for t in load_content(CONTENT_DIR).topics
        if t["intent"] == "apply_pos" and t["id"] != "apply_process"  # the answer itself
    }
    assert any(title in others for title in button_titles(reply)[2:]), button_titles(reply)
    assert "抱歉没能帮上忙" in live_bot.texts(merchant, "/deny")
    [rating] = [r for r in records(live_bot).feedback() if r.conversation_id == merchant]
    assert (rating.helpful, rating.question) == (False, "怎么申请POS机")


def agent_on_duty(live_bot: RunningBot) -> StaffStore:
    """An agent with the staff console open (a fresh session counts as seen now)."""
    staff = StaffStore(create_engine(live_bot.database_url))
    name = f"agent-{uuid.uuid4().hex[:6]}"
    staff.start_session(staff.add_user(name, "agent", "a long staff password"))
    return staff


def test_with_no_agent_on_duty_the_merchant_is_told_and_the_bot_keeps_answering(live_bot: RunningBot) -> None:
    staff = StaffStore(create_engine(live_bot.database_url))
    for user in staff.users():
        staff.set_disabled(user.name, True)  # ends every open console session
    merchant = sender()
    reply = live_bot.texts(merchant, "转人工")
    assert "现在没有人工客服在线" in reply and "我继续为您解答" in reply
    assert "第1步" in live_bot.texts(merchant, "打印机不出纸")


def test_handoff_pauses_the_bot_until_staff_release_it(live_bot: RunningBot) -> None:
    agent_on_duty(live_bot)
    merchant = sender()
    live_bot.send(merchant, "我用的是拉卡拉")
    started = live_bot.send(merchant, "转人工")
    assert "已为您登记转人工" in text_of(started)
    assert "拉卡拉官方客服热线 95016" in text_of(started)
    assert {"posbot": {"handoff": "started"}} in [m.get("custom") for m in started]

    # Paused for a person, but never silent: each message is acknowledged, with a way back.
    waiting = live_bot.send(merchant, "在吗？")
    assert text_of(waiting).startswith("已收到，已转给人工客服，")
    assert "前面还有 0 位" not in text_of(waiting)  # nobody ahead: "下一位就轮到您"
    assert button_titles(waiting) == ["取消转人工"]

    store = records(live_bot)
    [handoff] = [h for h in store.handoffs("waiting") if h.conversation_id == merchant]
    result = release(store, handoff.id, live_bot.url, token=live_bot.token)
    assert result.merchant_notified
    assert store.handoff(handoff.id).status == "released"
    tracker = live_bot.api("GET", f"/conversations/{merchant}/tracker").json()
    said = [e for e in tracker["events"] if e["event"] == "bot"][-1]
    assert said["text"] == "人工客服已经处理完毕，我回来了。还有其他POS机问题，可以继续问我。"
    assert said["data"]["custom"] == {"posbot": {"handoff": "released"}}
    assert not tracker["paused"]
    assert "您好！我是POS机智能客服" in live_bot.texts(merchant, "你好")


def test_a_person_asked_for_in_the_middle_of_a_long_message_is_a_handoff(live_bot: RunningBot) -> None:
    agent_on_duty(live_bot)
    merchant = sender()
    started = live_bot.send(merchant, "你好 有没有人工 我的机子刷卡一直提示交易失败 急")
    assert "已为您登记转人工" in text_of(started)
    [handoff] = [h for h in records(live_bot).handoffs() if h.conversation_id == merchant]
    assert "交易失败" in handoff.question  # the agent sees what the merchant wrote
    other = sender()
    reply = live_bot.texts(other, "拉卡拉人工客服电话多少")
    assert "95016" in reply and "已为您登记转人工" not in reply
    assert not [h for h in records(live_bot).handoffs() if h.conversation_id == other]


def test_a_waiting_merchant_can_take_the_handoff_back(live_bot: RunningBot) -> None:
    agent_on_duty(live_bot)
    merchant = sender()
    assert "已为您登记转人工" in live_bot.texts(merchant, "转人工")
    assert "已取消转人工" in live_bot.texts(merchant, "取消转人工")
    [handoff] = [h for h in records(live_bot).handoffs() if h.conversation_id == merchant]
    assert handoff.status == "released"
    assert "第1步" in live_bot.texts(merchant, "打印机不出纸")  # the bot answers at once
    assert "目前没有进行中的转人工" in live_bot.texts(merchant, "取消转人工")


def test_an_unclaimed_handoff_returns_to_the_bot_after_the_timeout(live_bot: RunningBot) -> None:
    agent_on_duty(live_bot)
    merchant = sender()
    live_bot.send(merchant, "转人工")
    engine = create_engine(live_bot.database_url)
    with engine.begin() as conn:  # as if it had waited for an hour
        conn.exec_driver_sql(
            "UPDATE handoffs SET created_at = '2000-01-01 00:00:00' " "WHERE conversation_id = ?", (merchant,)
        )
    reply = live_bot.texts(merchant, "打印机不出纸")
    assert "分钟内没有客服接手，已为您切回机器人" in reply
    assert "第1步" in reply  # and the bot answers that very message


def test_test_stories_pass_with_the_trained_model(tmp_path: Path) -> None:
    if not DEFAULT_MODEL.exists():
        pytest.fail(f"{DEFAULT_MODEL} is missing: run `make train`")
    result = subprocess.run(
        [
            str(BIN / "rasa"),
            "test",
            "core",
            "--model",
            str(DEFAULT_MODEL),
            "--stories",
            str(ROOT / "tests" / "stories"),
            "--fail-on-prediction-errors",
            "--out",
            str(tmp_path / "results"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "RASA_TELEMETRY_ENABLED": "false"},
    )
    failed = tmp_path / "results" / "failed_test_stories.yml"
    assert result.returncode == 0, (
        failed.read_text(encoding="utf-8")
        if failed.exists()
        else result.stdout[-3000:] + result.stderr[-3000:]
    )
    assert "None of the test stories failed" in failed.read_text(encoding="utf-8")
