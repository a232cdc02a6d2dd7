"""Read access to the knowledge base: indexed lookups that return plain values.

The store takes an engine, so the same class serves SQLite in development, PostgreSQL in
production and in-memory SQLite in tests. Each call opens a short session and returns detached
plain data, so callers never hold a connection across an await.

The process's shared store (:func:`shared_store`, the servers') reads the KB's digest at most once
per :data:`DIGEST_TTL_S` and keeps the word lists of the digest it saw: a `posbot kb build` or a
console edit reaches every server within that second, and a merchant's message costs no
database reads for them (the word lists and digest were ~12 % of the Rasa server's CPU under
`make bench` load, 2026-11-30).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Optional

import numpy as np
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from kb.cache import FittedFiles, cache_dir
from kb.encoder import SentenceEncoder, get_encoder
from kb.retrieval import SYMPTOM_OWNER, VAGUE, WALK, CachedIndex, TopicDoc, TopicIndex, decode
from kb.schema import Alias, Brand, ErrorCode, FeeItem, FeeRule, KbMeta, QuestionVector, Symptom, Topic
from kb.settings import database_url
from kb.vocabulary import BRAND_STATEMENT_FILLERS

logger = logging.getLogger(__name__)
_INDEXES = CachedIndex()
_SYMPTOM_INDEXES = CachedIndex()
_ANSWER_INDEXES = CachedIndex()


def _fits() -> Optional[FittedFiles]:
    """Where fitted indexes are kept between processes (kb/cache.py), if the folder is usable."""
    folder = cache_dir()
    return FittedFiles(folder / "indexes") if folder else None


#: Seconds the shared store trusts the digest it read last (how soon a new build is seen).
DIGEST_TTL_S = 1.0


#: A phone number or hotline (5+ digits): "拉卡拉客服95016怎么转人工" asks about that line.
_PHONE_NUMBER = re.compile(r"\d{5,}")


@dataclass(frozen=True)
class TopicView:
    id: str
    intent: str
    title: str  # the standard question
    answer: str
    steps: list[str]
    questions: list[str]
    brand_notes: dict[str, str]
    source: str
    family: str = ""
    flow: Optional[str] = None


@dataclass(frozen=True)
class BrandView:
    name: str
    hotline: Optional[str]
    channels: list[str]
    fault_handling: str
    software_updates: str
    after_sales: str
    source: str


@dataclass(frozen=True)
class ErrorCodeView:
    code: str
    name: str
    meaning: str
    cause: str
    action: str
    group: str
    retry: bool
    high_risk: bool
    source: str


@dataclass(frozen=True)
class FeeRuleView:
    card_type: str
    issuer_rate_cap: float
    issuer_fee_cap: Optional[float]
    network_rate_cap: float
    network_fee_cap: Optional[float]
    source: str


@dataclass(frozen=True)
class FeeItemView:
    kind: str
    label: str
    rate: Optional[float]
    text: str
    source: str


@dataclass(frozen=True)
class StageView:
    title: str
    steps: list[str]
    data_loss: bool


@dataclass(frozen=True)
class SymptomView:
    id: str
    category: str
    component: Optional[str]
    label: str
    keywords: list[str]
    stages: list[StageView] = field(default_factory=list)
    prevention: str = ""
    source: str = ""


#: Symptom category → the intent whose rules start its walk (the contract intents).
CATEGORY_INTENTS = {"hardware": "fault_hardware", "software": "fault_software", "network": "fault_network"}


class KnowledgeStore:
    """Answers the questions the actions ask of the knowledge base."""

    def __init__(self, engine: Engine, *, digest_ttl_s: float = 0.0, stale_ok: bool = False) -> None:
        """``digest_ttl_s`` > 0: trust the digest read last for that long; ``stale_ok``: answer
        from the previous retrieval index while a new build's is fitted in the background
        (both for the servers' shared store)."""
        self.engine = engine
        self._digest_ttl_s = digest_ttl_s
        self._stale_ok = stale_ok
        self._digest_read: Optional[tuple[float, Optional[str]]] = None
        # word lists of one digest: (digest, list name → words)
        self._word_lists: tuple[Optional[str], dict[str, list[str]]] = (None, {})

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def digest(self) -> Optional[str]:
        """Hash of the content that was last built, or None when the KB was never built."""
        read = self._digest_read
        if read is not None and time.monotonic() - read[0] < self._digest_ttl_s:
            return read[1]
        value = self._read_digest()
        self._digest_read = (time.monotonic(), value)
        return value

    def _read_digest(self) -> Optional[str]:
        with self._session() as session:
            row = session.get(KbMeta, "digest")
            return row.value if row else None

    def _labelled(self, digest: str, build: Callable[[], TopicIndex]) -> Callable[[], TopicIndex]:
        """``build``, whose index keeps the label ``digest`` only if no other build landed
        while its rows were read (else it is used once and built again next time)."""

        def run() -> TopicIndex:
            index = build()
            if (self._read_digest() or "") != digest:
                index.digest = ""
            return index

        return run

    def forget_digest(self) -> None:
        """Read the digest again on the next call (this process has just built the KB)."""
        self._digest_read = None

    def words(self, key: str) -> list[str]:
        """The vocabulary list ``key`` as the last build stored it, lower-cased ([] before a
        build); read once per digest."""
        digest = self.digest()
        kept_digest, lists = self._word_lists
        if kept_digest != digest or digest is None:
            lists = {}
            self._word_lists = (digest, lists)
        words = lists.get(key)
        if words is None:
            with self._session() as session:
                row = session.get(KbMeta, key)
                words = [str(w).lower() for w in json.loads(row.value)] if row else []
            lists[key] = words
        return words

    def mentions(self, text: str, word_list: str) -> bool:
        """Whether ``text`` contains a word of the vocabulary list ``word_list``."""
        lowered = text.lower()
        return any(word in lowered for word in self.words(word_list))

    def asks_to_calculate(self, text: str) -> bool:
        """ "帮我算一下手续费": the merchant wants the calculator, with or without numbers yet."""
        return self.mentions(text, "fee_calc_requests")

    def asks_what_a_fee_is(self, text: str) -> bool:
        """ "每笔另外加3块钱 这是什么费": the amount is a charge asked about, not a sale to price."""
        return self.mentions(text, "fee_what_questions")

    def is_info_question(self, text: str) -> bool:
        """ "打印头多久清洁一次": a question about how/whether/how long, not a fault report."""
        return self.mentions(text, "info_question_markers")

    def is_other_finance(self, text: str) -> bool:
        """ "买股票手续费怎么算", "花呗怎么还": finance outside card acquiring, POS not mentioned."""
        return self.mentions(text, "other_finance") and not self.mentions(text, "pos_markers")

    def is_brand_statement(self, text: str, brand_spans: list[tuple[int, int]]) -> bool:
        """ "我用的是拉卡拉": once the brands (``brand_spans``, start/end) are cut out, only
        letters of ``brand_statement_fillers``, punctuation and spaces are left."""
        for start, end in sorted(brand_spans, reverse=True):
            text = text[:start] + text[end:]
        return self._only_words(text, BRAND_STATEMENT_FILLERS)

    def says_nothing(self, text: str) -> bool:
        """ "嗯嗯嗯那个啥": once punctuation, spaces and ``empty_words`` (interjections,
        placeholders) are cut, nothing is left to look up; retrieval must not answer it."""
        return self._only_words(text, "empty_words")

    def _only_words(self, text: str, word_list: str) -> bool:
        """Nothing but the words of ``word_list``, punctuation and spaces is in ``text``."""
        rest = "".join(ch for ch in text.lower() if ch.isalnum())
        for word in sorted(self.words(word_list), key=len, reverse=True) if rest else []:
            rest = rest.replace(word, "")
        return not rest

    def asks_for_person(self, text: str) -> bool:
        """ "你好 有没有人工 我的机子刷卡一直提示交易失败 急": a person is asked for, whatever else
        the message says. Not "有没有人工费" / "需要人工审核" (``person_request_not_before``),
        "不要人工" / "别转人工" (``person_request_not_after``), "不转人工了" (``handoff_cancel``),
        nor a question about a phone route: "人工客服电话多少" (``person_route_words``),
        "95016怎么转人工" (a phone number)."""
        lowered = text.lower()
        if (
            self.mentions(lowered, "handoff_cancel")
            or self.mentions(lowered, "person_route_words")
            or _PHONE_NUMBER.search(lowered)
        ):
            return False
        after, before = self.words("person_request_not_after"), self.words("person_request_not_before")
        for phrase in self.words("person_requests"):
            start = lowered.find(phrase)
            while start >= 0:
                head, tail = lowered[:start], lowered[start + len(phrase) :]
                if not any(head.endswith(w) for w in after) and not any(tail.startswith(w) for w in before):
                    return True
                start = lowered.find(phrase, start + 1)
        return False

    def is_other_device(self, text: str) -> bool:
        """ "手机屏幕碎了": a device that is not the POS is named; not "换了手机号", "手机上看"
        (vocabulary ``other_device_uses``: the device word, but not the device)."""
        lowered = text.lower()
        for use in sorted(self.words("other_device_uses"), key=len, reverse=True):
            lowered = lowered.replace(use, " ")
        return any(word in lowered for word in self.words("other_devices"))

    def topics(self, intent: Optional[str] = None) -> list[TopicView]:
        """Topics in file order; only those of ``intent`` when given."""
        with self._session() as session:
            query = select(Topic).order_by(Topic.position)
            if intent:
                query = query.where(Topic.intent == intent)
            return [_topic(row) for row in session.scalars(query)]

    def _index(
        self,
        cache: CachedIndex,
        build: Callable[[str, SentenceEncoder], TopicIndex],
        encoder: Optional[SentenceEncoder],
        stale_ok: bool,
    ) -> TopicIndex:
        """``cache``'s index of the KB as last built (and of ``encoder``); ``build`` fits it."""
        digest = self.digest() or ""
        chosen = encoder or get_encoder()
        return cache.get(digest, self._labelled(digest, lambda: build(digest, chosen)), stale_ok, chosen.name)

    def topic_index(self, encoder: Optional[SentenceEncoder] = None, *, fresh: bool = False) -> TopicIndex:
        """The retrieval index of the KB as last built; rebuilt only when the digest changed."""
        return self._index(_INDEXES, self._build_index, encoder, self._stale_ok and not fresh)

    def symptom_index(self, encoder: Optional[SentenceEncoder] = None, *, fresh: bool = False) -> TopicIndex:
        """Retrieval over the symptoms' reports and keywords: which walk a fault report needs
        when no keyword names it ("收银台那台大pos今天不出纸了" is the printer's)."""
        return self._index(_SYMPTOM_INDEXES, self._build_symptom_index, encoder, self._stale_ok and not fresh)

    def answer_index(self, encoder: Optional[SentenceEncoder] = None) -> TopicIndex:
        """One classifier over every topic and every walk (ids ``walk:<symptom>``, ``walk:?``):
        what a fault-sounding message needs, a topic's answer or a guided walk, decided by the
        same model, so the two scores compare (docs/quality.md, 2026-11-30, session 9)."""
        return self._index(_ANSWER_INDEXES, self._build_answer_index, encoder, self._stale_ok)

    def _build_answer_index(self, digest: str, encoder: SentenceEncoder) -> TopicIndex:
        topics, symptoms = self.topic_index(encoder, fresh=True), self.symptom_index(encoder, fresh=True)
        walks = [
            TopicDoc(f"{WALK}{doc.id}", CATEGORY_INTENTS.get(doc.intent, ""), doc.questions, doc.vectors)
            for doc in symptoms.topics
        ]
        return TopicIndex([*topics.topics, *walks], encoder, digest, fits=_fits())

    def _vector_rows(self) -> dict[str, list[QuestionVector]]:
        with self._session() as session:
            rows = list(session.scalars(select(QuestionVector).order_by(QuestionVector.id)))
        by_owner: dict[str, list[QuestionVector]] = {}
        for row in rows:
            by_owner.setdefault(row.topic_id, []).append(row)
        return by_owner

    @staticmethod
    def _doc(
        doc_id: str, intent: str, rows: list[QuestionVector], fallback: list[str], encoder: SentenceEncoder
    ) -> TopicDoc:
        fresh = rows and all(row.encoder == encoder.name for row in rows)
        texts = [row.text for row in rows] if fresh else fallback
        matrix = (
            np.vstack([decode(row.vector, encoder.dim) for row in rows]) if fresh else encoder.encode(texts)
        )
        return TopicDoc(doc_id, intent, tuple(texts), matrix)

    def _build_index(self, digest: str, encoder: SentenceEncoder) -> TopicIndex:
        with self._session() as session:
            topics = list(session.scalars(select(Topic).order_by(Topic.position)))
        by_owner = self._vector_rows()
        docs = [
            self._doc(t.id, t.intent, by_owner.get(t.id, []), [t.title, *(t.questions or [])], encoder)
            for t in topics
        ]
        first_sentences = {t.id: t.answer.split("。")[0] for t in topics}
        return TopicIndex(docs, encoder, digest, first_sentences, fits=_fits())

    def _build_symptom_index(self, digest: str, encoder: SentenceEncoder) -> TopicIndex:
        by_owner = self._vector_rows()
        docs = [
            self._doc(
                s.id, s.category, by_owner.get(f"{SYMPTOM_OWNER}{s.id}", []), [s.label, *s.keywords], encoder
            )
            for s in self.symptoms()
        ]
        vague = by_owner.get(f"{SYMPTOM_OWNER}{VAGUE}", [])
        if vague:
            docs.append(self._doc(VAGUE, "", vague, [], encoder))
        return TopicIndex(docs, encoder, digest, fits=_fits())

    def topic(self, topic_id: str) -> Optional[TopicView]:
        with self._session() as session:
            row = session.get(Topic, topic_id)
            return _topic(row) if row else None

    def brand(self, name_or_alias: str) -> Optional[BrandView]:
        """A brand by canonical name or by any alias, case-insensitive."""
        canonical = self.canonical("brand", name_or_alias) or name_or_alias
        with self._session() as session:
            row = session.get(Brand, canonical)
            return _brand(row) if row else None

    def brands(self) -> list[BrandView]:
        with self._session() as session:
            return [_brand(r) for r in session.scalars(select(Brand).order_by(Brand.position))]

    def canonical(self, kind: str, alias: str) -> Optional[str]:
        """Canonical value of a brand/component/card_type alias, or None when unknown."""
        with self._session() as session:
            row = session.get(Alias, (kind, alias.strip().lower()))
            return row.canonical if row else None

    def error_code(self, code: str) -> Optional[ErrorCodeView]:
        with self._session() as session:
            row = session.get(ErrorCode, code.strip().upper())
            return _code(row) if row else None

    def fee_rule(self, card_type: str) -> Optional[FeeRuleView]:
        canonical = self.canonical("card_type", card_type) or card_type
        with self._session() as session:
            row = session.get(FeeRule, canonical)
            if row is None:
                return None
            return FeeRuleView(
                row.card_type,
                row.issuer_rate_cap,
                row.issuer_fee_cap,
                row.network_rate_cap,
                row.network_fee_cap,
                row.source,
            )

    def fee_items(self, kind: str) -> list[FeeItemView]:
        with self._session() as session:
            rows = session.scalars(select(FeeItem).where(FeeItem.kind == kind).order_by(FeeItem.position))
            return [FeeItemView(r.kind, r.label, r.rate, r.text, r.source) for r in rows]

    def symptom(self, symptom_id: str) -> Optional[SymptomView]:
        with self._session() as session:
            row = session.get(Symptom, symptom_id)
            return _symptom(row) if row else None

    def symptoms(self, category: Optional[str] = None) -> list[SymptomView]:
        with self._session() as session:
            query = select(Symptom).order_by(Symptom.position)
            if category:
                query = query.where(Symptom.category == category)
            return [_symptom(r) for r in session.scalars(query)]

    def symptom_for(
        self, text: str, component: Optional[str] = None, category: Optional[str] = None
    ) -> Optional[SymptomView]:
        """The symptom a merchant's message points to: longest keyword hit, then component."""
        candidates = self.symptoms(category)
        lowered = text.lower()
        best, best_len = None, 0
        for symptom in candidates:
            for keyword in symptom.keywords:
                if keyword and keyword.lower() in lowered and len(keyword) > best_len:
                    best, best_len = symptom, len(keyword)
        if best is None and component:
            best = next((s for s in candidates if s.component == component), None)
        return best


def _topic(row: Topic) -> TopicView:
    return TopicView(
        row.id,
        row.intent,
        row.title,
        row.answer,
        list(row.steps or []),
        list(row.questions or []),
        dict(row.brand_notes or {}),
        row.source,
        row.family or "",
        row.flow,
    )


def _brand(row: Brand) -> BrandView:
    return BrandView(
        row.name,
        row.hotline,
        list(row.channels or []),
        row.fault_handling,
        row.software_updates,
        row.after_sales,
        row.source,
    )


def _code(row: ErrorCode) -> ErrorCodeView:
    return ErrorCodeView(
        row.code,
        row.name,
        row.meaning,
        row.cause,
        row.action,
        row.group,
        row.retry,
        row.high_risk,
        row.source,
    )


def _symptom(row: Symptom) -> SymptomView:
    stages: list[dict[str, Any]] = list(row.stages or [])
    return SymptomView(
        row.id,
        row.category,
        row.component,
        row.label,
        list(row.keywords or []),
        [StageView(s["title"], list(s["steps"]), bool(s.get("data_loss"))) for s in stages],
        row.prevention,
        row.source,
    )


def warm_in_background(engine: Engine, after: str) -> threading.Thread:
    """Fit the retrieval indexes of a new KB build now, in a background thread, so neither the
    bot's next message nor the staff console waits for them (``after``: what was published,
    for the log line should it fail). This process's shared store sees the new digest at once."""
    if shared_store.cache_info().currsize:
        shared_store().forget_digest()

    def run() -> None:
        try:
            store = KnowledgeStore(engine)
            store.topic_index()
            store.symptom_index()
            store.answer_index()
        except Exception:
            logger.warning("could not warm the retrieval indexes after %s", after, exc_info=True)

    thread = threading.Thread(target=run, name="posbot-warm-indexes", daemon=True)
    thread.start()
    return thread


@lru_cache(maxsize=1)
def shared_store() -> KnowledgeStore:
    """The process's one store, on POSBOT_DATABASE_URL (the action server; the NLU's
    KBTopicIntent in the Rasa server)."""
    url = database_url()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # SQLAlchemy 1.4 opens a new connection per session on an SQLite file (NullPool):
        # 3-4 % of the Rasa server's CPU under load went to connect(). Keep a few open.
        kwargs = {"connect_args": {"check_same_thread": False}}
        if ":memory:" not in url and url.rstrip("/") != "sqlite:":
            kwargs["poolclass"] = QueuePool
    return KnowledgeStore(create_engine(url, **kwargs), digest_ttl_s=DIGEST_TTL_S, stale_ok=True)
