"""Publishing a model to a real Rasa server while a merchant talks to it (issue 17).

One Rasa server (with its action server) started by ops/launcher.py as ``make run`` starts it,
on models/posbot.tar.gz. The "new model" is a copy of that file under another name: Rasa names
the loaded file in ``GET /status``, so the test sees which one serves.

* Our load (``PUT /staff/api/model/load``, bot/channels/model_load.py): a merchant sends
  message after message during the whole load; every one is answered, replies keep completing
  while the model loads, and afterwards ``/status`` names the new file. The Rasa server's
  memory (resident set) is sampled before, during and after (docs/deploy.md has the figures).
* For comparison, Rasa's own ``PUT /model`` on the same server: the merchant's replies stop for
  the load (the load runs on the event loop).
* Refusals: no token or a wrong one (401), a missing file (400), a broken file (500): nothing is
  loaded and the merchant keeps being answered by the model that served before.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from itertools import pairwise
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from bot.channels.model_load import LOAD_PATH
from ops.launcher import DEFAULT_MODEL, RunningBot, start_bot

pytestmark = pytest.mark.integration
QUESTIONS = ["你好", "POS机怎么签到", "刷卡显示A0是什么意思", "拉卡拉客服电话多少"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("VmRSS")


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    if not DEFAULT_MODEL.exists():
        pytest.fail(f"{DEFAULT_MODEL} is missing: run `make train` (make test does it for you)")
    running = start_bot(tmp_path_factory.mktemp("publish_live"))
    try:
        yield running
    finally:
        running.stop()


def copy_model(bot: RunningBot, name: str) -> Path:
    copy = bot.tmp / name
    shutil.copyfile(DEFAULT_MODEL, copy)
    return copy


class Merchant:
    """Sends a message, waits for the reply, sends the next, until stopped; records when each
    reply came and whether it was a proper answer."""

    def __init__(self, bot: RunningBot) -> None:
        self.bot, self.sender = bot, f"publish-live-{uuid.uuid4().hex[:8]}"
        self.replies: list[tuple[float, float, int, int]] = []  # sent, answered, status, texts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._talk, daemon=True)

    def _talk(self) -> None:
        n = 0
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                reply = requests.post(
                    f"{self.bot.url}/webhooks/rest/webhook",
                    timeout=180,
                    json={"sender": self.sender, "message": QUESTIONS[n % len(QUESTIONS)]},
                )
                texts = len([m for m in reply.json() if m.get("text")]) if reply.ok else 0
                self.replies.append((sent, time.monotonic(), reply.status_code, texts))
            except requests.RequestException:
                self.replies.append((sent, time.monotonic(), 0, 0))
            n += 1

    def __enter__(self) -> Merchant:
        self._thread.start()
        # every question answered once before the load starts: the server's first KB question
        # after a start stalls its event loop by itself (tens of seconds on a busy machine,
        # whatever the model load does), and that is not what is measured here
        deadline = time.monotonic() + 300
        while len(self.replies) <= len(QUESTIONS) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self

    def __exit__(self, *_: Any) -> None:
        time.sleep(1.0)  # and a few after it
        self._stop.set()
        self._thread.join(200)

    def answered_between(self, start: float, end: float) -> list[float]:
        return [done for _, done, _, _ in self.replies if start < done < end]


class Memory:
    """Samples the server's resident set every 0.1 s while running."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb(self.pid))
            time.sleep(0.1)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)


def status(bot: RunningBot) -> dict[str, Any]:
    return bot.api("GET", "/status").json()


def test_a_merchant_is_answered_during_the_load_and_then_by_the_new_model(bot: RunningBot) -> None:
    new = copy_model(bot, "posbot-20261130-000001.tar.gz")
    before = status(bot)
    assert before["model_file"] == DEFAULT_MODEL.name
    pid = bot.processes[-1].pid
    time.sleep(2)
    rss_before = rss_mb(pid)
    with Merchant(bot) as merchant, Memory(pid) as memory:
        start = time.monotonic()
        load = requests.put(
            f"{bot.url}{LOAD_PATH}", params={"token": bot.token}, json={"model_file": str(new)}, timeout=600
        )
        end = time.monotonic()
    assert load.status_code == 200, load.text
    assert load.json()["model_file"] == new.name
    assert load.json()["previous"]["model_file"] == DEFAULT_MODEL.name
    assert status(bot)["model_file"] == new.name and status(bot)["model_id"]
    # every message answered, none with an error
    assert merchant.replies and all(
        code == 200 and texts >= 1 for _, _, code, texts in merchant.replies
    ), merchant.replies
    # replies kept arriving while the model loaded: several, and no gap as long as the load
    during = merchant.answered_between(start, end)
    times = [start, *during, end]
    longest_gap = max(b - a for a, b in pairwise(times))
    slowest = max(merchant.replies, key=lambda r: r[1] - r[0])
    gap_at = next(a for a, b in pairwise(times) if b - a == longest_gap) - start
    print(
        f"\nour load: {end - start:.1f} s (the server: {load.json()['seconds']} s), "
        f"{len(during)} replies during it, longest gap {longest_gap:.1f} s at +{gap_at:.1f} s, "
        f"slowest reply {slowest[1] - slowest[0]:.1f} s at +{slowest[0] - start:.1f} s; "
        f"RSS before {rss_before:.0f} MB, peak {max(memory.samples):.0f} MB"
    )
    assert len(during) >= 3, (end - start, merchant.replies)
    assert longest_gap < max(3.0, (end - start) / 2), (longest_gap, end - start)
    # after: answered by the new model, and the old one's memory given back (mostly)
    assert bot.texts(merchant.sender, "你好")
    time.sleep(3)
    rss_after = rss_mb(pid)
    print(f"RSS after {rss_after:.0f} MB")
    assert max(memory.samples) > rss_before  # two models lived at once during the swap


def test_rasa_own_put_model_stalls_the_merchant_for_the_load(bot: RunningBot) -> None:
    """What the route avoids: Rasa 3.6's PUT /model loads on the event loop."""
    new = copy_model(bot, "posbot-20261130-000002.tar.gz")
    with Merchant(bot) as merchant:
        start = time.monotonic()
        load = bot.api("PUT", "/model", json={"model_file": str(new)}, timeout=600)
        end = time.monotonic()
    assert load.status_code == 204, load.text
    assert status(bot)["model_file"] == new.name
    during = merchant.answered_between(start, end)
    times = [start, *during, end]
    longest_gap = max(b - a for a, b in pairwise(times))
    print(
        f"\nRasa's PUT /model: {end - start:.1f} s, {len(during)} replies during it, "
        f"longest gap {longest_gap:.1f} s"
    )
    assert longest_gap > 0.6 * (end - start)  # the merchant waited for (most of) the load
    assert all(code == 200 for _, _, code, _ in merchant.replies)  # delayed, not lost


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"])
def test_no_or_a_wrong_token_is_refused_and_nothing_is_loaded(bot: RunningBot, token: str | None) -> None:
    serving = status(bot)["model_file"]
    new = copy_model(bot, "posbot-20261130-000003.tar.gz")
    params = {"token": token} if token else {}
    refused = requests.put(f"{bot.url}{LOAD_PATH}", params=params, json={"model_file": str(new)}, timeout=60)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "NotAuthenticated"
    assert status(bot)["model_file"] == serving


def test_a_missing_or_broken_model_is_refused_and_the_old_one_keeps_serving(bot: RunningBot) -> None:
    serving = status(bot)["model_file"]
    missing = requests.put(
        f"{bot.url}{LOAD_PATH}",
        params={"token": bot.token},
        json={"model_file": str(bot.tmp / "nothing.tar.gz")},
        timeout=60,
    )
    assert missing.status_code == 400 and missing.json()["reason"] == "ModelNotFound"
    broken = bot.tmp / "posbot-20261130-000004.tar.gz"
    broken.write_bytes(b"not a model archive")
    failed = requests.put(
        f"{bot.url}{LOAD_PATH}", params={"token": bot.token}, json={"model_file": str(broken)}, timeout=120
    )
    assert failed.status_code in (400, 500), failed.text
    assert failed.json()["status"] == "failure" and failed.json()["message"]
    assert status(bot)["model_file"] == serving
    assert bot.texts(f"publish-live-{uuid.uuid4().hex[:8]}", "POS机怎么签到")
