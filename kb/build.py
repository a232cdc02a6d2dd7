"""Load checked content into the database in one transaction.

A KB with any problem is refused before the database is touched; a failure half-way rolls the
whole transaction back, so merchants keep getting the previous answers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import numpy as np
from sqlalchemy import delete, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import records.store  # noqa: F401  (registers tickets/handoffs/feedback on Base for create_schema)
from kb.encoder import SentenceEncoder, get_encoder
from kb.loader import Content, Problem
from kb.retrieval import SYMPTOM_OWNER, VAGUE
from kb.schema import (
    KB_TABLES,
    Alias,
    Base,
    Brand,
    ErrorCode,
    FeeItem,
    FeeRule,
    KbMeta,
    QuestionVector,
    Symptom,
    Topic,
)

logger = logging.getLogger(__name__)


class KbInvalid(Exception):
    """The content has problems; nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in kb/content")
        self.problems = problems


@dataclass(frozen=True)
class BuildResult:
    changed: bool
    counts: dict[str, int]


def create_schema(engine: Engine) -> None:
    """Create every table (KB and records) that does not exist yet."""
    Base.metadata.create_all(engine)


def _kb_schema_current(engine: Engine) -> bool:
    """True when every KB table exists with the columns this version of the code writes."""
    inspector = inspect(engine)
    for table in KB_TABLES:
        name = table.__tablename__
        if not inspector.has_table(name):
            return False
        columns = {c["name"] for c in inspector.get_columns(name)}
        if columns != {c.name for c in table.__table__.columns}:
            return False
    return True


def build(
    engine: Engine, content: Content, *, force: bool = False, encoder: Optional[SentenceEncoder] = None
) -> BuildResult:
    """Replace the KB tables with ``content``; unchanged content is a no-op unless ``force``.

    The KB tables hold nothing but what kb/content produces, so when a new version of the code
    changes their columns they are dropped and created again (the record tables are never
    touched). Question embeddings are computed here, once per build, with ``encoder``
    (the shared e5 encoder by default).
    """
    if content.problems:
        raise KbInvalid(content.problems)
    if not _kb_schema_current(engine):
        Base.metadata.drop_all(engine, tables=[t.__table__ for t in KB_TABLES])
    create_schema(engine)
    with Session(engine) as session:
        current = session.get(KbMeta, "digest")
        if current is not None and current.value == content.digest and not force:
            return BuildResult(changed=False, counts=_counts(content))
    rows = _rows(content)
    rows["question_vectors"] = _vectors(content, encoder or get_encoder())
    counts = {name: len(items) for name, items in rows.items()}
    with Session(engine) as session, session.begin():
        for table in reversed(KB_TABLES):
            session.execute(delete(table))
        for items in rows.values():
            session.add_all(items)
        session.add(KbMeta(key="digest", value=content.digest))
        for name, words in content.word_lists.items():
            session.add(KbMeta(key=name, value=json.dumps(words, ensure_ascii=False)))
        session.add(KbMeta(key="encoder", value=(encoder or get_encoder()).name))
        session.add(KbMeta(key="built_at", value=datetime.now(timezone.utc).isoformat()))
    logger.info("knowledge base built: %s", counts)
    return BuildResult(changed=True, counts=counts)


def _counts(content: Content) -> dict[str, int]:
    return {name: len(items) for name, items in _rows(content).items()}


def _vectors(content: Content, encoder: SentenceEncoder) -> list[object]:
    """Embeddings of every topic question and of every symptom's reports and keywords (owner
    ``symptom:<id>``: the walk's own retrieval, kb/store.py ``symptom_index``)."""
    texts = [(t["id"], q) for t in content.topics for q in [t["question"], *t["questions"]]]
    texts += [
        (f"{SYMPTOM_OWNER}{s['id']}", q)
        for s in content.symptoms
        for q in [s["label"], *s["reports"], *s["keywords"]]
    ]
    texts += [(f"{SYMPTOM_OWNER}{VAGUE}", q) for q in content.word_lists.get("vague_fault_reports", [])]
    texts += [
        (_learned_owner(item["answer"]), item["text"])
        for item in content.learned
        if _learned_owner(item["answer"])
    ]
    vectors: Iterable[Any] = encoder.encode([q for _, q in texts]) if texts else []
    return [
        QuestionVector(
            topic_id=topic_id,
            text=text,
            encoder=encoder.name,
            vector=np.asarray(vector, dtype=np.float32).tobytes(),
        )
        for (topic_id, text), vector in zip(texts, vectors, strict=True)
    ]


def _learned_owner(answer: str) -> str:
    """Whose retrieval a learned phrasing joins: its topic's, or its walk's (``walk:?``: the
    vague class); codes, flows and small talk are the NLU's to learn, not retrieval's."""
    if answer.startswith("walk:"):
        return f"{SYMPTOM_OWNER}{answer[5:]}"
    if ":" in answer or answer == "decline":
        return ""
    return answer


def _rows(content: Content) -> dict[str, list[object]]:
    aliases: dict[tuple[str, str], Alias] = {}

    def alias(kind: str, text: str, canonical: str) -> None:
        key = (kind, text.strip().lower())
        if key[1]:
            aliases.setdefault(key, Alias(kind=kind, alias=key[1], canonical=canonical))

    for brand in content.brands:
        for text in [brand["name"], *brand["aliases"]]:
            alias("brand", text, brand["name"])
    for kind, entries in (("component", content.components), ("card_type", content.card_types)):
        for entry in entries:
            for text in [entry["name"], *entry["aliases"]]:
                alias(kind, text, entry["name"])
    for entry in content.error_codes:
        for text in entry.get("aliases", []):
            alias("error_code", text, entry["codes"][0])
    return {
        "topics": [
            Topic(
                id=t["id"],
                intent=t["intent"],
                family=t["family"],
                title=t["question"],
                questions=t["questions"],
                answer=t["answer"],
                steps=t["steps"],
                flow=t["flow"],
                brand_notes=t["brand_notes"],
                position=i,
                source=t["source"],
            )
            for i, t in enumerate(content.topics)
        ],
        "brands": [
            Brand(
                name=b["name"],
                hotline=b["hotline"],
                channels=b["channels"],
                fault_handling=b["fault_handling"],
                software_updates=b["software_updates"],
                after_sales=b["after_sales"],
                position=i,
                source=b["source"],
            )
            for i, b in enumerate(content.brands)
        ],
        "aliases": list(aliases.values()),
        "error_codes": [
            ErrorCode(
                code=code,
                name=e["name"],
                meaning=e["meaning"],
                cause=e["cause"],
                action=e["action"],
                group=e["group"],
                retry=e["retry"],
                high_risk=e["high_risk"],
                source=e["source"],
            )
            for e in content.error_codes
            for code in e["codes"]
        ],
        "fee_rules": [FeeRule(**rule) for rule in content.fees.get("card_rules", [])],
        "fee_items": [
            FeeItem(
                kind=item["kind"],
                label=item["label"],
                rate=item["rate"],
                text=item["text"],
                position=i,
                source=item["source"],
            )
            for i, item in enumerate(content.fees.get("items", []))
        ],
        "symptoms": [
            Symptom(
                id=s["id"],
                category=s["category"],
                component=s["component"],
                label=s["label"],
                keywords=s["keywords"],
                stages=s["stages"],
                prevention=s["prevention"],
                position=i,
                source=s["source"],
            )
            for i, s in enumerate(content.symptoms)
        ],
    }
