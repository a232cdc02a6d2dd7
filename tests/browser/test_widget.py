"""The website widget in a real Chromium against the real socket.io channel (scripted bot).

Each test gets a fresh browser context (empty localStorage/sessionStorage), so each one starts
a new conversation; the scripted answers live in tests/browser/fake_bot.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import fake_bot as script
from tests.browser.conftest import FakeBot, PageProbe

pytestmark = pytest.mark.browser

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails with the reason
    expect = None

DEMO = "/webhooks/web/"
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def open_widget(page: Any, bot: FakeBot) -> None:
    """Demo page -> launcher -> the bot's own welcome with its quick replies."""
    page.goto(bot.url + DEMO)
    page.get_by_test_id("launcher").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_test_id("bot-message").first).to_have_text(script.WELCOME)
    expect(page.get_by_test_id("quick-reply")).to_have_count(len(script.WELCOME_BUTTONS))


def send(page: Any, text: str) -> None:
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("input").press("Enter")


def session_id(page: Any) -> str:
    return str(page.evaluate("() => localStorage.getItem('posbot:session_id')"))


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "() => document.documentElement.scrollWidth <= window.innerWidth"
            " && document.querySelector('.posbot-log').scrollWidth"
            " <= document.querySelector('.posbot-log').clientWidth"
        )
    )


def test_chinese_question_gets_the_numbered_answer(page: Any, fake_bot: FakeBot, screenshots: Path) -> None:
    open_widget(page, fake_bot)
    expect(page.get_by_test_id("input")).to_be_focused()
    expect(page.get_by_test_id("input")).to_have_attribute("placeholder", "请描述您遇到的问题…")
    expect(page.get_by_test_id("send")).to_have_text("发送")

    send(page, "打印机不出纸怎么办？")

    expect(page.get_by_test_id("user-message").last).to_have_text("打印机不出纸怎么办？")
    answer = page.get_by_test_id("bot-message").last
    expect(answer).to_have_text(script.PRINTER_STEPS)
    assert "\n1. 打开纸仓盖" in answer.inner_text(), "line breaks of the steps are kept"
    link = answer.get_by_role("link")
    expect(link).to_have_attribute("href", "https://help.example.com/printer")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
    expect(page.get_by_test_id("quick-reply")).to_have_count(0)  # old choices retired
    # … but what was offered stays readable, as text that cannot be pressed
    past = page.get_by_test_id("past-choices")
    expect(past).to_have_count(1)
    expect(past).to_have_text("".join(b["title"] for b in script.WELCOME_BUTTONS))
    expect(past.get_by_role("button")).to_have_count(0)
    expect(page.get_by_test_id("input")).to_have_value("")
    page.screenshot(path=str(screenshots / "widget-desktop.png"))

    greet, question = fake_bot.wait_received(2)[-2:]
    assert greet["text"] == "/greet"
    assert question["text"] == "打印机不出纸怎么办？"
    assert question["metadata"] == {"channel": "web", "page": DEMO}
    assert question["input_channel"] == "web"
    assert question["sender_id"] == greet["sender_id"] == session_id(page)


def test_quick_reply_sends_payload_and_shows_title(page: Any, fake_bot: FakeBot, screenshots: Path) -> None:
    open_widget(page, fake_bot)
    page.screenshot(path=str(screenshots / "widget-desktop-welcome.png"))
    page.get_by_test_id("quick-reply").filter(has_text="刷卡失败").click()

    expect(page.get_by_test_id("user-message").last).to_have_text("刷卡失败")
    answer = page.get_by_test_id("bot-message").last
    expect(answer).to_contain_text("刷卡失败时请记下屏幕上的错误代码")
    link = answer.get_by_role("link")
    expect(link).to_have_text("刷卡故障排查指南")
    expect(link).to_have_attribute("href", "https://help.example.com/card")
    expect(page.get_by_test_id("quick-reply")).to_have_count(0)
    page.reload()  # the history keeps the past choices as text after a reload too
    page.get_by_test_id("launcher").click()
    expect(page.get_by_test_id("past-choices")).to_have_count(1)
    expect(page.get_by_test_id("quick-reply")).to_have_count(0)
    sent = [m["text"] for m in fake_bot.received() if m["sender_id"] == session_id(page)]
    assert sent == ["/greet", "/card_failed"]


def test_history_and_session_survive_reload(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    send(page, "打印机卡纸")
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.PRINTER_STEPS)
    before_id = session_id(page)
    before = page.get_by_test_id("bot-message").all_inner_texts()
    users_before = page.get_by_test_id("user-message").all_inner_texts()

    page.reload()

    expect(page.get_by_role("dialog")).to_be_visible()  # stays open across pages
    expect(page.get_by_test_id("bot-message")).to_have_count(len(before))
    assert page.get_by_test_id("bot-message").all_inner_texts() == before
    assert page.get_by_test_id("user-message").all_inner_texts() == users_before
    assert session_id(page) == before_id

    send(page, "再问一个问题")
    expect(page.get_by_test_id("bot-message").last).to_have_text("已收到您的问题：再问一个问题")
    mine = [m for m in fake_bot.received() if m["sender_id"] == before_id]
    assert [m["text"] for m in mine] == ["/greet", "打印机卡纸", "再问一个问题"], "no 2nd greet"


def test_usable_at_360px(phone_page: Any, fake_bot: FakeBot, screenshots: Path) -> None:
    page = phone_page
    page.goto(fake_bot.url + DEMO)
    assert no_horizontal_scroll(page), "the demo page itself fits 360 px"
    launcher = page.get_by_test_id("launcher").bounding_box()
    assert launcher is not None and launcher["x"] + launcher["width"] <= 360
    page.screenshot(path=str(screenshots / "widget-360px-closed.png"))

    page.get_by_test_id("launcher").click()
    expect(page.get_by_test_id("quick-reply").first).to_be_visible()
    page.screenshot(path=str(screenshots / "widget-360px-welcome.png"))
    send(page, "打印机不出纸")
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.PRINTER_STEPS)
    send(page, "a" * 300)  # one unbreakable word must wrap, not widen the panel
    expect(page.get_by_test_id("bot-message").last).to_contain_text("已收到您的问题")

    panel = page.get_by_role("dialog").bounding_box()
    assert panel is not None
    assert panel["x"] >= 0 and panel["x"] + panel["width"] <= 360
    assert panel["y"] >= 0 and panel["y"] + panel["height"] <= 740
    for testid in ("input", "send"):
        box = page.get_by_test_id(testid).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 360, testid
    assert no_horizontal_scroll(page)
    page.get_by_test_id("bot-message").nth(1).scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "widget-360px.png"))

    page.get_by_test_id("close").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_test_id("launcher")).to_be_visible()


def test_empty_message_is_not_sent(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    page.get_by_test_id("send").click()
    page.get_by_test_id("input").fill("   \n  ")
    page.get_by_test_id("input").press("Enter")
    page.get_by_test_id("send").click()
    page.wait_for_timeout(500)

    expect(page.get_by_test_id("user-message")).to_have_count(0)
    expect(page.get_by_test_id("typing")).to_be_hidden()
    sent = [m["text"] for m in fake_bot.received() if m["sender_id"] == session_id(page)]
    assert sent == ["/greet"]


def test_html_and_long_text_are_shown_as_text(
    page: Any, fake_bot: FakeBot, probe: PageProbe, screenshots: Path
) -> None:
    open_widget(page, fake_bot)

    send(page, HOSTILE)
    expect(page.get_by_test_id("user-message").last).to_have_text(HOSTILE)
    expect(page.get_by_test_id("bot-message").last).to_have_text(f"已收到您的问题：{HOSTILE}")

    long_text = ("收银机" * 1666) + "xy"
    assert len(long_text) == 5000
    send(page, long_text)
    expect(page.get_by_test_id("user-message").last).to_have_text(long_text)
    expect(page.get_by_test_id("bot-message").last).to_have_text(f"已收到您的问题：{long_text}")

    page.wait_for_timeout(500)  # give an injected onerror handler time to fire
    assert probe.dialogs == []
    log = page.locator(".posbot-log")
    expect(log.locator("img")).to_have_count(0)
    expect(log.locator("script")).to_have_count(0)
    assert no_horizontal_scroll(page)
    page.screenshot(path=str(screenshots / "widget-hostile-text.png"))

    send(page, "打印机不出纸")  # still working
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.PRINTER_STEPS)


def test_unsafe_links_from_the_bot_stay_text(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    send(page, "[点我](javascript:alert(1)) 和 https://help.example.com/ok")
    answer = page.get_by_test_id("bot-message").last
    expect(answer).to_contain_text("[点我](javascript:alert(1))")
    expect(answer.get_by_role("link")).to_have_count(1)
    expect(answer.get_by_role("link")).to_have_attribute("href", "https://help.example.com/ok")


def test_typing_indicator_until_the_answer(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    expect(page.get_by_test_id("typing")).to_be_hidden()
    send(page, "查询有点慢的问题")
    expect(page.get_by_test_id("typing")).to_be_visible()
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.SLOW_ANSWER)
    expect(page.get_by_test_id("typing")).to_be_hidden()


def test_image_attachment(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    send(page, "发一张图片")
    image = page.get_by_test_id("bot-message").last.locator("img")
    expect(image).to_have_attribute("src", f"{fake_bot.url}/_test/image.png")
    expect(image).to_have_attribute("alt", "客服发送的图片")
    deadline = time.monotonic() + 10
    while image.evaluate("img => img.naturalWidth") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert image.evaluate("img => img.naturalWidth") > 0


def test_an_agents_reply_is_shown_as_from_a_named_person(
    page: Any, fake_bot: FakeBot, screenshots: Path
) -> None:
    open_widget(page, fake_bot)
    bot_messages = page.get_by_test_id("bot-message").count()
    send(page, "/agent")
    agent = page.get_by_test_id("agent-message").last
    expect(agent).to_be_visible()
    expect(agent).to_contain_text("人工客服 " + script.AGENT_NAME)
    expect(agent).to_contain_text(script.AGENT_TEXT)
    assert page.get_by_test_id("bot-message").count() == bot_messages  # not shown as the bot
    page.screenshot(path=str(screenshots / "widget-agent-reply.png"))
    page.reload()
    expect(page.get_by_test_id("agent-message").last).to_contain_text(script.AGENT_TEXT)


def test_handoff_banner(page: Any, fake_bot: FakeBot, screenshots: Path) -> None:
    open_widget(page, fake_bot)
    banner = page.get_by_test_id("handoff-banner")
    expect(banner).to_be_hidden()

    page.get_by_test_id("quick-reply").filter(has_text="转人工客服").click()
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.HANDOFF_TEXT)
    expect(banner).to_be_visible()
    expect(banner).to_have_text("已为您转接人工客服，请稍候…")
    page.screenshot(path=str(screenshots / "widget-handoff.png"))

    send(page, "/agent")  # a person answers: the banner stops asking the merchant to wait
    expect(page.get_by_test_id("agent-message").last).to_contain_text(script.AGENT_TEXT)
    expect(banner).to_have_text(f"人工客服正在为您服务（{script.AGENT_NAME}）")

    page.reload()  # the handoff state belongs to the conversation, not to the page
    expect(page.get_by_test_id("handoff-banner")).to_be_visible()
    expect(page.get_by_test_id("handoff-banner")).to_have_text(f"人工客服正在为您服务（{script.AGENT_NAME}）")

    send(page, "/release")
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.RELEASE_TEXT)
    expect(page.get_by_test_id("handoff-banner")).to_be_hidden()
    expect(page.get_by_test_id("system-message").last).to_have_text("人工客服已结束本次服务")
    assert page.get_by_test_id("system-message").count() == 1


def test_a_handoff_no_person_answered_ends_with_the_bots_words_only(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    page.get_by_test_id("quick-reply").filter(has_text="转人工客服").click()
    expect(page.get_by_test_id("handoff-banner")).to_have_text("已为您转接人工客服，请稍候…")
    send(page, "/release")  # e.g. the merchant cancelled, or nobody came in time
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.RELEASE_TEXT)
    expect(page.get_by_test_id("handoff-banner")).to_be_hidden()
    assert page.get_by_test_id("system-message").count() == 0  # no "served" divider, no repeat


def test_connection_drop_and_recovery(page: Any, own_fake_bot: FakeBot, screenshots: Path) -> None:
    open_widget(page, own_fake_bot)
    conversation = session_id(page)
    notice = page.get_by_test_id("connection-notice")
    expect(notice).to_be_hidden()

    own_fake_bot.stop()
    expect(notice).to_be_visible()
    expect(notice).to_have_text("连接已断开，正在重连…")

    send(page, "断线时发的消息")  # kept and sent once the connection is back
    expect(page.get_by_test_id("user-message").last).to_have_text("断线时发的消息")
    page.screenshot(path=str(screenshots / "widget-disconnected.png"))

    own_fake_bot.start()
    expect(notice).to_have_text("连接已恢复", timeout=30_000)
    expect(page.get_by_test_id("bot-message").last).to_have_text("已收到您的问题：断线时发的消息")
    expect(notice).to_be_hidden()
    assert session_id(page) == conversation
    assert [m["sender_id"] for m in own_fake_bot.received()] == [conversation]


def test_keyboard_and_accessibility(page: Any, fake_bot: FakeBot) -> None:
    page.goto(fake_bot.url + DEMO)
    launcher = page.get_by_test_id("launcher")
    expect(launcher).to_have_attribute("aria-label", "打开在线客服")
    expect(launcher).to_have_attribute("aria-expanded", "false")
    launcher.focus()
    page.keyboard.press("Enter")

    dialog = page.get_by_role("dialog", name="在线客服")
    expect(dialog).to_be_visible()
    expect(launcher).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_test_id("input")).to_be_focused()
    expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    expect(page.get_by_test_id("send")).to_have_attribute("aria-label", "发送消息")
    expect(page.get_by_test_id("close")).to_have_attribute("aria-label", "关闭对话窗口")
    expect(page.get_by_test_id("quick-reply").first).to_be_visible()

    page.keyboard.type("你好")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("user-message").last).to_have_text("你好")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    expect(page.get_by_test_id("user-message")).to_have_count(1)

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(launcher).to_be_focused()
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "keyboard focus is visible on the launcher"


def test_embedded_on_a_merchant_site_with_data_attributes(page: Any, fake_bot: FakeBot) -> None:
    """The documented one-tag embed on another origin: cross-origin socket.io, text override."""
    page.goto(f"http://localhost:{fake_bot.port}/_test/shop/checkout")
    page.get_by_test_id("launcher").click()
    expect(page.get_by_role("dialog", name="收银帮助")).to_be_visible()
    expect(page.get_by_test_id("quick-reply").first).to_be_visible()

    send(page, "打印机不出纸")
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.PRINTER_STEPS)
    question = [m for m in fake_bot.received() if m["sender_id"] == session_id(page)][-1]
    assert question["text"] == "打印机不出纸"
    assert question["metadata"] == {"channel": "web", "page": "/_test/shop/checkout"}


def test_origins_outside_posbot_cors_origins_cannot_connect(page: Any, strict_fake_bot: FakeBot) -> None:
    """POSBOT_CORS_ORIGINS=https://shop.example.com: a foreign page gets no conversation."""
    page.goto(f"http://localhost:{strict_fake_bot.port}/_test/shop/checkout")
    page.get_by_test_id("launcher").click()
    expect(page.get_by_test_id("connection-notice")).to_have_text("暂时无法连接客服，正在重试…")
    page.wait_for_timeout(1000)
    expect(page.get_by_test_id("bot-message")).to_have_count(0)
    assert strict_fake_bot.received() == []

    # The bot's own demo page is always allowed.
    page.goto(f"{strict_fake_bot.url}{DEMO}")
    page.get_by_test_id("launcher").click()
    expect(page.get_by_test_id("quick-reply").first).to_be_visible()


def test_answer_while_closed_shows_unread_badge(page: Any, fake_bot: FakeBot) -> None:
    open_widget(page, fake_bot)
    send(page, "这个问题回答得慢")
    page.keyboard.press("Escape")  # close before the slow answer arrives

    badge = page.get_by_test_id("unread")
    expect(badge).to_have_text("1")
    expect(page.get_by_test_id("launcher")).to_have_attribute("aria-label", "打开在线客服，1条新消息")
    page.get_by_test_id("launcher").click()
    expect(badge).to_be_hidden()
    expect(page.get_by_test_id("bot-message").last).to_have_text(script.SLOW_ANSWER)
