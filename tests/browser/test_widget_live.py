"""The widget against the real bot: trained model, `rasa run`, this channel (fixture live_bot).

`live_bot` comes from tests/conftest.py; it yields an object whose `.url` is the running Rasa
server, e.g. "http://127.0.0.1:5105". Run with `pytest -m integration tests/browser`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# A trained model answers slower than the scripted bot, the first answer slowest of all.
ANSWER_TIMEOUT_MS = 60_000


def test_real_bot_welcomes_and_answers_with_steps(page: Any, live_bot: Any, screenshots: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{live_bot.url.rstrip('/')}/webhooks/web/")
    page.get_by_test_id("launcher").click()

    bot_messages = page.get_by_test_id("bot-message")
    expect(bot_messages.first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_test_id("quick-reply").first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    welcome_count = bot_messages.count()

    page.get_by_test_id("input").fill("打印机不出纸")
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("user-message").last).to_have_text("打印机不出纸")

    # Any of the answers after the question (Rasa splits text at blank lines) holds the steps.
    # Polled from Python: the demo page's CSP forbids the string evaluation wait_for_function uses.
    deadline = time.monotonic() + ANSWER_TIMEOUT_MS / 1000
    answers: list[str] = []
    while time.monotonic() < deadline:
        answers = bot_messages.all_text_contents()[welcome_count:]
        if any("1." in text for text in answers):
            break
        time.sleep(0.2)
    assert any("1." in text for text in answers), answers
    page.screenshot(path=str(screenshots / "widget-live-bot.png"))
