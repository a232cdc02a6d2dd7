"""The REST webhook of a running bot, used the way merchants and broken clients use it."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration


def test_brand_is_remembered_across_turns(live_bot) -> None:
    first = live_bot.texts("rest-brand", "我用的是拉卡拉")
    assert "拉卡拉" in first
    assert "95016" in live_bot.texts("rest-brand", "客服电话多少")


def test_error_code_in_traditional_chinese(live_bot) -> None:
    reply = live_bot.texts("rest-trad", "刷卡機顯示A0是什麼意思")
    assert "应答码 A0" in reply and "签到" in reply


def test_a_bare_response_code_is_explained_and_88_still_says_goodbye(live_bot) -> None:
    reply = live_bot.texts("rest-bare-code", "51")
    assert "应答码 51" in reply and "余额" in reply
    farewell = live_bot.texts("rest-bare-88", "88")
    assert "祝您生意兴隆" in farewell and "应答码" not in farewell


def test_fee_calculation_end_to_end(live_bot) -> None:
    reply = live_bot.texts("rest-fee", "刷了10000元信用卡,费率0.6%")
    assert "10,000 元 × 0.6% = 60 元" in reply
    assert "以您签约的费率" in reply


def test_fee_question_asks_for_rate_then_card_type_then_answers(live_bot) -> None:
    assert "费率是多少" in live_bot.texts("rest-fee-2", "刷一万块扣多少手续费")
    assert "借记卡" in live_bot.texts("rest-fee-2", '/fees{"rate": "0.6"}')
    reply = live_bot.texts("rest-fee-2", '/fees{"card_type": "借记卡"}')
    assert "10,000 元 × 0.6% = 60 元" in reply and "13 元" in reply


@pytest.mark.parametrize(
    "message", ["", "   ", "😀😀😀", "\x00\x01\x02", "刷" * 10_000, "<script>alert(1)</script>"]
)
def test_odd_messages_get_a_polite_reply_and_the_server_keeps_serving(live_bot, message) -> None:
    response = requests.post(
        f"{live_bot.url}/webhooks/rest/webhook", json={"sender": "rest-odd", "message": message}, timeout=60
    )
    assert response.status_code < 500
    if response.status_code == 200:
        if message.strip():  # never silence: "😀😀😀" once crashed DIET and got []
            assert response.json()
        for reply in response.json():
            assert "text" in reply or "buttons" in reply or "custom" in reply
    assert "95016" in live_bot.texts("rest-odd-after", "拉卡拉客服电话")


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"sender": "x"}', b"[1, 2]"])
def test_malformed_requests_get_a_4xx(live_bot, body) -> None:
    response = requests.post(
        f"{live_bot.url}/webhooks/rest/webhook",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert 400 <= response.status_code < 500
    assert live_bot.texts("rest-after-bad", "你好")


def test_only_the_rasa_server_loads_tensorflow(live_bot) -> None:
    """The action server stays small (Rasa's CLI imports TensorFlow when TF_* threads are set)."""
    actions, rasa = live_bot.processes

    def tensorflow_loaded(pid: int) -> bool:
        with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
            return "libtensorflow" in maps.read()

    assert tensorflow_loaded(rasa.pid) and not tensorflow_loaded(actions.pid)


def test_ten_merchants_at_once_each_get_their_own_answers(live_bot) -> None:
    """Messages wait their turn at the gate (bot/speedups/admission.py); nobody's answer goes astray."""
    from concurrent.futures import ThreadPoolExecutor

    questions = [
        ("拉卡拉客服电话多少", "95016"),
        ("刷卡显示A0", "应答码 A0"),
        ("刷了10000元信用卡,费率0.6%", "60 元"),
        ("報錯51是什麼意思", "应答码 51"),
        ("打印机不出纸", "打印"),
    ]

    def merchant(n: int) -> list[tuple[str, str]]:
        asked = [questions[(n + i) % len(questions)] for i in range(3)]
        return [(expected, live_bot.texts(f"rest-crowd-{n}", text)) for text, expected in asked]

    with ThreadPoolExecutor(10) as pool:
        answered = [pair for batch in pool.map(merchant, range(10)) for pair in batch]
    assert len(answered) == 30
    for expected, reply in answered:
        assert expected in reply
