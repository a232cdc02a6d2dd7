"""Screenshots of the staff console for docs/console.md, taken from the real pages.

    .venv/bin/python scripts/screenshots.py [--out docs/img]

Starts the console alone, as the browser tests do (tests/browser/kb_editor_server.py
``console_app``: the staff routes without Rasa or a trained model), in a temporary folder with a
copy of kb/content, a temporary SQLite database and a temporary SQL tracker store, here with the
real e5 encoder so grouping and suggestions are the real ones (the KB build takes a minute). It
is seeded with a week of made-up but realistic merchant conversations (answered questions from
the KB's own wording, questions the bot could not answer, button presses, ratings, handoffs —
two waiting now) and a 训练发布 state as after an earlier publish. An admin logs in in Debian's
Chromium (1280×800) and the script writes

    console-learning.png   待学习, after an answer was taught to the first group
    console-editor.png     知识库, a topic open and 试一试 answered
    console-dashboard.png  统计, the last 7 days
    console-model.png      训练发布, the state and what changed since (the answer just taught)

Nothing in the checkout is written except those files; the temporary folder is deleted.
Needs /usr/bin/chromium, fonts-noto-cjk and web/node_modules (npm ci), as `make test` does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rasa.shared.core.events import (  # noqa: E402
    ActionExecuted,
    BotUttered,
    Event,
    SlotSet,
    UserUttered,
)

ADMIN, AGENT, PASSWORD = "老陈", "小李", "screenshots-only password 2026"
OUT = ROOT / "docs" / "img"
MAX_BYTES = 200_000
WAIT_MS = 120_000
DAYS = 7
SEED = 20261130

#: Questions merchants asked that the bot could not answer; one line is one meaning, said in
#: several ways (e5 puts each line's wordings at 0.95 or more: one group in 待学习).
UNANSWERED = [
    ["收款码贴纸掉了怎么补", "收款码的贴纸掉了咋办", "收款码贴纸掉了怎么补办"],
    ["pos机能连蓝牙音箱吗", "机器能不能连蓝牙音箱"],
    ["小票上的店名能改吗", "小票上的店名怎么改"],
    ["刷卡机能开发票吗"],
    ["你们招代理吗"],
    ["机器背面的贴纸写的什么意思"],
    ["可以用pos机给信用卡还款吗"],
]
DECLINED = ["今天天气怎么样", "帮我订个外卖", "你会唱歌吗"]
#: The two handoffs waiting now: conversation, brand, (merchant, bot) lines.
WAITING = [
    (
        "shop-7f3a",
        "拉卡拉",
        [
            ("你好 我是城东便利店", "您好！请问POS机遇到什么问题了？"),
            ("刷卡一直显示交易超时", "交易超时多半是网络不稳：请先看信号格，换个位置或改用WiFi再试。"),
            ("换了WiFi还是超时 转人工", "好的，已为您转人工客服，请稍候。"),
        ],
    ),
    (
        "shop-c21d",
        "银联商务",
        [
            ("结算款昨天没到账", "T+1 结算一般在第二个工作日到账，节假日顺延。请问是哪天的交易？"),
            ("周一的 今天都周三了", "超过约定时间没到账，建议联系收单机构核实。"),
            ("我要找人工", "好的，已为您转人工客服，请稍候。"),
        ],
    ),
]


# ----------------------------------------------------------------------------- the server side
def serve(port: int, folder: Path) -> None:
    """Child process: build the console on ``folder`` with e5, seed it, serve it."""
    from kb.encoder import get_encoder
    from kb.learning import GROUP_AT
    from tests.browser.kb_editor_server import console_app, seed_tracker

    rng = random.Random(SEED)
    conversations, handoffs, ratings = week(rng)
    seed_tracker(folder / "tracker.sqlite3", conversations)
    app = console_app(
        folder,
        "编辑小王",
        PASSWORD,
        encoder=get_encoder(),
        tracker=folder / "tracker.sqlite3",
        threshold=GROUP_AT,
    )
    seed_records(folder / "posbot.sqlite3", handoffs, ratings)
    published_before(folder)
    app.run(host="127.0.0.1", port=port, access_log=False)


def week(rng: random.Random) -> tuple[dict[str, list[Event]], list[dict[str, Any]], list[dict[str, Any]]]:
    """DAYS days of conversations (local time 08:00-21:30, none after now), the handoffs and
    the ratings they led to."""
    from kb.loader import load_content
    from kb.settings import CONTENT_DIR

    topics = [t for t in load_content(CONTENT_DIR).topics if t.get("questions")]
    now = time.time()
    today = date.today()
    conversations: dict[str, list[Event]] = {}
    handoffs: list[dict[str, Any]] = []
    ratings: list[dict[str, Any]] = []
    number = 0
    for back in range(DAYS - 1, -1, -1):
        day = today - timedelta(days=back)
        for _ in range(rng.randint(24, 38)):
            number += 1
            sender = f"shop-{number:04d}{rng.randrange(16 ** 4):04x}"
            start = datetime(day.year, day.month, day.day, 8).timestamp() + rng.uniform(0, 13.5 * 3600)
            if start > now - 600:
                continue
            events: list[Event] = []
            at = start
            for _ in range(rng.choice((1, 1, 2, 2, 3))):
                roll = rng.random()
                if roll < 0.68:
                    topic = rng.choice(topics)
                    text = rng.choice(topic["questions"])
                    events += turn(
                        text, topic["intent"], "action_answer_topic", "utter_topic", at, topic=topic["id"]
                    )
                    if rng.random() < 0.35:
                        helpful = rng.random() < 0.8
                        events += turn(
                            "/affirm" if helpful else "/deny",
                            "affirm" if helpful else "deny",
                            "action_record_feedback",
                            "utter_feedback_thanks",
                            at + 20,
                        )
                        ratings.append(
                            {
                                "conversation": sender,
                                "topic": topic["id"],
                                "question": text,
                                "helpful": helpful,
                                "at": at + 21,
                            }
                        )
                elif roll < 0.86:
                    text = rng.choice(rng.choices(UNANSWERED, weights=(9, 5, 4, 3, 2, 2, 2))[0])
                    if rng.random() < 0.5:
                        events += turn(text, "nlu_fallback", "action_default_fallback", "utter_default", at)
                    else:  # retrieval unsure: "您是想问" with the nearest topics
                        events += turn(
                            text, rng.choice(topics)["intent"], "action_answer_topic", "utter_clarify", at
                        )
                        if rng.random() < 0.4:  # 都不是
                            ratings.append(
                                {
                                    "conversation": sender,
                                    "topic": None,
                                    "question": text,
                                    "helpful": False,
                                    "at": at + 15,
                                }
                            )
                elif roll < 0.93:
                    events += turn(
                        rng.choice(DECLINED), "out_of_scope", "utter_out_of_scope", "utter_out_of_scope", at
                    )
                else:
                    events += turn("转人工", "human_handoff", "action_handoff", "utter_handoff_waiting", at)
                    handoffs.append(
                        {
                            "conversation": sender,
                            "brand": None,
                            "question": "转人工",
                            # asked while nobody was on duty: open until handled
                            "status": "no_agent"
                            if back == 0 and not any(h["status"] == "no_agent" for h in handoffs)
                            else "released",
                            "at": at,
                        }
                    )
                at += rng.uniform(40, 300)
                if at > now - 60:
                    break
            conversations[sender] = events
    for index, (sender, brand, lines) in enumerate(WAITING):
        at = now - 420 + index * 150
        events = []
        for said, answer in lines:
            events += [
                ActionExecuted("action_listen", timestamp=at - 1),
                UserUttered(
                    said, {"name": "human_handoff", "confidence": 0.9}, timestamp=at, input_channel="web"
                ),
                ActionExecuted("action_answer_topic", timestamp=at + 0.5),
                BotUttered(answer, metadata={"utter_action": "utter_topic"}, timestamp=at + 1),
            ]
            at += 40
        conversations[sender] = events
        handoffs.append(
            {
                "conversation": sender,
                "brand": brand,
                "question": lines[-1][0],
                "status": "waiting",
                "at": at - 40,
            }
        )
    return conversations, handoffs, ratings


def turn(
    text: str, intent: str, action: str, said: str, at: float, topic: Optional[str] = None
) -> list[Event]:
    """One merchant message and the bot's answer, as Rasa's tracker store has them."""
    events: list[Event] = [
        ActionExecuted("action_listen", timestamp=at - 1),
        UserUttered(text, {"name": intent, "confidence": 0.9}, timestamp=at, input_channel="web"),
        ActionExecuted(action, timestamp=at + 0.5),
        BotUttered("……", metadata={"utter_action": said}, timestamp=at + 1),
    ]
    if topic:
        events.append(SlotSet("answered_topic", topic, timestamp=at + 1.1))
    return events


def seed_records(database: Path, handoffs: list[dict[str, Any]], ratings: list[dict[str, Any]]) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from records.store import Feedback, Handoff, RecordStore
    from staff.accounts import StaffStore

    engine = create_engine(f"sqlite:///{database}")
    RecordStore(engine)  # creates the tables
    staff = StaffStore(engine)
    staff.add_user(ADMIN, "admin", PASSWORD)
    staff.add_user(AGENT, "agent", PASSWORD)

    def utc(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)

    with Session(engine) as session, session.begin():
        for h in sorted(handoffs, key=lambda h: h["at"]):
            released = h["status"] == "released"
            session.add(
                Handoff(
                    conversation_id=h["conversation"],
                    brand=h["brand"],
                    symptom=None,
                    question=h["question"],
                    status=h["status"],
                    agent=AGENT if released else None,
                    created_at=utc(h["at"]),
                    claimed_at=utc(h["at"] + 60) if released else None,
                    released_at=utc(h["at"] + 600) if released else None,
                )
            )
        for r in ratings:
            session.add(
                Feedback(
                    conversation_id=r["conversation"],
                    topic_id=r["topic"],
                    intent=None,
                    question=r["question"],
                    helpful=r["helpful"],
                    created_at=utc(r["at"]),
                )
            )
    engine.dispose()


def published_before(folder: Path) -> None:
    """project/: what 训练发布 looks at — copies of the training inputs (kb/content is the
    console's content copy), a stand-in serving model published yesterday evening with the
    record of its inputs, and the state that publish left."""
    from bot.training import fingerprint, identity, record_of

    project = folder / "project"
    for where in ("bot/domain", "bot/nlu", "data"):
        shutil.copytree(ROOT / where, project / where)
    shutil.copy2(ROOT / "bot" / "config.yml", project / "bot" / "config.yml")
    (project / "kb").mkdir()
    (project / "kb" / "content").symlink_to(folder / "content", target_is_directory=True)
    yesterday = date.today() - timedelta(days=1)
    started = datetime(yesterday.year, yesterday.month, yesterday.day, 21, 30).timestamp()
    finished = started + 11 * 60 + 40
    name = time.strftime("posbot-%Y%m%d-%H%M%S.tar.gz", time.localtime(started))
    serving = project / "models" / "posbot.tar.gz"
    serving.parent.mkdir()
    serving.write_bytes(b"stand-in for a model: screenshots only\n")
    os.utime(serving, (started, started))
    record_of(serving).write_text(
        json.dumps({"model": identity(serving), "trained": name, "files": fingerprint(project)})
    )
    (project / "var").mkdir()
    (project / "var" / "model-train.json").write_text(
        json.dumps(
            {
                "state": "published",
                "by": ADMIN,
                "started": started,
                "finished": finished,
                "model": name,
                "changed": ["kb/content/learned.yml", "kb/content/topics/device.yml"],
                "urls": ["http://10.0.8.11:5005", "http://10.0.8.12:5005"],
                "host": "bot-1",
                "pid": None,
                "guard": {
                    "new": {"accuracy": 921 / 992, "correct": 921, "examples": 992},
                    "serving": {"accuracy": 918 / 992, "correct": 918, "examples": 992},
                },
                "instances": [
                    {"url": "http://10.0.8.11:5005", "ok": True, "error": None},
                    {"url": "http://10.0.8.12:5005", "ok": True, "error": None},
                ],
                "message": "已发布：2 个机器人实例已加载新模型，下次启动也用它",
            },
            ensure_ascii=False,
        )
    )
    (project / "var" / "model-train.log").write_text(
        "$ posbot kb dict var/jieba\n$ posbot kb nlu var/nlu\n"
        f"$ nice -n 10 rasa train --config bot/config.yml --domain bot/domain --data data var/nlu "
        f"--out models --fixed-model-name {name[:-7]}\n"
        f"Your Rasa model is trained and saved at 'models/{name}'.\n"
        f"# guard: {name}\n# guard: posbot.tar.gz\n",
        encoding="utf-8",
    )


# ----------------------------------------------------------------------------- the browser side
def shoot(out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS, CHROMIUM_PATH, DESKTOP, console_server

    if not Path(CHROMIUM_PATH).exists():
        raise SystemExit(f"{CHROMIUM_PATH} not found: apt-get install chromium fonts-noto-cjk")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    folder = Path(tempfile.mkdtemp(prefix="posbot-screenshots-"))
    try:
        print("building the console on a copy of the KB with e5 (about a minute) …", flush=True)
        with console_server(folder, module="scripts.screenshots") as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(viewport=DESKTOP, locale="zh-CN")
            context.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/staff/")
            page.get_by_test_id("login-username").fill(ADMIN)
            page.get_by_test_id("login-password").fill(PASSWORD)
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("who")).to_contain_text(ADMIN)
            for sender, _, _ in WAITING:
                expect(page.get_by_test_id("handoff-item").filter(has_text=sender)).to_be_visible()

            def save(name: str, down_to: Any = None) -> None:
                """The top of the page, 1280×800, or down to the bottom of ``down_to``."""
                page.mouse.move(0, 0)
                page.evaluate("window.scrollTo(0, 0)")
                clip = None
                if down_to is not None:
                    box = down_to.bounding_box()
                    clip = {
                        "x": 0,
                        "y": 0,
                        "width": DESKTOP["width"],
                        "height": round(box["y"] + box["height"] + 16),
                    }
                path = out / name
                path.write_bytes(
                    small_png(page.screenshot(full_page=True, clip=clip) if clip else page.screenshot())
                )
                written.append(path)
                print(f"{path}: {path.stat().st_size // 1000} KB", flush=True)

            # 待学习: the biggest group taught an answer found with the picker
            page.get_by_test_id("learning-tab").click()
            group = page.get_by_test_id("learning-group").first
            expect(group.get_by_test_id("group-count")).to_be_visible()
            group.get_by_test_id("answer-picker").fill("客服和技术支持")
            group.get_by_test_id("answer-option").first.click()
            group.get_by_test_id("teach").click()
            expect(group.get_by_test_id("learning-result")).to_contain_text("已学会")
            save("console-learning.png", down_to=group)

            # 知识库: a topic open, and what retrieval finds for a merchant's wording
            page.get_by_test_id("editor-tab").click()
            page.get_by_test_id("kb-search").fill("打印纸怎么装")
            page.get_by_test_id("kb-item").filter(has_text="POS机的打印纸怎么装").first.click()
            expect(page.get_by_test_id("kb-field-answer")).to_be_visible()
            page.get_by_test_id("kb-try-input").fill("小票纸装反了打出来是白的")
            page.get_by_test_id("kb-try-submit").click()
            expect(page.get_by_test_id("kb-verdict")).to_be_visible()
            save("console-editor.png")

            # 统计: the last 7 days, charts drawn
            page.get_by_test_id("dashboard-tab").click()
            expect(page.get_by_test_id("dashboard-totals")).to_contain_text("对话")
            page.wait_for_function("() => window.Chart && Chart.getChart('dashboard-chart')")
            page.wait_for_timeout(1200)  # the charts' entry animation
            save("console-dashboard.png")

            # 训练发布: the last publish, and the answer just taught waiting for a training
            page.get_by_test_id("model-tab").click()
            expect(page.get_by_test_id("model-state")).to_contain_text("kb/content/learned.yml")
            save("console-model.png", down_to=page.locator("#model"))
            browser.close()
            if errors:
                raise SystemExit("JavaScript errors on the page: " + "; ".join(errors))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return written


def small_png(data: bytes) -> bytes:
    """The screenshot, as a 256-colour PNG when the full-colour one is over MAX_BYTES."""
    if len(data) <= MAX_BYTES:
        return data
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        buffer, format="PNG", optimize=True
    )
    return buffer.getvalue() if buffer.tell() < len(data) else data


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0].isdigit():  # the console, started by console_server
        serve(int(argv[0]), Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs (docs/img)")
    args = parser.parse_args(argv)
    shoot(args.out.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
