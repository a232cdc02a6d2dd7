"""The staff console on the running bot: an agent answers a waiting merchant and hands them back.

Each merchant channel gets the agent's words its own way: a REST client fetches them from
GET /webhooks/rest/messages; a WeChat merchant gets them as a customer-service message or, as
here (the test bot has no WECHAT_APP_SECRET, like an account without that permission), with the
passive reply to their next message.
"""

from __future__ import annotations

import uuid

import pytest
import requests
from sqlalchemy import create_engine

from ops.launcher import RunningBot
from records.store import RecordStore
from staff.accounts import StaffStore
from tests.integration.test_wechat_live import _fields, _post_plain, _warm_up

pytestmark = pytest.mark.integration
PASSWORD = "a long staff password"


def _poll(bot: RunningBot, sender: str, since: str | None = None) -> dict:
    params = {"sender": sender, **({"since": since} if since else {})}
    response = requests.get(f"{bot.url}/webhooks/rest/messages", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _console(bot: RunningBot) -> tuple[requests.Session, str, str]:
    """A logged-in agent whose console has been seen: on duty."""
    name = f"agent-{uuid.uuid4().hex[:6]}"
    StaffStore(create_engine(bot.database_url)).add_user(name, "agent", PASSWORD)
    console = requests.Session()
    login = console.post(f"{bot.url}/staff/api/login", json={"name": name, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200
    assert console.get(f"{bot.url}/staff/api/handoffs", timeout=10).status_code == 200
    return console, name, login.json()["csrf"]


def test_an_agent_releases_a_waiting_merchant_from_the_console(live_bot: RunningBot) -> None:
    name = f"agent-{uuid.uuid4().hex[:6]}"
    engine = create_engine(live_bot.database_url)
    StaffStore(engine).add_user(name, "agent", PASSWORD)
    console = requests.Session()
    assert console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).status_code == 401
    page = console.get(f"{live_bot.url}/staff/", timeout=10)
    assert page.status_code == 200 and "posbot 客服工作台" in page.text
    login = console.post(
        f"{live_bot.url}/staff/api/login", json={"name": name, "password": PASSWORD}, timeout=10
    )
    assert login.status_code == 200
    csrf = login.json()["csrf"]

    # The agent's console is open, so the merchant is queued for a person (the bot pauses).
    merchant = f"console-{uuid.uuid4().hex[:8]}"
    assert "已为您登记转人工" in live_bot.texts(merchant, "转人工")
    assert live_bot.texts(merchant, "在吗").startswith("已收到，已转给人工客服")

    waiting = console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).json()["handoffs"]
    [item] = [h for h in waiting if h["conversation_id"] == merchant]
    assert {"from": "merchant", "text": "转人工"} in item["transcript"]

    # The agent claims it and answers in the chat; the merchant's conversation carries both.
    base = f"{live_bot.url}/staff/api/handoffs/{item['id']}"
    assert console.post(f"{base}/claim", headers={"X-CSRF-Token": csrf}, timeout=30).json()["agent"] == name
    answer = "您好，请把屏幕上的提示拍给我看看"
    sent = console.post(f"{base}/reply", json={"text": answer}, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert sent.status_code == 200
    assert (sent.json()["delivered"], sent.json()["reason"]) == (False, "rest_poll")

    # The merchant's REST client fetches the agent's words (and only new ones with the cursor).
    polled = _poll(live_bot, merchant)
    from_agent = [(m["agent"], m["text"]) for m in polled["messages"] if m["sender"] == "agent"]
    assert from_agent[-1] == (name, answer)
    assert from_agent[0][1].startswith(f"您好，我是人工客服{name}")
    assert any(m["sender"] == "bot" and "已为您登记转人工" in (m["text"] or "") for m in polled["messages"])
    cursor = polled["cursor"]
    assert _poll(live_bot, merchant, cursor)["messages"] == []
    for bad in ({"sender": merchant, "since": "yesterday"}, {"since": cursor}):
        refused = requests.get(f"{live_bot.url}/webhooks/rest/messages", params=bad, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]
    tracker = live_bot.api("GET", f"/conversations/{merchant}/tracker").json()
    said = [
        ((e.get("data") or {}).get("custom") or {}).get("posbot", {}).get("agent_message")
        for e in tracker["events"]
        if e["event"] == "bot"
    ]
    assert {"name": name, "text": answer} in said
    assert any(s and s["text"].startswith(f"您好，我是人工客服{name}") for s in said)
    lines = console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).json()["handoffs"]
    [mine] = [h for h in lines if h["id"] == item["id"]]
    assert (
        mine["status"] == "active" and {"from": "agent", "text": answer, "name": name} in (mine["transcript"])
    )

    url = f"{base}/release"
    assert console.post(url, timeout=10).status_code == 403  # no CSRF token
    released = console.post(url, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert released.status_code == 200 and released.json()["merchant_notified"] is True
    assert RecordStore(engine).handoff(item["id"]).status == "released"
    news = _poll(live_bot, merchant, cursor)["messages"]
    assert [m["sender"] for m in news] == ["bot"]
    assert news[0]["text"].startswith("人工客服已经处理完毕")
    assert news[0]["custom"] == {"posbot": {"handoff": "released"}}
    assert "您好！我是POS机智能客服" in live_bot.texts(merchant, "你好")


def test_an_agent_answers_a_wechat_merchant_at_their_next_message(live_bot: RunningBot) -> None:
    _warm_up(live_bot.url)
    console, name, csrf = _console(live_bot)
    # The first handoff after start can outlast WeChat's reply budget (an unanswered "success",
    # the answer then kept for the next message); take that first one through REST.
    live_bot.texts(f"warm-{uuid.uuid4().hex[:8]}", "转人工")
    merchant = f"oStaffLive{uuid.uuid4().hex[:16]}"

    def merchant_says(text: str) -> str:
        """The passive reply WeChat shows the merchant ("" when the bot said nothing)."""
        reply = _post_plain(live_bot.url, text, merchant)
        assert reply.status_code == 200, reply.text
        return "" if reply.text == "success" else _fields(reply.text)["Content"]

    assert "已为您登记转人工" in merchant_says("转人工")
    listed = console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).json()["handoffs"]
    [item] = [h for h in listed if h["conversation_id"] == merchant]
    assert item["channel"] == "wechat" and item["undelivered"] == 0

    base = f"{live_bot.url}/staff/api/handoffs/{item['id']}"
    claimed = console.post(f"{base}/claim", headers={"X-CSRF-Token": csrf}, timeout=30).json()
    assert (claimed["delivered"], claimed["reason"]) == (False, "wechat_no_secret")
    answer = "请把屏幕上的提示拍给我看看"
    sent = console.post(f"{base}/reply", json={"text": answer}, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert sent.status_code == 200
    assert sent.json() == {"id": item["id"], "delivered": False, "reason": "wechat_no_secret"}
    listed = console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).json()["handoffs"]
    assert [h["undelivered"] for h in listed if h["id"] == item["id"]] == [2]

    # The merchant writes again: both messages come first in the reply, each naming the agent.
    reply = merchant_says("我在店里")
    assert reply.startswith(f"【人工客服 {name}】\n您好，我是人工客服{name}")
    assert f"【人工客服 {name}】\n{answer}" in reply
    assert answer not in merchant_says("拍好了")  # exactly once (the bot is paused: no reply)
    listed = console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).json()["handoffs"]
    [mine] = [h for h in listed if h["id"] == item["id"]]
    assert mine["undelivered"] == 0
    assert {"from": "merchant", "text": "我在店里"} in mine["transcript"]

    released = console.post(f"{base}/release", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert released.status_code == 200 and released.json()["merchant_notified"] is True
    back = merchant_says("你好")
    assert back.startswith("人工客服已经处理完毕，我回来了")
    assert "您好！我是POS机智能客服" in back
