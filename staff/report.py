"""The staff loop: which questions the bot could not answer, and which answers merchants disliked.

Read-only over two databases:

* Rasa's SQL tracker store (``events`` table; ``var/tracker.sqlite3`` by default): a merchant's
  message counts as *unanswered* when NLU gave up on it (``nlu_fallback``), judged it outside the
  bot's scope (``out_of_scope``), or when the next bot action was a fallback or a decline
  (``action_clarify``, ``action_default_fallback``, ``utter_out_of_scope``, ``utter_default``),
  or when the bot answered "您是想问" (``utter_clarify``, also sent by action_answer_topic when
  retrieval is unsure). Button payloads ("/fees") are skipped: they are answers to the bot, not
  questions. One walk over the events, ``turns()``, serves this report, the console's learning
  queue and its dashboard.
* the records database (``feedback`` table, see records/store.py): answers rated 没帮助, grouped by
  KB topic, with the questions that got them.

The most frequent entries come first, so staff know which FAQ or story to add next.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator, Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from kb.settings import VAR_DIR
from kb.store import KnowledgeStore
from records.store import RecordStore

UNANSWERED_INTENTS = ("nlu_fallback", "out_of_scope")
UNANSWERED_ACTIONS = (
    "action_clarify",
    "action_default_fallback",
    "utter_out_of_scope",
    "utter_default",
    "utter_clarify",
)
#: "您是想问：" with the nearest topics: sent by action_clarify and by action_answer_topic.
CLARIFY_RESPONSE = "utter_clarify"
DEFAULT_DAYS = 7
_SPACES = re.compile(r"\s+")


def default_tracker_url() -> str:
    return f"sqlite:///{VAR_DIR / 'tracker.sqlite3'}"


@dataclass(frozen=True)
class Period:
    """Whole days in the server's local time zone: ``since`` 00:00 up to the end of ``until``."""

    since: date
    until: date

    @classmethod
    def parse(cls, since: Optional[str], until: Optional[str], today: Optional[date] = None) -> Period:
        today = today or date.today()
        end = date.fromisoformat(until) if until else today
        start = date.fromisoformat(since) if since else end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ValueError(f"--since {start} is after --until {end}")
        return cls(start, end)

    @property
    def start_ts(self) -> float:
        return datetime.combine(self.since, time.min).timestamp()

    @property
    def end_ts(self) -> float:
        return datetime.combine(self.until + timedelta(days=1), time.min).timestamp()

    def utc_bounds(self) -> tuple[datetime, datetime]:
        """The same period as naive UTC datetimes, the way the record tables store time."""
        return (
            datetime.fromtimestamp(self.start_ts, timezone.utc).replace(tzinfo=None),
            datetime.fromtimestamp(self.end_ts, timezone.utc).replace(tzinfo=None),
        )


@dataclass
class Unanswered:
    question: str
    count: int
    reasons: Counter[str]
    conversations: int


@dataclass
class LowRated:
    topic_id: str
    title: str
    unhelpful: int
    helpful: int
    questions: list[str] = field(default_factory=list)


@dataclass
class Report:
    period: Period
    messages: int
    unanswered: list[Unanswered]
    low_rated: list[LowRated]


def normalise(question: str) -> str:
    return _SPACES.sub(" ", question.strip()).lower()


@dataclass
class Turn:
    """One merchant message and what the bot did until the next one, as the tracker store has it.

    ``reasons`` says why the message counts as unanswered, in the order the events say so: its
    intent (``nlu_fallback``, ``out_of_scope``), the bot's first action after it
    (``UNANSWERED_ACTIONS``), and a "您是想问" the bot sent in the turn whatever action sent it
    (``utter_clarify``: action_answer_topic offers the nearest topics when retrieval is unsure).
    Empty when the bot answered, and for a message written while the conversation was with a
    person (``to_person``: the bot is paused and answers nothing by design).
    """

    sender: str
    text: str
    at: float  # seconds since the epoch
    intent: Optional[str]
    actions: list[str] = field(default_factory=list)  # the bot's actions, action_listen left out
    said: list[str] = field(default_factory=list)  # the responses it sent (``utter_action``)
    slots: list[tuple[str, object]] = field(default_factory=list)  # slots set in the turn
    to_person: bool = False  # written while a handoff paused the bot

    @property
    def button(self) -> bool:
        """A button payload ("/fees{…}"): an answer to the bot, not a question."""
        return self.text.startswith("/")

    @property
    def reasons(self) -> list[str]:
        found: list[str] = []
        if self.to_person:
            return found
        if self.intent in UNANSWERED_INTENTS:
            found.append(self.intent)
        if self.actions and self.actions[0] in UNANSWERED_ACTIONS:
            found.append(self.actions[0])
        if CLARIFY_RESPONSE in self.said and CLARIFY_RESPONSE not in found:
            found.append(CLARIFY_RESPONSE)
        return found

    @property
    def unanswered(self) -> bool:
        return not self.button and bool(self.reasons)


#: Events that pause or un-pause the bot (Rasa's type names): a handoff pauses it; the agent's
#: release, the merchant's cancel, a restart or a new session un-pause it.
_PAUSES = {"pause": True, "resume": False, "restart": False, "session_started": False}


def turns(tracker_engine: Engine, period: Period) -> Iterator[Turn]:
    """Every merchant message of the period with what followed it, conversation by conversation
    (the ``events`` table of Rasa's SQL tracker store, read as a stream). Messages without text
    are left out; button payloads are turns too (``Turn.button``)."""
    with tracker_engine.connect() as connection:
        rows = connection.execution_options(stream_results=True).execute(
            text(
                "SELECT sender_id, type_name, intent_name, action_name, data, timestamp "
                "FROM events WHERE timestamp >= :start AND timestamp < :end "
                "ORDER BY sender_id, id"
            ),
            {"start": period.start_ts, "end": period.end_ts},
        )
        current: Optional[Turn] = None
        paused = False  # the conversation is with a person (ConversationPaused … Resumed)
        previous_sender: Optional[str] = None
        for sender, type_name, intent_name, action_name, data, timestamp in rows:
            sender = str(sender)
            if sender != previous_sender:
                if current is not None:
                    yield current
                    current = None
                paused, previous_sender = False, sender
            if type_name in _PAUSES:
                paused = _PAUSES[type_name]
            if type_name == "user":
                if current is not None:
                    yield current
                said = str(_load(data).get("text") or "").strip()
                current = (
                    Turn(sender, said, float(timestamp or 0), intent_name, to_person=paused) if said else None
                )
            elif current is None:
                continue
            elif type_name == "action" and action_name and action_name != "action_listen":
                current.actions.append(str(action_name))
            elif type_name == "bot":
                response = (_load(data).get("metadata") or {}).get("utter_action")
                if response:
                    current.said.append(str(response))
            elif type_name == "slot":
                event = _load(data)
                if event.get("name"):
                    current.slots.append((str(event["name"]), event.get("value")))
        if current is not None:
            yield current


def unanswered_questions(tracker_engine: Engine, period: Period) -> tuple[int, list[Unanswered]]:
    """Count merchant messages in the period and group the unanswered ones by their text."""
    messages = 0
    counts: Counter[str] = Counter()
    shown: dict[str, str] = {}
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    senders: dict[str, set[str]] = defaultdict(set)
    for turn in turns(tracker_engine, period):
        if turn.button:
            continue
        messages += 1
        key = normalise(turn.text)
        shown.setdefault(key, turn.text)
        if turn.unanswered:
            counts[key] += 1
            reasons[key][turn.reasons[0]] += 1  # each message once, under its first reason
            senders[key].add(turn.sender)
    ranked = [Unanswered(shown[key], n, reasons[key], len(senders[key])) for key, n in counts.most_common()]
    return messages, ranked


#: How the report lists questions whose offered topics were all wrong (都不是).
NONE_OF_THESE = "(都不是)"


def low_rated_answers(records: RecordStore, kb: Optional[KnowledgeStore], period: Period) -> list[LowRated]:
    """KB topics with at least one 没帮助 in the period, most 没帮助 first."""
    since, until = period.utc_bounds()
    by_topic: dict[str, LowRated] = {}
    for rating in records.feedback(since, until):
        topic_id = rating.topic_id or NONE_OF_THESE  # 都不是 under "您是想问"
        entry = by_topic.get(topic_id)
        if entry is None:
            entry = by_topic[topic_id] = LowRated(topic_id, _title(kb, rating.topic_id), 0, 0)
        if rating.helpful:
            entry.helpful += 1
        else:
            entry.unhelpful += 1
            if rating.question and rating.question not in entry.questions:
                entry.questions.append(rating.question)
    low = [e for e in by_topic.values() if e.unhelpful]
    return sorted(low, key=lambda e: (-e.unhelpful, e.helpful, e.topic_id))


def _title(kb: Optional[KnowledgeStore], topic_id: Optional[str]) -> str:
    """The topic's title for staff; blank when the KB is not in this database or was renamed."""
    if kb is None or not topic_id:
        return ""
    try:
        topic = kb.topic(topic_id)
    except SQLAlchemyError:
        return ""
    return topic.title if topic else ""


def build_report(
    tracker_engine: Engine, records: RecordStore, kb: Optional[KnowledgeStore], period: Period
) -> Report:
    messages, unanswered = unanswered_questions(tracker_engine, period)
    return Report(period, messages, unanswered, low_rated_answers(records, kb, period))


REASON_LABELS = {
    "nlu_fallback": "没听懂",
    "out_of_scope": "超出范围",
    "action_clarify": "追问澄清",
    "action_default_fallback": "兜底回复",
    "utter_out_of_scope": "婉拒",
    "utter_default": "兜底回复",
    "utter_clarify": "追问澄清",
}


def format_report(report: Report, limit: int = 20) -> str:
    period = report.period
    lines = [
        f"posbot report {period.since} – {period.until}",
        f"商户消息 messages: {report.messages}; 未答上 unanswered: "
        f"{sum(u.count for u in report.unanswered)}",
        "",
    ]
    lines.append("== 最常见的未答上的问题 (unanswered questions, most frequent first) ==")
    if not report.unanswered:
        lines.append("  (none)")
    for i, item in enumerate(report.unanswered[:limit], 1):
        why = ", ".join(f"{REASON_LABELS.get(r, r)} {n}" for r, n in item.reasons.most_common())
        lines.append(f"{i:3}. {item.count:3}×  {item.question}   [{why}; {item.conversations} 个对话]")
    lines += ["", "== 评价为“没帮助”的回答 (answers rated unhelpful) =="]
    if not report.low_rated:
        lines.append("  (none)")
    for i, entry in enumerate(report.low_rated[:limit], 1):
        title = f" {entry.title}" if entry.title else ""
        lines.append(f"{i:3}. {entry.topic_id}{title}: 没帮助 {entry.unhelpful} / 有帮助 {entry.helpful}")
        for question in entry.questions[:5]:
            lines.append(f"       问：{question}")
    return "\n".join(lines)


def _load(data: object) -> dict:
    if isinstance(data, dict):
        return data
    try:
        loaded = json.loads(str(data or "{}"))
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}
