"""Both sides in real Chromium against the real bot: a merchant in the widget asks for a person,
an agent in the staff console (phone-sized page) sees it, claims it, replies, hands it back."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine

from staff.accounts import StaffStore

pytestmark = [pytest.mark.browser, pytest.mark.integration]
WAIT_MS = 60_000
PASSWORD = "a long staff password"


def test_an_agent_answers_a_merchant_in_the_widget(
    page: Any, phone_page: Any, live_bot: Any, screenshots: Any
) -> None:
    from playwright.sync_api import expect

    login = f"li{uuid.uuid4().hex[:4]}"
    name = f"小李{login[2:]}"  # the display name: what the merchant sees
    StaffStore(create_engine(live_bot.database_url)).add_user(login, "agent", PASSWORD, display_name=name)
    console = phone_page
    console.goto(f"{live_bot.url}/staff/")
    console.get_by_test_id("login-username").fill(login)
    console.get_by_test_id("login-password").fill(PASSWORD)
    console.get_by_test_id("login-submit").click()
    expect(console.get_by_test_id("who")).to_contain_text(login, timeout=WAIT_MS)

    shop = f"{uuid.uuid4().hex[:6]}号店"
    page.goto(f"{live_bot.url}/webhooks/web/")
    page.get_by_test_id("launcher").click()
    expect(page.get_by_test_id("bot-message").first).to_be_visible(timeout=WAIT_MS)
    for text in (f"你好 我是{shop}", "转人工"):
        page.get_by_test_id("input").fill(text)
        page.get_by_test_id("input").press("Enter")
        expect(page.get_by_test_id("user-message").last).to_have_text(text)
    expect(page.get_by_test_id("handoff-banner")).to_be_visible(timeout=WAIT_MS)

    item = console.get_by_test_id("handoff-item").filter(has_text=shop)
    expect(item).to_be_visible(timeout=WAIT_MS)  # the inbox refreshes by itself
    item.get_by_test_id("claim").click()
    agent_messages = page.get_by_test_id("agent-message")
    expect(agent_messages.last).to_contain_text(f"人工客服 {name}", timeout=WAIT_MS)
    expect(agent_messages.last).to_contain_text(f"我是人工客服{name}")
    assert login not in page.get_by_test_id("log").inner_text()  # never the login name
    expect(page.get_by_test_id("handoff-banner")).to_have_text(f"人工客服正在为您服务（{name}）")
    # the staff see the buttons the bot offered (the greeting's), not just its words
    expect(item.get_by_test_id("transcript")).to_contain_text("［按钮：故障排查")

    item.get_by_test_id("agent-input").fill("您好，请把屏幕上的提示拍给我看看")
    item.get_by_test_id("agent-send").click()
    expect(agent_messages.last).to_contain_text("请把屏幕上的提示拍给我看看", timeout=WAIT_MS)
    expect(item.get_by_test_id("transcript")).to_contain_text("请把屏幕上的提示拍给我看看", timeout=WAIT_MS)
    # the newest line is in view (the box scrolls, 320 px), also after the inbox refreshed
    newest_in_view = (
        "t => { const a = t.getBoundingClientRect(), b = t.lastElementChild.getBoundingClientRect();"
        " return b.bottom <= a.bottom + 2 && b.top >= a.top - 2; }"
    )
    assert item.get_by_test_id("transcript").evaluate(newest_in_view)
    console.wait_for_timeout(6000)
    assert item.get_by_test_id("transcript").evaluate(newest_in_view)
    console.screenshot(path=str(screenshots / "console-phone-chat.png"))
    page.screenshot(path=str(screenshots / "widget-agent-live.png"))

    item.get_by_test_id("release").click()
    expect(page.get_by_test_id("handoff-banner")).to_be_hidden(timeout=WAIT_MS)
    bot_messages = page.get_by_test_id("bot-message")
    expect(bot_messages.last).to_contain_text("我回来了", timeout=WAIT_MS)
    page.get_by_test_id("input").fill("打印机不出纸")
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("bot-message").filter(has_text="先检查打印纸").last).to_be_visible(
        timeout=WAIT_MS
    )
