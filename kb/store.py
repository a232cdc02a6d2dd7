"""Read access to the knowledge base: indexed lookups that return plain values.

The store takes an engine, so the same class serves SQLite in development, PostgreSQL in
production and in-memory SQLite in tests. Each call opens a short session and returns detached
plain data, so callers never hold a connection across an await.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kb.schema import Alias, Brand, ErrorCode, FeeItem, FeeRule, KbMeta, Symptom, Topic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicView:
    id: str
    intent: str
    title: str
    answer: str
    steps: list[str]
    keywords: list[str]
    brand_notes: dict[str, str]
    source: str


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


class KnowledgeStore:
    """Answers the questions the actions ask of the knowledge base."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def digest(self) -> Optional[str]:
        """Hash of the content that was last built, or None when the KB was never built."""
        with self._session() as session:
            row = session.get(KbMeta, "digest")
            return row.value if row else None

    def topics(self, intent: str) -> list[TopicView]:
        with self._session() as session:
            rows = session.scalars(
                select(Topic).where(Topic.intent == intent).order_by(Topic.is_default.desc(),
                                                                     Topic.position)
            ).all()
            return [_topic(row) for row in rows]

    def topic_for(self, intent: str, text: str = "") -> Optional[TopicView]:
        """The topic of ``intent`` whose keywords best match ``text``; the default one otherwise.

        The longest matching keyword wins, so "结算到账" picks the settlement topic over a
        topic that only matches "结算".
        """
        topics = self.topics(intent)
        if not topics:
            return None
        lowered = text.lower()
        best, best_len = topics[0], 0
        for topic in topics:
            for keyword in topic.keywords:
                if keyword and keyword.lower() in lowered and len(keyword) > best_len:
                    best, best_len = topic, len(keyword)
        return best

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
            return FeeRuleView(row.card_type, row.issuer_rate_cap, row.issuer_fee_cap,
                               row.network_rate_cap, row.network_fee_cap, row.source)

    def fee_items(self, kind: str) -> list[FeeItemView]:
        with self._session() as session:
            rows = session.scalars(
                select(FeeItem).where(FeeItem.kind == kind).order_by(FeeItem.position)
            )
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

    def symptom_for(self, text: str, component: Optional[str] = None,
                    category: Optional[str] = None) -> Optional[SymptomView]:
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
    return TopicView(row.id, row.intent, row.title, row.answer, list(row.steps or []),
                     list(row.keywords or []), dict(row.brand_notes or {}), row.source)


def _brand(row: Brand) -> BrandView:
    return BrandView(row.name, row.hotline, list(row.channels or []), row.fault_handling,
                     row.software_updates, row.after_sales, row.source)


def _code(row: ErrorCode) -> ErrorCodeView:
    return ErrorCodeView(row.code, row.name, row.meaning, row.cause, row.action, row.group,
                         row.retry, row.high_risk, row.source)


def _symptom(row: Symptom) -> SymptomView:
    stages: list[dict[str, Any]] = list(row.stages or [])
    return SymptomView(
        row.id, row.category, row.component, row.label, list(row.keywords or []),
        [StageView(s["title"], list(s["steps"]), bool(s.get("data_loss"))) for s in stages],
        row.prevention, row.source,
    )
