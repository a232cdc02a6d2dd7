"""The console's dashboard (统计): refusals, then the figures against a seeded tracker store.

Conversations with known events are written through Rasa's own SQLTrackerStore (a temporary
SQLite file), handoffs and ratings into the records tables. The expected figures are counted
here from the seed list itself — each seeded message carries the outcome it stands for and
its local date and time — not by the code under test. The server's time zone is set to
Asia/Shanghai (UTC+8), so a local day ends at 16:00 UTC: a message at 00:00:10 local belongs to
the new day although in UTC it is still the day before.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from rasa.core.tracker_store import AwaitableTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.channels.dashboard import Dashboard
from bot.channels.learning import unanswered_occurrences
from bot.channels.staff import COOKIE, StaffConsole
from kb.store import KnowledgeStore
from records.store import Feedback, Handoff, RecordStore
from staff.accounts import StaffStore
from staff.report import Period, unanswered_questions

PASSWORD = "correct horse battery"
HOST = "127.0.0.1:5005"
ROUTE = "/staff/api/dashboard"
ZONE = "Asia/Shanghai"


@pytest.fixture()
def shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server's local time zone is UTC+8 for the test (and put back afterwards)."""
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def local(day: date, clock: str) -> datetime:
    hour, minute, second = (int(p) for p in clock.split(":"))
    return datetime(day.year, day.month, day.day, hour, minute, second)


@dataclass
class Said:
    """One seeded merchant message: when (local), what, the NLU's intent, what the bot did, and
    the outcome the dashboard must count it as."""

    conversation: str
    day: int  # days before today
    clock: str
    text: str
    intent: str
    action: str
    outcome: str  # answered / fallback / clarify / declined / button
    said: Optional[str] = None  # the bot's response name (utter_action)
    topic: Optional[str] = None  # answered_topic set by the action
    extra: list[str] = field(default_factory=list)

    def events(self, today: date) -> list[Event]:
        ts = local(today - timedelta(days=self.day), self.clock).timestamp()
        events: list[Event] = [
            ActionExecuted("action_listen", timestamp=ts - 1),
            UserUttered(self.text, {"name": self.intent, "confidence": 0.9}, timestamp=ts),
            ActionExecuted(self.action, timestamp=ts + 0.1),
        ]
        metadata = {"utter_action": self.said} if self.said else {}
        events.append(BotUttered("……", metadata=metadata, timestamp=ts + 0.2))
        if self.topic:
            events.append(SlotSet("answered_topic", self.topic, timestamp=ts + 0.3))
        return events


SEED = [
    # yesterday
    Said(
        "c1",
        1,
        "10:00:00",
        "打印机不出纸",
        "fault_hardware",
        "action_start_troubleshooting",
        "answered",
        said="utter_troubleshoot_intro",
    ),
    Said("c1", 1, "10:01:00", "/affirm", "affirm", "troubleshoot_form", "button"),
    Said(
        "c2",
        1,
        "23:59:50",
        "收款码贴纸掉了怎么补",
        "nlu_fallback",
        "action_clarify",
        "fallback",
        said="utter_clarify",
    ),
    # the same conversation, ten seconds after local midnight (still yesterday in UTC): the
    # "您是想问" comes from action_answer_topic, which the report used to miss
    Said(
        "c2",
        0,
        "00:00:10",
        "结算多久到账",
        "bill_query",
        "action_answer_topic",
        "clarify",
        said="utter_clarify",
    ),
    # today
    Said(
        "c3",
        0,
        "09:00:00",
        "今天天气怎么样",
        "out_of_scope",
        "utter_out_of_scope",
        "declined",
        said="utter_out_of_scope",
    ),
    Said(
        "c3",
        0,
        "09:01:00",
        "怎么申请POS机",
        "apply_pos",
        "action_answer_topic",
        "answered",
        topic="apply_process",
    ),
    Said(
        "c3",
        0,
        "09:02:00",
        "/deny",
        "deny",
        "action_record_feedback",
        "button",
        said="utter_feedback_unhelpful",
    ),
    Said(
        "c4",
        0,
        "11:00:00",
        "办POS机要多久",
        "apply_pos",
        "action_answer_topic",
        "answered",
        topic="apply_process",
    ),
    Said(
        "c4",
        0,
        "11:05:00",
        "结算多久到账啊",
        "bill_query",
        "action_answer_topic",
        "answered",
        topic="settlement_arrival",
    ),
    Said(
        "c5",
        0,
        "12:00:00",
        "机器冒烟了怎么办",
        "fault_hardware",
        "action_default_fallback",
        "fallback",
        said="utter_default",
    ),
    Said(
        "c5",
        0,
        "12:01:00",
        "收款码贴纸掉了怎么补",
        "nlu_fallback",
        "action_clarify",
        "fallback",
        said="utter_clarify",
    ),
    # before the period (ten seconds before its first local midnight): never counted
    Said(
        "c-old",
        2,
        "23:59:50",
        "去年的问题",
        "nlu_fallback",
        "action_clarify",
        "fallback",
        said="utter_clarify",
    ),
]
#: (days before today, local time, status)
HANDOFFS = [
    (1, "23:59:30", "waiting"),
    (0, "00:00:30", "no_agent"),
    (0, "15:00:00", "released"),
    (2, "23:00:00", "waiting"),
]
#: (days before today, local time, topic or None for 都不是, helpful)
RATINGS = [
    (0, "09:02:01", "apply_process", False),
    (0, "11:01:00", "apply_process", True),
    (1, "23:59:59", "bill_query", True),
    (0, "00:00:40", None, False),
    (2, "12:00:00", "bill_query", False),
]
DAYS = 2  # yesterday and today


def seed_tracker(path: Path, today: date) -> SQLTrackerStore:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(path))
    conversations: dict[str, list[Event]] = {}
    for said in SEED:
        conversations.setdefault(said.conversation, []).extend(said.events(today))

    async def save() -> None:
        for sender, events in conversations.items():
            await store.save(DialogueStateTracker.from_events(sender, events))

    asyncio.run(save())
    return store


def utc(day: date, clock: str) -> datetime:
    """A local time as the record tables store it (naive UTC)."""
    return local(day, clock).astimezone(timezone.utc).replace(tzinfo=None)


def seed_records(engine: Engine, today: date) -> None:
    RecordStore(engine)
    with Session(engine) as session, session.begin():
        for ago, clock, status in HANDOFFS:
            session.add(
                Handoff(
                    conversation_id=f"h{ago}{clock}",
                    question="转人工",
                    status=status,
                    created_at=utc(today - timedelta(days=ago), clock),
                )
            )
        for ago, clock, topic, helpful in RATINGS:
            session.add(
                Feedback(
                    conversation_id="c3",
                    topic_id=topic,
                    intent=None,
                    question="问",
                    helpful=helpful,
                    created_at=utc(today - timedelta(days=ago), clock),
                )
            )


def expected(today: date) -> dict[str, Any]:
    """The figures, counted from the seed lists (by the date each was seeded on)."""
    days = [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    in_period = [s for s in SEED if s.day < DAYS]
    series: dict[str, list[int]] = {}
    for name in ("answered", "fallback", "clarify", "declined"):
        series[name] = [
            sum(1 for s in in_period if s.outcome == name and s.day == DAYS - 1 - i) for i in range(DAYS)
        ]
    series["buttons"] = [
        sum(1 for s in in_period if s.outcome == "button" and s.day == DAYS - 1 - i) for i in range(DAYS)
    ]
    series["messages"] = [
        sum(1 for s in in_period if s.outcome != "button" and s.day == DAYS - 1 - i) for i in range(DAYS)
    ]
    series["conversations"] = [
        len({s.conversation for s in in_period if s.day == DAYS - 1 - i}) for i in range(DAYS)
    ]
    series["handoffs"] = [sum(1 for ago, _, _ in HANDOFFS if ago == DAYS - 1 - i) for i in range(DAYS)]
    series["no_agent"] = [
        sum(1 for ago, _, st in HANDOFFS if ago == DAYS - 1 - i and st == "no_agent") for i in range(DAYS)
    ]
    for name, test in (
        ("helpful", lambda t, h: h),
        ("unhelpful", lambda t, h: t and not h),
        ("none_of_these", lambda t, h: t is None and not h),
    ):
        series[name] = [
            sum(1 for ago, _, t, h in RATINGS if ago == DAYS - 1 - i and test(t, h)) for i in range(DAYS)
        ]
    return {
        "dates": [d.isoformat() for d in days],
        "series": series,
        "conversations": len({s.conversation for s in in_period}),
        "topics": Counter(s.topic for s in in_period if s.topic),
        "unanswered": Counter(s.text for s in in_period if s.outcome not in ("answered", "button")),
    }


class Console:
    def __init__(
        self, tmp_path: Path, engine: Engine, dashboard: Optional[Dashboard] = None, tracker: bool = True
    ) -> None:
        self.staff = StaffStore(engine)
        self.records = RecordStore(engine)
        self.today = date.today()
        channel = StaffConsole(self.staff, self.records, dashboard=dashboard)
        self.app = Sanic(f"dashboard_test_{uuid.uuid4().hex[:12]}")
        self.app.blueprint(channel.blueprint(lambda _: None), url_prefix="/staff")
        self.trackers = seed_tracker(tmp_path / "tracker.sqlite3", self.today)
        self.app.ctx.agent = SimpleNamespace(
            tracker_store=AwaitableTrackerStore(self.trackers) if tracker else None
        )
        seed_records(engine, self.today)
        for name, role in (("agent1", "agent"), ("editor1", "editor"), ("boss", "admin")):
            self.staff.add_user(name, role, PASSWORD)

    def get(self, path: str, cookie: str = "") -> Any:
        headers = {"Host": HOST}
        if cookie:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        _, response = self.app.test_client.get(path, headers=headers, timeout=60)
        return response

    def login(self, name: str) -> str:
        _, response = self.app.test_client.post(
            "/staff/api/login", headers={"Host": HOST}, json={"name": name, "password": PASSWORD}
        )
        assert response.status == 200, response.text
        return SimpleCookie(response.headers["set-cookie"])[COOKIE].value


@pytest.fixture()
def console(tmp_path: Path, engine: Engine, shanghai: None) -> Console:
    return Console(tmp_path, engine)


# ------------------------------------------------------------------ refusals
def test_the_dashboard_refuses_without_a_session_and_refuses_agents(console: Console) -> None:
    assert console.get(ROUTE).status == 401
    assert console.get(ROUTE, cookie="forged").status == 401
    response = console.get(ROUTE, cookie=console.login("agent1"))
    assert response.status == 403 and response.json["error"] == "您的账号没有这个权限"
    assert "series" not in response.json


@pytest.mark.parametrize("days", ["abc", "0", "91", "-1", "7.5"])
def test_a_bad_period_is_a_clear_400(console: Console, days: str) -> None:
    response = console.get(f"{ROUTE}?days={days}", cookie=console.login("editor1"))
    assert response.status == 400 and "days 必须是 1 到 90 之间的整数" in response.json["error"]


# ------------------------------------------------------------------ the figures
def test_the_figures_match_the_seeded_tracker_store_per_local_day(console: Console) -> None:
    want = expected(console.today)
    response = console.get(f"{ROUTE}?days={DAYS}", cookie=console.login("editor1"))
    assert response.status == 200, response.text
    body = response.json
    assert body["dates"] == want["dates"] and body["warnings"] == []
    assert body["timezone"].startswith("CST")
    for name, values in want["series"].items():
        assert body["series"][name] == values, name
    # the day boundary is the server's: local midnight, not UTC's (16:00 UTC here)
    assert body["series"]["clarify"] == [0, 1]
    assert body["series"]["conversations"][0] == 2 and body["series"]["handoffs"] == [1, 2]
    totals = body["totals"]
    assert totals["conversations"] == want["conversations"] == 5  # c2 on both days: once
    assert (
        totals["messages"]
        == totals["answered"] + totals["fallback"] + totals["clarify"] + totals["declined"]
        == 9
    )
    assert body["rates"]["answered"] == round(totals["answered"] / 9, 4)
    assert body["rates"]["handoff"] == round(3 / 5, 4)
    assert body["rates"]["helpful"] == 0.6667  # 2 helpful, 1 unhelpful (都不是 apart)
    kb = KnowledgeStore(console.records.engine)
    assert [(t["id"], t["count"]) for t in body["topics"]] == sorted(
        want["topics"].items(), key=lambda t: (-t[1], t[0])
    )
    assert body["topics"][0]["title"] == kb.topic("apply_process").title
    unanswered = {u["text"]: u for u in body["unanswered"]}
    assert {t: u["count"] for t, u in unanswered.items()} == dict(want["unanswered"])
    assert body["unanswered"][0]["text"] == "收款码贴纸掉了怎么补"
    assert unanswered["收款码贴纸掉了怎么补"]["conversations"] == 2
    assert unanswered["收款码贴纸掉了怎么补"]["reasons"] == {"fallback": 2, "clarify": 2}
    assert unanswered["结算多久到账"]["reasons"] == {"clarify": 1}


def test_a_longer_period_takes_in_the_day_before(console: Console) -> None:
    body = console.get(f"{ROUTE}?days=3", cookie=console.login("boss")).json
    assert len(body["dates"]) == 3
    assert body["series"]["fallback"][0] == 1  # 去年的问题, 23:59:50 two days ago
    assert body["series"]["handoffs"][0] == 1 and body["series"]["unhelpful"][0] == 1


def test_without_a_sql_tracker_store_the_records_are_still_shown(
    tmp_path: Path, engine: Engine, shanghai: None
) -> None:
    console = Console(tmp_path, engine, tracker=False)
    body = console.get(f"{ROUTE}?days={DAYS}", cookie=console.login("editor1")).json
    assert body["warnings"] and "SQL" in body["warnings"][0]
    assert body["totals"]["messages"] == 0 and body["series"]["handoffs"] == [1, 2]


def test_the_report_and_the_learning_queue_count_clarifications_from_any_action(console: Console) -> None:
    """ "您是想问" sent by action_answer_topic (utter_clarify) is unanswered everywhere."""
    today = console.today
    period = Period(today - timedelta(days=DAYS - 1), today)
    messages, ranked = unanswered_questions(console.trackers.engine, period)
    assert messages == 9
    by_text = {u.question: u for u in ranked}
    assert dict(by_text["结算多久到账"].reasons) == {"utter_clarify": 1}
    assert by_text["收款码贴纸掉了怎么补"].count == 2
    found = [o for o in unanswered_occurrences(console.trackers.engine, period) if o.text == "结算多久到账"]
    assert [o.reasons for o in found] == [[{"code": "clarify"}]]


# ------------------------------------------------------------------ the page and the chart library
def test_the_chart_library_is_served_from_a_fixed_route_with_a_long_cache(console: Console) -> None:
    response = console.get("/staff/vendor/chart.umd.min.js")
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert "max-age=86400" in response.headers["cache-control"]
    assert "Chart.js v4" in response.text[:200]


def test_a_missing_chart_library_is_a_503_that_says_what_to_run(
    tmp_path: Path, engine: Engine, shanghai: None
) -> None:
    console = Console(tmp_path, engine, dashboard=Dashboard(chart_js=tmp_path / "none.js"))
    response = console.get("/staff/vendor/chart.umd.min.js")
    assert response.status == 503 and "npm ci" in response.text


def test_the_page_has_the_dashboard_view_and_loads_its_scripts_from_the_bot(console: Console) -> None:
    page = console.get("/staff/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    for hook in ("dashboard-tab", "dashboard-days", "dashboard-chart", "dashboard-totals"):
        assert f'data-testid="{hook}"' in html
    assert '<script src="/staff/vendor/chart.umd.min.js" defer></script>' in html
    assert html.index("/staff/staff.js") < html.index("/staff/dashboard.js")
    script = console.get("/staff/dashboard.js")
    assert script.status == 200 and 'register("dashboard"' in script.text
