"""The staff console's dashboard (统计, issue 16): per day, what merchants asked and how it went.

``GET /staff/api/dashboard?days=N`` (editors and admins; 1-90 whole days in the server's time
zone, as ``posbot report``) returns per-day series and the period's totals, rates and top lists:

* from Rasa's SQL tracker store, by the walk ``staff.report.turns`` that the report and the
  learning queue use: **conversations** (conversations with a merchant message that day; the
  period's total counts each conversation once), **messages** the merchants typed (button
  presses apart, **buttons**), and each typed message once as **answered**, **fallback** (没听懂,
  兜底回复), **clarify** ("您是想问", from action_clarify or action_answer_topic) or **declined**
  (超出范围, 婉拒) — by the first reason the turn gives, as the report counts it; the KB
  **topics** answered (slot ``answered_topic``) and the most frequent **unanswered** questions;
* from the records database, where those figures live: **handoffs** (requests for a person,
  ``handoffs`` table; ``no_agent`` when nobody was on duty) and the ratings (``feedback``):
  **helpful** 有帮助, **unhelpful** 没帮助, **none_of_these** 都不是 after "您是想问".

The page draws them with Chart.js (npm, web/package.json), served from a fixed route here.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.channels.learning import REASONS, BadRequest, _days, tracker_engine_of
from bot.settings import PROJECT_ROOT
from kb.store import KnowledgeStore
from records.store import HANDOFF_NO_AGENT, Handoff, RecordStore
from staff.report import Period, _title, normalise, turns

if TYPE_CHECKING:
    from bot.channels.staff import StaffConsole

logger = logging.getLogger(__name__)

ROLE = "editor"
TOP = 10
ANSWERED, FALLBACK, CLARIFY, DECLINED = "answered", "fallback", "clarify", "declined"
#: A typed message's outcome from its first unanswered reason (staff/report.py, learning.py).
OUTCOMES = {"fallback": FALLBACK, "clarify": CLARIFY, "decline": DECLINED}
SERIES = (
    "conversations",
    "messages",
    "buttons",
    ANSWERED,
    FALLBACK,
    CLARIFY,
    DECLINED,
    "handoffs",
    "no_agent",
    "helpful",
    "unhelpful",
    "none_of_these",
)
#: Chart.js's UMD build, installed by `npm ci` in web/ (package-lock.json pins the version).
CHART_JS = PROJECT_ROOT / "web" / "node_modules" / "chart.js" / "dist" / "chart.umd.min.js"
VENDOR_CACHE = "public, max-age=86400"


def local_day(moment: datetime) -> date:
    """The server's local day of a naive UTC datetime (how the record tables store time)."""
    return moment.replace(tzinfo=timezone.utc).astimezone().date()


def figures(
    tracker: Optional[Engine], records: RecordStore, period: Period, kb: Optional[KnowledgeStore] = None
) -> dict[str, Any]:
    """Everything the dashboard shows for ``period``."""
    days = [period.since + timedelta(days=i) for i in range((period.until - period.since).days + 1)]
    per_day: dict[str, Counter[date]] = {name: Counter() for name in SERIES}
    warnings: list[str] = []
    senders: dict[date, set[str]] = defaultdict(set)
    everyone: set[str] = set()
    topics: Counter[str] = Counter()
    unanswered: Counter[str] = Counter()
    shown: dict[str, str] = {}
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    asked_in: dict[str, set[str]] = defaultdict(set)
    if tracker is None:
        warnings.append("对话记录不在 SQL 数据库里：只显示转人工和评价")
    else:
        try:
            for turn in turns(tracker, period):
                day = datetime.fromtimestamp(turn.at).date()
                senders[day].add(turn.sender)
                everyone.add(turn.sender)
                for topic in {v for k, v in turn.slots if k == "answered_topic" and v}:
                    topics[str(topic)] += 1
                if turn.button:
                    per_day["buttons"][day] += 1
                    continue
                per_day["messages"][day] += 1
                if not turn.unanswered:
                    per_day[ANSWERED][day] += 1
                    continue
                codes = [REASONS[r] for r in turn.reasons]
                per_day[OUTCOMES[codes[0]]][day] += 1
                key = normalise(turn.text)
                shown.setdefault(key, turn.text)
                unanswered[key] += 1
                asked_in[key].add(turn.sender)
                for code in dict.fromkeys(codes):
                    reasons[key][code] += 1
        except SQLAlchemyError:
            logger.exception("dashboard: cannot read the tracker store")
            warnings.append("暂时读不到对话记录：只显示转人工和评价")
    for day, who in senders.items():
        per_day["conversations"][day] = len(who)
    since, until = period.utc_bounds()
    with Session(records.engine) as session:
        for created, status in session.execute(
            select(Handoff.created_at, Handoff.status).where(
                Handoff.created_at >= since, Handoff.created_at < until
            )
        ):
            per_day["handoffs"][local_day(created)] += 1
            if status == HANDOFF_NO_AGENT:
                per_day["no_agent"][local_day(created)] += 1
    for rating in records.feedback(since, until):
        kind = "helpful" if rating.helpful else "unhelpful" if rating.topic_id else "none_of_these"
        per_day[kind][local_day(rating.created_at)] += 1
    totals = {name: sum(per_day[name].values()) for name in SERIES}
    totals["conversations"] = len(everyone)
    return {
        "days": len(days),
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "timezone": clock.strftime("%Z (UTC%z)"),
        "dates": [d.isoformat() for d in days],
        "series": {name: [per_day[name][d] for d in days] for name in SERIES},
        "totals": totals,
        "rates": {
            "answered": _share(totals[ANSWERED], totals["messages"]),
            "fallback": _share(totals[FALLBACK], totals["messages"]),
            "clarify": _share(totals[CLARIFY], totals["messages"]),
            "declined": _share(totals[DECLINED], totals["messages"]),
            "handoff": _share(totals["handoffs"], totals["conversations"]),
            "helpful": _share(totals["helpful"], totals["helpful"] + totals["unhelpful"]),
        },
        "topics": [
            {"id": topic, "title": _title(kb, topic), "count": n}
            for topic, n in sorted(topics.items(), key=lambda t: (-t[1], t[0]))[:TOP]
        ],
        "unanswered": [
            {
                "text": shown[key],
                "count": n,
                "conversations": len(asked_in[key]),
                "reasons": dict(reasons[key]),
            }
            for key, n in sorted(unanswered.items(), key=lambda t: (-t[1], shown[t[0]]))[:TOP]
        ],
        "warnings": warnings,
    }


def _share(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


class Dashboard:
    """The route, and the vendored chart library."""

    def __init__(self, chart_js: Path = CHART_JS) -> None:
        self.chart_js = chart_js

    def register(self, bp: Blueprint, console: StaffConsole) -> None:
        from bot.channels.staff import _error, _json

        @bp.route("/api/dashboard", methods=["GET"])
        async def dashboard(request: Request) -> HTTPResponse:
            _, refused = console._guard(request, ROLE, changes=False)
            if refused:
                return refused
            try:
                days = _days(request)
            except BadRequest as bad:
                return _error(400, str(bad))
            today = date.today()
            period = Period(today - timedelta(days=days - 1), today)
            records = console.records
            try:
                body = await asyncio.to_thread(
                    figures, tracker_engine_of(request), records, period, KnowledgeStore(records.engine)
                )
            except SQLAlchemyError:
                logger.exception("dashboard: the records database is not reachable")
                return _error(503, "数据库暂时不可用，请稍后再试")
            return _json(body)

        @bp.route("/vendor/chart.umd.min.js", methods=["GET"], name="vendor_chart_js")
        async def chart_js(_: Request) -> HTTPResponse:
            if not self.chart_js.is_file():
                logger.error("%s is missing: run `npm ci` in the web/ directory", self.chart_js)
                return response.text(
                    "Chart.js is not installed on this server: run `npm ci` in "
                    "web/ (see docs/console.md).\n",
                    status=503,
                )
            return await response.file(
                self.chart_js,
                mime_type="application/javascript; charset=utf-8",
                headers={"Cache-Control": VENDOR_CACHE, "X-Content-Type-Options": "nosniff"},
            )
