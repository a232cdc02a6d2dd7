"""`posbot report` on a tracker store seeded through Rasa's own SQLTrackerStore."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from kb.build import build
from kb.loader import Content
from kb.store import KnowledgeStore
from records.store import Feedback, RecordStore
from staff.cli import main
from staff.report import Period, build_report, format_report


def at(day: int, hour: int) -> float:
    """A local-time timestamp in November 2026 (the report counts whole local days)."""
    return datetime(2026, 11, day, hour).timestamp()


def turn(text: str, intent: str, action: str, ts: float) -> list[Event]:
    return [
        ActionExecuted("action_listen", timestamp=ts - 1),
        UserUttered(text, {"name": intent, "confidence": 0.9}, timestamp=ts),
        ActionExecuted(action, timestamp=ts + 1),
        BotUttered("……", timestamp=ts + 2),
    ]


CONVERSATIONS = {
    "merchant-a": [
        *turn("今天天气怎么样", "out_of_scope", "utter_out_of_scope", at(20, 9)),
        *turn("刷卡", "nlu_fallback", "action_clarify", at(20, 10)),
        *turn("/deny", "deny", "utter_rephrase_failed", at(20, 11)),
        *turn("手续费怎么算", "fees", "action_answer_fees", at(20, 12)),
    ],
    "merchant-b": [
        *turn("刷卡 ", "nlu_fallback", "action_clarify", at(21, 9)),
        *turn("机器冒烟了怎么办", "fault_hardware", "action_default_fallback", at(21, 10)),
        *turn("打印机不出纸", "fault_hardware", "action_start_troubleshooting", at(21, 11)),
    ],
    "merchant-old": [*turn("刷卡", "nlu_fallback", "action_clarify", at(10, 9))],
}


def utc(day: int, hour: int) -> datetime:
    return datetime.fromtimestamp(at(day, hour), timezone.utc).replace(tzinfo=None)


RATINGS = [
    ("apply_process", "怎么申请POS机", False, utc(20, 13)),
    ("apply_process", "办POS机要多久", False, utc(21, 13)),
    ("apply_process", "怎么申请POS机", True, utc(21, 14)),
    ("bill_query", "账单在哪看", False, utc(21, 15)),
    ("bill_query", "账单在哪看", False, utc(12, 15)),
]


@pytest.fixture()
def tracker_db(tmp_path: Path) -> str:
    path = tmp_path / "tracker.sqlite3"
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(path))

    async def seed() -> None:
        for sender, events in CONVERSATIONS.items():
            await store.save(DialogueStateTracker.from_events(sender, events))

    asyncio.run(seed())
    store.engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture()
def records_db(tmp_path: Path, content: Content) -> str:
    url = f"sqlite:///{tmp_path / 'posbot.sqlite3'}"
    engine = create_engine(url)
    build(engine, content)
    RecordStore(engine)
    with Session(engine) as session, session.begin():
        for topic, question, helpful, created in RATINGS:
            session.add(
                Feedback(
                    conversation_id="m",
                    topic_id=topic,
                    intent=None,
                    question=question,
                    helpful=helpful,
                    created_at=created,
                )
            )
    engine.dispose()
    return url


PERIOD = Period(date(2026, 11, 20), date(2026, 11, 21))


def test_unanswered_questions_are_counted_and_ranked(tracker_db: str, records_db: str) -> None:
    engine = create_engine(records_db)
    report = build_report(create_engine(tracker_db), RecordStore(engine), KnowledgeStore(engine), PERIOD)
    assert report.messages == 6  # typed messages in the period; the /deny button is not one
    ranked = [(u.question, u.count, u.conversations) for u in report.unanswered]
    assert ranked == [("刷卡", 2, 2), ("今天天气怎么样", 1, 1), ("机器冒烟了怎么办", 1, 1)]
    assert dict(report.unanswered[2].reasons) == {"action_default_fallback": 1}


def test_low_rated_answers_are_grouped_by_topic(tracker_db: str, records_db: str) -> None:
    engine = create_engine(records_db)
    report = build_report(create_engine(tracker_db), RecordStore(engine), KnowledgeStore(engine), PERIOD)
    low = [(e.topic_id, e.unhelpful, e.helpful, e.questions) for e in report.low_rated]
    assert low == [
        ("apply_process", 2, 1, ["怎么申请POS机", "办POS机要多久"]),
        ("bill_query", 1, 0, ["账单在哪看"]),
    ]
    text = format_report(report)
    assert "  1.   2×  刷卡   [没听懂 2; 2 个对话]" in text
    assert "  1. apply_process 怎么办理POS机？: 没帮助 2 / 有帮助 1" in text
    assert "没帮助 2 / 有帮助 1" in text and "       问：办POS机要多久" in text


def test_period_parsing() -> None:
    assert Period.parse("2026-11-20", "2026-11-21") == PERIOD
    assert Period.parse(None, "2026-11-21") == Period(date(2026, 11, 15), date(2026, 11, 21))
    with pytest.raises(ValueError):
        Period.parse("2026-11-22", "2026-11-21")


def test_cli_prints_the_report_for_the_range(tracker_db: str, records_db: str, capsys) -> None:
    code = main(
        [
            "report",
            "--since",
            "2026-11-20",
            "--until",
            "2026-11-21",
            "--tracker-db",
            tracker_db,
            "--database",
            records_db,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("posbot report 2026-11-20 – 2026-11-21\n商户消息 messages: 6; 未答上 unanswered: 4")
    assert "今天天气怎么样" in out and "merchant-old" not in out


def test_cli_explains_a_missing_tracker_store(tmp_path: Path, records_db: str, capsys) -> None:
    code = main(
        ["report", "--tracker-db", f"sqlite:///{tmp_path / 'none.sqlite3'}", "--database", records_db]
    )
    assert code == 1
    assert "cannot read the tracker store" in capsys.readouterr().err


def test_messages_to_a_person_are_not_unanswered_questions(tmp_path: Path, records_db: str) -> None:
    """While a handoff pauses the bot, the merchant writes to the agent: the bot's silence is
    by design. After the release the bot answers again, and a miss counts again."""
    from rasa.shared.core.events import ConversationPaused, ConversationResumed

    path = tmp_path / "handoff-tracker.sqlite3"
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(path))
    events = [
        *turn("转人工", "human_handoff", "action_handoff", at(20, 9)),
        ConversationPaused(timestamp=at(20, 9) + 3),
        UserUttered("我的机器一直显示a0", {"name": "nlu_fallback", "confidence": 0.3}, timestamp=at(20, 10)),
        UserUttered("在吗", {"name": "nlu_fallback", "confidence": 0.3}, timestamp=at(20, 11)),
        ConversationResumed(timestamp=at(20, 12)),
        ActionExecuted("action_listen", timestamp=at(20, 12) + 1),
        *turn("在吗", "nlu_fallback", "action_clarify", at(20, 13)),
    ]
    asyncio.run(store.save(DialogueStateTracker.from_events("merchant-h", events)))
    store.engine.dispose()
    engine = create_engine(records_db)
    report = build_report(
        create_engine(f"sqlite:///{path}"), RecordStore(engine), KnowledgeStore(engine), PERIOD
    )
    assert report.messages == 4
    assert [(u.question, u.count) for u in report.unanswered] == [("在吗", 1)]  # only after the release
