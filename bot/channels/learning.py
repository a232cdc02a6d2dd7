"""The staff console's learning queue (issue 16, part 2): what the bot could not answer, grouped,
and teaching it the answer that helps — mounted under /staff/api/ by bot/channels/staff.py.

What is in the queue (the period's whole local days, as `posbot report`):

* the merchant messages staff/report.py counts as unanswered — the NLU gave up (``nlu_fallback``:
  *fallback*), judged it out of scope (``out_of_scope``: *decline*), or the bot's next action was
  a fallback or a decline (``action_default_fallback``/``utter_default``: *fallback*,
  ``utter_out_of_scope``: *decline*, ``action_clarify`` or any "您是想问" (``utter_clarify``, also
  from action_answer_topic): *clarify*); read from Rasa's SQL tracker store by the same walk as
  ``staff.report.unanswered_questions`` (``staff.report.turns``), one message at a time so each
  example keeps its conversation and time;
* the records database's ratings (records/store.py ``Feedback``): 都不是 under "您是想问"
  (``topic_id`` NULL: *none_of_these*) and 没帮助 (*unhelpful*, with the topic that was answered).
  A rating of a question already in the queue from the same conversation adds its reason to it.

Questions the KB has already (a topic's questions, learned.yml) and those staff ignored
(kb/learning.py ``IgnoreStore``) are left out; the rest is grouped by meaning
(kb/learning.py ``group_questions``) and listed most frequent first, each group with the three
answers retrieval would pick (``KnowledgeStore.answer_index()``: topics and walks).

Teaching (kb/learned.py ``teach``) appends to learned.yml in the content folder
(``POSBOT_KB_CONTENT``, kb/content by default), lints, and builds the KB into the database:
retrieval answers a topic's or a walk's new questions at once; the NLU learns their intent at the
next `make train`. Every database read and the file work run in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from kb.encoder import SentenceEncoder, get_encoder
from kb.learned import Busy, ContentCache, Refused, Taught, answer_choices, known_keys, teach
from kb.learning import GROUP_AT, IgnoreStore, group_questions, question_key
from kb.loader import Content
from kb.settings import content_dir
from kb.store import KnowledgeStore, shared_store, warm_in_background
from records.store import RecordStore
from staff.report import Period, turns

if TYPE_CHECKING:
    from bot.channels.staff import StaffConsole

logger = logging.getLogger(__name__)

#: The role that may see the queue, teach and ignore (agents answer merchants only).
ROLE = "editor"
DEFAULT_DAYS = 7
MAX_DAYS = 90
#: Per request: questions taught or ignored at once, and the length of one question.
MAX_TEXTS = 50
MAX_TEXT = 200
#: What a group shows: examples, suggested answers; how many groups and distinct questions.
EXAMPLES = 10
SUGGESTIONS = 3
MAX_GROUPS = 100
MAX_DISTINCT = 1000

FALLBACK, CLARIFY, DECLINE = "fallback", "clarify", "decline"
NONE_OF_THESE, UNHELPFUL = "none_of_these", "unhelpful"
#: staff/report.py's reasons (an intent or the bot's next action) → the queue's.
REASONS = {
    "nlu_fallback": FALLBACK,
    "action_default_fallback": FALLBACK,
    "utter_default": FALLBACK,
    "out_of_scope": DECLINE,
    "utter_out_of_scope": DECLINE,
    "action_clarify": CLARIFY,
    "utter_clarify": CLARIFY,
}


@dataclass
class Occurrence:
    """One time a merchant asked something the bot could not answer."""

    text: str
    conversation_id: str
    at: float  # seconds since the epoch
    reasons: list[dict[str, Any]] = field(default_factory=list)

    @cached_property
    def key(self) -> str:
        return question_key(self.text)

    def as_json(self) -> dict[str, Any]:
        at = datetime.fromtimestamp(self.at, timezone.utc).replace(tzinfo=None)
        return {
            "text": self.text,
            "conversation_id": self.conversation_id,
            "at": at.isoformat(timespec="seconds") + "Z",
            "reasons": self.reasons,
        }


def unanswered_occurrences(tracker_engine: Engine, period: Period) -> list[Occurrence]:
    """Every message ``staff.report.unanswered_questions`` counts, one by one: the same walk over
    the events (``staff.report.turns``), with the time and every reason the turn gives (e.g.
    "没听懂" then "您是想问"), each named once."""
    found: list[Occurrence] = []
    for turn in turns(tracker_engine, period):
        if not turn.unanswered:
            continue
        occurrence = Occurrence(turn.text, turn.sender, turn.at)
        for reason in turn.reasons:
            code = {"code": REASONS[reason]}
            if code not in occurrence.reasons:
                occurrence.reasons.append(code)
        found.append(occurrence)
    return found


def rated_occurrences(records: RecordStore, period: Period) -> list[Occurrence]:
    """都不是 and 没帮助 ratings of the period (button payloads carry no question: skipped)."""
    since, until = period.utc_bounds()
    found = []
    for rating in records.feedback(since, until):
        question = (rating.question or "").strip()
        if rating.helpful or not question or question.startswith("/"):
            continue
        reason = {"code": UNHELPFUL, "topic": rating.topic_id} if rating.topic_id else {"code": NONE_OF_THESE}
        at = rating.created_at.replace(tzinfo=timezone.utc).timestamp()
        found.append(Occurrence(question, rating.conversation_id, at, [reason]))
    return found


def merged(unanswered: list[Occurrence], rated: list[Occurrence]) -> list[Occurrence]:
    """A rating joins the latest unanswered message before it with the same question in the same
    conversation (the merchant asked once: "您是想问" then 都不是); otherwise it stands alone."""
    out = list(unanswered)
    asked: dict[tuple[str, str], list[Occurrence]] = {}
    for occurrence in unanswered:
        asked.setdefault((occurrence.conversation_id, occurrence.key), []).append(occurrence)
    for rating in sorted(rated, key=lambda o: o.at):
        earlier = [
            o
            for o in asked.get((rating.conversation_id, rating.key), [])
            if o.at <= rating.at + 1 and not any(r["code"] in (NONE_OF_THESE, UNHELPFUL) for r in o.reasons)
        ]
        if earlier:
            max(earlier, key=lambda o: o.at).reasons.extend(rating.reasons)
        else:
            out.append(rating)
    return out


def tracker_engine_of(request: Request) -> Optional[Engine]:
    """The SQL engine of the bot's tracker store (Rasa wraps it in ``AwaitableTrackerStore``)."""
    agent = getattr(getattr(request.app, "ctx", None), "agent", None)
    store = getattr(agent, "tracker_store", None)
    store = getattr(store, "_tracker_store", store)
    engine = getattr(store, "engine", None)
    return engine if isinstance(engine, Engine) else None


class BadRequest(ValueError):
    """A request the console answers with 400 and this message."""


def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("请求内容必须是 JSON") from None
    if not isinstance(body, dict):
        raise BadRequest('请求内容必须是 JSON 对象，例如 {"texts": ["……"]}')
    return body


def _texts(body: dict[str, Any]) -> list[str]:
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts:
        raise BadRequest("texts 必须是一个不为空的问题列表")
    if len(texts) > MAX_TEXTS:
        raise BadRequest(f"一次最多 {MAX_TEXTS} 个问题")
    out = []
    for item in texts:
        if not isinstance(item, str) or not item.strip():
            raise BadRequest("每个问题都必须是不为空的文字")
        item = item.strip()
        if len(item) > MAX_TEXT:
            raise BadRequest(f"每个问题最多 {MAX_TEXT} 个字")
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in item):
            raise BadRequest("问题里不能有换行或控制字符")
        out.append(item)
    return out


def _days(request: Request) -> int:
    raw = request.args.get("days", str(DEFAULT_DAYS))
    try:
        days = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"days 必须是 1 到 {MAX_DAYS} 之间的整数") from None
    if not 1 <= days <= MAX_DAYS:
        raise BadRequest(f"days 必须是 1 到 {MAX_DAYS} 之间的整数")
    return days


def taught_message(taught: Taught) -> str:
    """What the editor reads after teaching."""
    if not taught.added:
        return f"这些说法已经学过了，会回答「{taught.title}」"
    if taught.retrieval:
        return (
            f"已学会：以后会回答「{taught.title}」（现在就生效；意图 {taught.intent} 要等下次 "
            "make train 后才进入 NLU）"
        )
    return (
        f"已记下：下次 make train 之后会回答「{taught.title}」（这类回答由 NLU 的意图 "
        f"{taught.intent} 决定，检索不会提前生效）"
    )


class Learning:
    """The queue and the teaching, with what they need: content folder, KB database, encoder."""

    def __init__(
        self,
        content: Optional[Path] = None,
        engine: Optional[Engine] = None,
        encoder: Optional[SentenceEncoder] = None,
        tracker_engine: Optional[Engine] = None,
        warm: bool = True,
        threshold: float = GROUP_AT,
    ) -> None:
        self.content_dir = content or content_dir()
        self._engine = engine
        self._encoder = encoder
        self._tracker_engine = tracker_engine
        self.warm = warm
        self.threshold = threshold
        self.cache = ContentCache()

    @property
    def engine(self) -> Engine:
        """The KB database (also the records database: one ``POSBOT_DATABASE_URL``)."""
        if self._engine is None:
            self._engine = shared_store().engine
        return self._engine

    @property
    def encoder(self) -> SentenceEncoder:
        return self._encoder or get_encoder()

    def content(self) -> Content:
        return self.cache.get(self.content_dir)

    # ------------------------------------------------------------------ the queue
    def queue(
        self, days: int, records: RecordStore, tracker: Optional[Engine], today: Optional[date] = None
    ) -> dict[str, Any]:
        today = today or date.today()
        period = Period(today - timedelta(days=days - 1), today)
        warnings: list[str] = []
        unanswered: list[Occurrence] = []
        tracker = tracker or self._tracker_engine
        if tracker is None:
            warnings.append("对话记录不在 SQL 数据库里，读不到机器人没答上的问题，只列出商户的评价")
        else:
            try:
                unanswered = unanswered_occurrences(tracker, period)
            except SQLAlchemyError:
                logger.exception("learning queue: cannot read the tracker store")
                warnings.append("暂时读不到对话记录，只列出商户的评价")
        occurrences = merged(unanswered, rated_occurrences(records, period))
        content = self.content()
        skip = known_keys(content) | IgnoreStore(self.engine).keys()
        by_key: dict[str, list[Occurrence]] = {}
        for occurrence in occurrences:
            if occurrence.key and occurrence.key not in skip:
                by_key.setdefault(occurrence.key, []).append(occurrence)
        keys = sorted(by_key, key=lambda k: (-len(by_key[k]), -max(o.at for o in by_key[k])))
        keys = keys[:MAX_DISTINCT]
        spelling = {k: Counter(o.text for o in by_key[k]).most_common(1)[0][0] for k in keys}
        groups: list[dict[str, Any]] = []
        for members in group_questions([spelling[k] for k in keys], self.encoder, self.threshold):
            member_keys = [keys[i] for i in members]  # most frequent first
            asked = sorted((o for k in member_keys for o in by_key[k]), key=lambda o: -o.at)
            reasons = Counter(r["code"] for o in asked for r in o.reasons)
            groups.append(
                {
                    "text": spelling[member_keys[0]],
                    "count": len(asked),
                    "texts": [spelling[k] for k in member_keys][:MAX_TEXTS],
                    "reasons": dict(reasons),
                    "examples": [o.as_json() for o in asked[:EXAMPLES]],
                    "latest": asked[0].at,
                }
            )
        groups.sort(key=lambda g: (-g["count"], -g["latest"]))
        groups = groups[:MAX_GROUPS]
        titles = {c["id"]: c for c in answer_choices(content)}
        for example in (e for g in groups for e in g["examples"]):
            for reason in example["reasons"]:
                if reason.get("topic"):
                    reason["title"] = titles.get(reason["topic"], {}).get("title", "")
        if groups:
            try:
                index = KnowledgeStore(self.engine).answer_index(self._encoder)
                for group in groups:
                    group["suggestions"] = [
                        {
                            "id": m.topic_id,
                            "score": round(m.score, 3),
                            "title": titles.get(m.topic_id, {}).get("title", m.topic_id),
                            "kind": titles.get(m.topic_id, {}).get("kind", ""),
                        }
                        for m in index.rank(group["text"], limit=SUGGESTIONS)
                    ]
            except SQLAlchemyError:
                logger.exception("learning queue: the KB is not built")
                warnings.append("知识库还没有构建（posbot kb build），没有推荐答案")
        for group in groups:
            group.pop("latest")
            group.setdefault("suggestions", [])
        return {
            "days": days,
            "since": period.since.isoformat(),
            "until": period.until.isoformat(),
            "questions": sum(g["count"] for g in groups),
            "threshold": self.threshold,
            "groups": groups,
            "warnings": warnings,
        }

    # ------------------------------------------------------------------ teaching
    def teach(self, texts: list[str], answer: str, staff: str) -> Taught:
        taught = teach(
            self.content_dir, texts, answer, staff=staff, engine=self.engine, encoder=self._encoder
        )
        if taught.added and self.warm:
            self._warm()
        return taught

    def warm_answers(self) -> threading.Thread:
        """Fit the indexes the queue's suggestions come from (the answer index over topics and
        walks), in the background: built on the console's first look at the queue, it made that
        staff member wait 25 s after every start of the server."""
        return warm_in_background(self.engine, "the server's start")

    def _warm(self) -> None:
        """Fit the new retrieval indexes now, in the background, so neither the NLU's next
        message (KBTopicIntent, this process) nor the console's queue waits for them."""
        warm_in_background(self.engine, "teaching")

    # ------------------------------------------------------------------ routes
    def register(self, bp: Blueprint, console: StaffConsole) -> None:
        from bot.channels.staff import _error, _json

        def refuse(request: Request, changes: bool) -> tuple[Any, Optional[HTTPResponse]]:
            return console._guard(request, ROLE, changes=changes)

        if self.warm:

            async def prepare_suggestions(_app: Any, _loop: Any) -> None:
                self.warm_answers()

            bp.after_server_start(prepare_suggestions)

        @bp.route("/api/learning", methods=["GET"])
        async def learning_queue(request: Request) -> HTTPResponse:
            _, refused = refuse(request, False)
            if refused:
                return refused
            try:
                days = _days(request)
            except BadRequest as bad:
                return _error(400, str(bad))
            try:
                body = await asyncio.to_thread(self.queue, days, console.records, tracker_engine_of(request))
            except SQLAlchemyError:
                logger.exception("learning queue: the database is not reachable")
                return _error(503, "数据库暂时不可用，请稍后再试")
            return _json(body)

        @bp.route("/api/learning/answers", methods=["GET"])
        async def learning_answers(request: Request) -> HTTPResponse:
            _, refused = refuse(request, False)
            if refused:
                return refused
            content = await asyncio.to_thread(self.content)
            return _json({"answers": answer_choices(content)})

        @bp.route("/api/learning/teach", methods=["POST"])
        async def learning_teach(request: Request) -> HTTPResponse:
            session, refused = refuse(request, True)
            if refused:
                return refused
            try:
                body = _body(request)
                texts = _texts(body)
                answer = body.get("answer")
                if not isinstance(answer, str) or not answer.strip():
                    raise BadRequest("请选择一个回答（answer）")
                answer = answer.strip()
                content = await asyncio.to_thread(self.content)
                if answer not in {c["id"] for c in answer_choices(content)}:
                    raise BadRequest(f"没有这个回答：{answer[:80]}")
            except BadRequest as bad:
                return _error(400, str(bad))
            try:
                taught = await asyncio.to_thread(self.teach, texts, answer, session.user.name)
            except Refused as refusal:
                return _json(
                    {
                        "error": "内容检查没有通过，learned.yml 没有改动："
                        + "；".join(str(p) for p in refusal.problems[:3]),
                        "problems": [str(p) for p in refusal.problems],
                    },
                    400,
                )
            except Busy:
                return _error(409, "另一位同事正在教机器人，请稍后再试")
            except (OSError, SQLAlchemyError):
                logger.exception("teaching failed")
                return _error(503, "没有保存：写文件或更新知识库时出错，请稍后再试或联系管理员")
            await asyncio.to_thread(
                console.store.audit,
                session.user.name,
                "teach",
                f"answer:{answer}"[:255],
                json.dumps({"added": taught.added, "already": taught.already}, ensure_ascii=False),
            )
            return _json(
                {
                    "answer": taught.answer,
                    "title": taught.title,
                    "added": taught.added,
                    "already": taught.already,
                    "retrieval_now": taught.retrieval and bool(taught.added),
                    "nlu_intent": taught.intent,
                    "nlu_learns_at": "make train",
                    "message": taught_message(taught),
                }
            )

        @bp.route("/api/learning/ignore", methods=["POST"])
        async def learning_ignore(request: Request) -> HTTPResponse:
            session, refused = refuse(request, True)
            if refused:
                return refused
            try:
                texts = _texts(_body(request))
            except BadRequest as bad:
                return _error(400, str(bad))
            try:
                added = await asyncio.to_thread(
                    lambda: IgnoreStore(self.engine).ignore(texts, session.user.name)
                )
            except SQLAlchemyError:
                logger.exception("ignoring failed")
                return _error(503, "数据库暂时不可用，没有保存，请稍后再试")
            await asyncio.to_thread(
                console.store.audit,
                session.user.name,
                "ignore",
                f"{len(texts)} question(s)",
                json.dumps(texts, ensure_ascii=False),
            )
            return _json(
                {
                    "ignored": texts,
                    "new": added,
                    "message": f"已忽略 {len(texts)} 个问题，不会再出现在待学习里",
                }
            )
