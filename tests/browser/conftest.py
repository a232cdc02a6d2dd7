"""Browser fixtures: Debian's Chromium driven by Playwright, and a scripted socket.io bot.

Playwright is only the driver here: it never downloads a browser (no `playwright install`);
the browser is the system Chromium at /usr/bin/chromium (`apt-get install chromium`). Without
it the browser tests skip on a developer machine and FAIL in CI (CI=true), so a CI image that
lost its browser cannot pass unnoticed.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_PATH = os.environ.get("POSBOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "reports" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
SERVER_START_TIMEOUT_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real Chromium through Playwright")
    config.addinivalue_line(
        "markers", "integration: needs a trained model and a running Rasa server (live_bot)"
    )


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    """Skip locally; fail in CI, where a missing browser is a broken build, not a choice."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: browser tests must run in CI)", pytrace=False)
    pytest.skip(reason)


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM_PATH).exists():
        _unavailable(
            f"{CHROMIUM_PATH} not found: install Debian's browser with "
            "`apt-get update && apt-get install -y chromium fonts-noto-cjk`"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: `pip install playwright==1.48.0`")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class PageProbe:
    """What a page did behind the test's back: JS dialogs (alert = XSS) and uncaught errors."""

    def __init__(self) -> None:
        self.dialogs: List[str] = []
        self.errors: List[str] = []


def _new_page(browser: Any, viewport: Dict[str, int], probe: PageProbe) -> Any:
    context = browser.new_context(viewport=viewport, locale="zh-CN")
    context.set_default_timeout(15_000)
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        probe.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: probe.errors.append(str(error)))
    return page


@pytest.fixture
def probe() -> PageProbe:
    return PageProbe()


@pytest.fixture
def page(browser: Any, probe: PageProbe) -> Iterator[Any]:
    """A fresh desktop-sized page (own storage); fails the test on a dialog or JS error."""
    page = _new_page(browser, DESKTOP, probe)
    yield page
    page.context.close()
    assert probe.dialogs == [], "a JavaScript dialog fired (script from a message was executed)"
    assert probe.errors == [], "uncaught JavaScript errors on the page"


@pytest.fixture
def phone_page(browser: Any, probe: PageProbe) -> Iterator[Any]:
    """Like `page`, 360 px wide: the narrowest phone the widget must serve."""
    page = _new_page(browser, PHONE, probe)
    yield page
    page.context.close()
    assert probe.dialogs == []
    assert probe.errors == []


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(autouse=True, scope="session")
def _expect_timeout() -> None:
    try:
        from playwright.sync_api import expect
    except ImportError:
        return
    expect.set_options(timeout=15_000)


# ----------------------------------------------------------------------------- fake bot


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeBot:
    """The scripted bot server (tests/browser/fake_bot.py) in a child process."""

    def __init__(self, log_dir: Path, cors_origins: str = "*") -> None:
        self.port = _free_port()
        self.cors_origins = cors_origins
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"fake_bot_{self.port}.log"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), POSBOT_CORS_ORIGINS=self.cors_origins)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.browser.fake_bot", "--port", str(self.port)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake bot exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/webhooks/web/health", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fake bot did not start in {SERVER_START_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def received(self) -> List[Dict[str, Any]]:
        """Every user message the bot got: sender_id, text, metadata, input_channel."""
        import json

        with urllib.request.urlopen(f"{self.url}/_test/messages", timeout=5) as response:
            return list(json.loads(response.read().decode("utf-8")))

    def wait_received(self, count: int, timeout_s: float = 10.0) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        messages = self.received()
        while len(messages) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            messages = self.received()
        return messages


@pytest.fixture(scope="session")
def fake_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeBot]:
    """One scripted bot for the whole session; tests are isolated by fresh browser storage."""
    bot = FakeBot(tmp_path_factory.mktemp("fake_bot"))
    bot.start()
    yield bot
    bot.stop()


@pytest.fixture
def own_fake_bot(tmp_path: Path) -> Iterator[FakeBot]:
    """A bot only this test uses, so it can be stopped and restarted."""
    bot = FakeBot(tmp_path)
    bot.start()
    yield bot
    bot.stop()


@pytest.fixture
def strict_fake_bot(tmp_path: Path) -> Iterator[FakeBot]:
    """A bot that only accepts the origin https://shop.example.com (and its own host)."""
    bot = FakeBot(tmp_path, cors_origins="https://shop.example.com")
    bot.start()
    yield bot
    bot.stop()


# ----------------------------------------------------------------------------- console alone


@contextmanager
def console_server(folder: Path, *args: str, module: str = "tests.browser.kb_editor_server") -> Iterator[str]:
    """The staff console without Rasa (``python -m MODULE PORT FOLDER *ARGS``, by default
    tests/browser/kb_editor_server.py) in a child process working in ``folder``; yields its URL
    once /staff/api/me answers 401. The KB and database settings point into ``folder``, so
    nothing falls back to the checkout's kb/content or var/."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        PYTHONPATH=str(PROJECT_ROOT),
        POSBOT_KB_CONTENT=str(folder / "content"),
        POSBOT_DATABASE_URL=f"sqlite:///{folder / 'posbot.sqlite3'}",
    )
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", module, str(port), str(folder), *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/staff/api/me", timeout=2)
            except urllib.error.HTTPError as answer:
                if answer.code == 401:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{module} did not start:\n" + log_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
