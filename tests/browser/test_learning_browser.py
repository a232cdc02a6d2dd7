"""待学习 in real Chromium: an editor sees what the bot could not answer, grouped by meaning, picks
an answer in the picker and teaches it; an agent does not get the tab, and the server refuses
an agent who asks anyway.

The console runs alone (tests/browser/kb_editor_server.py: the staff routes, no Rasa, no trained
model) on a copy of kb/content, a temporary database and a temporary SQL tracker store seeded
with conversations as Rasa writes them. The KB's encoder is tests/kb/test_editing.py's bigram
stand-in, so the queue groups at kb_editor_server.BIGRAM_GROUP_AT instead of e5's 0.95.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, UserUttered
from sqlalchemy import create_engine

from kb.loader import LEARNED_FILE
from kb.settings import CONTENT_DIR
from staff.accounts import StaffStore
from tests.browser.conftest import console_server
from tests.browser.kb_editor_server import seed_tracker

pytestmark = [pytest.mark.browser]
EDITOR, AGENT, PASSWORD = "小王", "小李", "a staff member's long password"
WAIT_MS = 60_000
NOW = time.time()
STICKER = ("收款码贴纸掉了怎么补", "收款码贴纸掉了要怎么补")  # one meaning, two wordings
SPEAKER = "pos机能连蓝牙音箱吗"
ANSWER_TITLE = "怎么联系POS机的客服和技术支持？"  # topic contact_support


def turn(text: str, intent: str, action: str, said: str, ago: float) -> list[Event]:
    at = NOW - ago
    return [
        ActionExecuted("action_listen", timestamp=at - 1),
        UserUttered(text, {"name": intent, "confidence": 0.9}, timestamp=at),
        ActionExecuted(action, timestamp=at + 0.5),
        BotUttered("……", metadata={"utter_action": said}, timestamp=at + 1),
    ]


CONVERSATIONS = {
    # "您是想问" then nothing chosen, and a decline: the same question, grouped (× 2)
    "shop-101": turn(STICKER[0], "nlu_fallback", "action_clarify", "utter_clarify", 3600),
    "shop-102": turn(STICKER[1], "out_of_scope", "utter_out_of_scope", "utter_out_of_scope", 1800),
    # another question the bot could not answer: a group of its own
    "shop-103": turn(SPEAKER, "nlu_fallback", "action_default_fallback", "utter_default", 900),
    # answered: never in the queue
    "shop-104": turn("怎么办理POS机", "apply_pos", "action_answer_topic", "utter_topic", 600),
}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("learning_console")
    seed_tracker(folder / "tracker.sqlite3", CONVERSATIONS)
    with console_server(folder, EDITOR, PASSWORD, str(folder / "tracker.sqlite3")) as url:
        StaffStore(create_engine(f"sqlite:///{folder / 'posbot.sqlite3'}")).add_user(AGENT, "agent", PASSWORD)
        yield url, folder


@pytest.fixture(scope="module")
def real_learned() -> Iterator[bytes]:
    """The checkout's learned.yml, which no step may write."""
    before = (CONTENT_DIR / LEARNED_FILE).read_bytes()
    yield before
    assert (CONTENT_DIR / LEARNED_FILE).read_bytes() == before


def log_in(page: Any, url: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/staff/")
    page.get_by_test_id("login-username").fill(name)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_contain_text(name, timeout=WAIT_MS)


def test_an_editor_teaches_a_group_of_unanswered_questions(
    console: tuple[str, Path], real_learned: bytes, page: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    url, folder = console
    learned = folder / "content" / LEARNED_FILE
    before = learned.read_bytes()
    log_in(page, url, EDITOR)
    page.get_by_test_id("learning-tab").click()

    groups = page.get_by_test_id("learning-group")
    expect(groups).to_have_count(2, timeout=WAIT_MS)  # the answered question is not there
    sticker, speaker = groups.nth(0), groups.nth(1)  # most frequent first
    expect(sticker.get_by_test_id("group-count")).to_have_text("× 2")
    expect(sticker.get_by_test_id("examples")).to_contain_text("对话 shop-101")
    expect(sticker.get_by_test_id("examples")).to_contain_text("对话 shop-102")
    expect(sticker.get_by_test_id("teach-text")).to_have_count(2)
    assert sorted(
        sticker.get_by_test_id("teach-text").evaluate_all("boxes => boxes.map(b => b.value)")
    ) == sorted(STICKER)
    expect(speaker.get_by_test_id("group-count")).to_have_text("× 1")
    expect(speaker).to_contain_text(SPEAKER)

    # nothing chosen yet: the button stays disabled and nothing is written
    teach = sticker.get_by_test_id("teach")
    expect(teach).to_be_disabled()
    expect(sticker.get_by_test_id("chosen-answer")).to_have_text("还没有选回答")
    picker = sticker.get_by_test_id("answer-picker")
    picker.fill("没有这种回答xyz")
    expect(sticker.get_by_test_id("answer-options")).to_contain_text("没有找到，换个词试试")
    picker.fill("客服和技术支持")
    sticker.get_by_test_id("answer-option").filter(has_text=ANSWER_TITLE).click()
    expect(sticker.get_by_test_id("chosen-answer")).to_have_text(f"回答：话题｜{ANSWER_TITLE}")
    assert learned.read_bytes() == before
    page.screenshot(path=str(screenshots / "console-learning-test.png"), full_page=True)

    teach.click()
    result = sticker.get_by_test_id("learning-result")
    expect(result).to_contain_text(f"已学会：以后会回答「{ANSWER_TITLE}」", timeout=WAIT_MS)
    expect(result).to_contain_text("现在就生效")
    after = learned.read_bytes()
    assert after.startswith(before)  # appended: every earlier line as it was
    added = after[len(before) :].decode("utf-8")
    assert f"# staff console, {EDITOR}, " in added
    for text in STICKER:
        assert f"  - text: {text}\n    answer: contact_support\n" in added
    assert SPEAKER not in added  # the other group was not taught

    # the KB knows them now: the queue no longer lists them
    page.get_by_test_id("learning-refresh").click()
    expect(groups).to_have_count(1, timeout=WAIT_MS)
    expect(groups.first).to_contain_text(SPEAKER)


def test_an_agent_has_no_learning_tab_and_is_refused_by_the_server(
    console: tuple[str, Path], real_learned: bytes, page: Any
) -> None:
    from playwright.sync_api import expect

    url, folder = console
    learned = folder / "content" / LEARNED_FILE
    before = learned.read_bytes()
    log_in(page, url, AGENT)
    expect(page.get_by_test_id("who")).to_contain_text("agent")
    expect(page.get_by_test_id("inbox-empty")).to_be_visible()
    expect(page.get_by_test_id("learning-tab")).to_be_hidden()
    expect(page.locator("#views")).to_be_hidden()  # only the inbox: no tabs at all
    expect(page.locator("#learning")).to_be_hidden()

    # asking the server directly, with the agent's own session and CSRF token
    queue = page.request.get(f"{url}/staff/api/learning")
    assert queue.status == 403 and queue.json()["error"] == "您的账号没有这个权限"
    csrf = page.request.get(f"{url}/staff/api/me").json()["csrf"]
    taught = page.request.post(
        f"{url}/staff/api/learning/teach",
        headers={"X-CSRF-Token": csrf, "Origin": url},
        data={"texts": [SPEAKER], "answer": "contact_support"},
    )
    assert taught.status == 403 and taught.json()["error"] == "您的账号没有这个权限"
    assert learned.read_bytes() == before
