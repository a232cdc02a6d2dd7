"""The staff console on the running bot: an agent logs in and hands a waiting merchant back."""

from __future__ import annotations

import uuid

import pytest
import requests
from sqlalchemy import create_engine

from bot.launcher import RunningBot
from kb.records import RecordStore
from kb.staff import StaffStore

pytestmark = pytest.mark.integration
PASSWORD = "a long staff password"


def test_an_agent_releases_a_waiting_merchant_from_the_console(live_bot: RunningBot) -> None:
    name = f"agent-{uuid.uuid4().hex[:6]}"
    engine = create_engine(live_bot.database_url)
    StaffStore(engine).add_user(name, "agent", PASSWORD)
    console = requests.Session()
    assert console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).status_code == 401
    page = console.get(f"{live_bot.url}/staff/", timeout=10)
    assert page.status_code == 200 and "posbot 客服工作台" in page.text
    login = console.post(f"{live_bot.url}/staff/api/login",
                         json={"name": name, "password": PASSWORD}, timeout=10)
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
    assert console.post(f"{base}/claim", headers={"X-CSRF-Token": csrf},
                        timeout=30).json()["agent"] == name
    answer = "您好，请把屏幕上的提示拍给我看看"
    assert console.post(f"{base}/reply", json={"text": answer}, headers={"X-CSRF-Token": csrf},
                        timeout=30).status_code == 200
    tracker = live_bot.api("GET", f"/conversations/{merchant}/tracker").json()
    said = [((e.get("data") or {}).get("custom") or {}).get("posbot", {}).get("agent_message")
            for e in tracker["events"] if e["event"] == "bot"]
    assert {"name": name, "text": answer} in said
    assert any(s and s["text"].startswith(f"您好，我是人工客服{name}") for s in said)
    lines = console.get(f"{live_bot.url}/staff/api/handoffs", timeout=10).json()["handoffs"]
    [mine] = [h for h in lines if h["id"] == item["id"]]
    assert mine["status"] == "active" and {"from": "agent", "text": answer, "name": name} in (
        mine["transcript"])

    url = f"{base}/release"
    assert console.post(url, timeout=10).status_code == 403  # no CSRF token
    released = console.post(url, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert released.status_code == 200 and released.json()["merchant_notified"] is True
    assert RecordStore(engine).handoff(item["id"]).status == "released"
    assert "您好！我是POS机智能客服" in live_bot.texts(merchant, "你好")
