"""The knowledge editor in real Chromium: an editor logs in, opens a topic, changes its answer,
publishes it, sees the change in the history, asks "试一试", and restores the previous version.

The console runs alone (tests/browser/kb_editor_server.py: the staff routes, no Rasa, no trained
model) on a copy of kb/content and a temporary database; the file on disk is checked after each
step.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.browser.conftest import PROJECT_ROOT, _free_port

pytestmark = [pytest.mark.browser]
EDITOR, PASSWORD = "小王", "an editor's long password"
WAIT_MS = 60_000


@pytest.fixture()
def editor_console(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.kb_editor_server", str(port), str(tmp_path), EDITOR, PASSWORD],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/staff/api/me", timeout=2)
            except urllib.error.HTTPError as answer:
                if answer.code == 401:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.3)
        yield url, tmp_path / "content"
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_an_editor_changes_an_answer_sees_it_in_history_and_restores_it(
    editor_console: tuple[str, Path], page: Any, screenshots: Path
) -> None:
    # the server is requested first so that it outlives the page (the inbox polls every 5 s)
    from playwright.sync_api import expect

    url, content = editor_console
    device = content / "topics" / "device.yml"
    original = device.read_bytes()
    page.goto(f"{url}/staff/")
    page.get_by_test_id("login-username").fill(EDITOR)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("editor-tab").click()

    page.get_by_test_id("kb-search").fill("打印纸怎么装")
    page.get_by_test_id("kb-item").filter(has_text="POS机的打印纸怎么装").first.click()
    answer = page.get_by_test_id("kb-field-answer")
    expect(answer).to_be_visible(timeout=WAIT_MS)
    old_answer = answer.input_value()
    assert old_answer.startswith("打开纸仓盖")

    # a change the linter refuses: shown as file:line, the file untouched
    page.get_by_test_id("kb-field-questions").fill("只写一个问法")
    page.get_by_test_id("kb-save").click()
    expect(page.get_by_test_id("kb-problems")).to_contain_text("topics/device.yml:", timeout=WAIT_MS)
    expect(page.get_by_test_id("kb-problems")).to_contain_text("give at least 5 ways")
    assert device.read_bytes() == original

    page.get_by_test_id("kb-search").fill("paper_load")
    page.get_by_test_id("kb-item").first.click()  # reopened: the saved questions again
    expect(page.get_by_test_id("kb-field-questions")).to_have_value(re.compile("pos机怎么装打印纸"))
    page.get_by_test_id("kb-field-answer").fill("先按开盖键打开纸仓，再把新纸卷热敏面朝打印头放进去。")
    page.get_by_test_id("kb-save").click()
    expect(page.get_by_test_id("kb-result")).to_contain_text("已保存并发布", timeout=WAIT_MS)
    saved = device.read_text()  # the answer's line(s) replaced in place, in the file's own style
    assert "先按开盖键打开纸仓，再把新纸卷热敏面朝打印头放进去。\n" in saved and old_answer not in saved
    changes = page.get_by_test_id("kb-history").get_by_test_id("kb-change")
    expect(changes).to_have_count(1)
    expect(changes.first).to_contain_text(EDITOR)
    expect(changes.first).to_contain_text("+answer: 先按开盖键打开纸仓")

    page.get_by_test_id("kb-try-input").fill("打印纸怎么装")
    page.get_by_test_id("kb-try-submit").click()
    expect(page.get_by_test_id("kb-verdict")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_test_id("kb-try-results")).to_contain_text("POS机的打印纸怎么装")
    page.screenshot(path=str(screenshots / "console-kb-editor.png"), full_page=True)

    restore = changes.first.get_by_test_id("kb-restore")
    restore.click()
    expect(restore).to_contain_text("再点一次确认")
    restore.click()
    expect(page.get_by_test_id("kb-result")).to_contain_text("已恢复并发布", timeout=WAIT_MS)
    expect(page.get_by_test_id("kb-field-answer")).to_have_value(old_answer)
    expect(changes).to_have_count(2)
    expect(changes.first).to_contain_text("恢复")
    assert device.read_bytes() == original

    # a new topic, added at the end of its file, then the addition undone
    service = content / "topics" / "service.yml"
    service_before = service.read_bytes()
    page.get_by_test_id("kb-kind").select_option("topic")
    page.get_by_test_id("kb-new").click()
    page.get_by_test_id("kb-new-file").select_option("topics/service.yml")
    page.get_by_test_id("kb-field-id").fill("sticker_lost")
    page.get_by_test_id("kb-field-intent").select_option("apply_pos")
    page.get_by_test_id("kb-field-family").fill("apply")
    page.get_by_test_id("kb-field-question").fill("收款码贴纸掉了怎么补？")
    page.get_by_test_id("kb-field-questions").fill(
        "收款码贴纸掉了咋办\n二维码贴纸丢了\n收款码牌子坏了怎么换\n码牌掉了能补吗\n收款贴纸没了"
    )
    page.get_by_test_id("kb-field-answer").fill("请联系为您安装机器的业务员或服务商补一张新的收款码贴纸。")
    page.get_by_test_id("kb-field-source").fill("seed:test")
    page.get_by_test_id("kb-save").click()
    expect(page.get_by_test_id("kb-result")).to_contain_text(
        "已保存并发布：话题「sticker_lost」", timeout=WAIT_MS
    )
    assert "  - id: sticker_lost\n" in service.read_text()
    expect(changes).to_have_count(1)
    expect(changes.first).to_contain_text("新建")
    undo = changes.first.get_by_test_id("kb-restore")
    undo.click()
    undo.click()
    expect(page.get_by_test_id("kb-result")).to_contain_text(
        "已从 topics/service.yml 里删掉", timeout=WAIT_MS
    )
    assert service.read_bytes() == service_before
