"""Load checked content into the database in one transaction.

A KB with any problem is refused before the database is touched; a failure half-way rolls the
whole transaction back, so merchants keep getting the previous answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import kb.records  # noqa: F401  (registers tickets/handoffs/feedback on Base for create_schema)
from kb.content import Content, Problem
from kb.schema import KB_TABLES, Alias, Base, Brand, ErrorCode, FeeItem, FeeRule, KbMeta, Symptom, Topic

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


def build(engine: Engine, content: Content, *, force: bool = False) -> BuildResult:
    """Replace the KB tables with ``content``; unchanged content is a no-op unless ``force``."""
    if content.problems:
        raise KbInvalid(content.problems)
    create_schema(engine)
    rows = _rows(content)
    counts = {name: len(items) for name, items in rows.items()}
    with Session(engine) as session, session.begin():
        current = session.get(KbMeta, "digest")
        if current is not None and current.value == content.digest and not force:
            return BuildResult(changed=False, counts=counts)
        for table in reversed(KB_TABLES):
            session.execute(delete(table))
        for items in rows.values():
            session.add_all(items)
        session.add(KbMeta(key="digest", value=content.digest))
        session.add(KbMeta(key="built_at", value=datetime.now(timezone.utc).isoformat()))
    logger.info("knowledge base built: %s", counts)
    return BuildResult(changed=True, counts=counts)


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
    return {
        "topics": [
            Topic(id=t["id"], intent=t["intent"], title=t["title"], answer=t["answer"],
                  steps=t["steps"], keywords=t["keywords"], is_default=t["default"],
                  brand_notes=t["brand_notes"], position=i, source=t["source"])
            for i, t in enumerate(content.topics)
        ],
        "brands": [
            Brand(name=b["name"], hotline=b["hotline"], channels=b["channels"],
                  fault_handling=b["fault_handling"], software_updates=b["software_updates"],
                  after_sales=b["after_sales"], position=i, source=b["source"])
            for i, b in enumerate(content.brands)
        ],
        "aliases": list(aliases.values()),
        "error_codes": [
            ErrorCode(code=code, name=e["name"], meaning=e["meaning"], cause=e["cause"],
                      action=e["action"], group=e["group"], retry=e["retry"],
                      high_risk=e["high_risk"], source=e["source"])
            for e in content.error_codes for code in e["codes"]
        ],
        "fee_rules": [FeeRule(**rule) for rule in content.fees.get("card_rules", [])],
        "fee_items": [
            FeeItem(kind=item["kind"], label=item["label"], rate=item["rate"], text=item["text"],
                    position=i, source=item["source"])
            for i, item in enumerate(content.fees.get("items", []))
        ],
        "symptoms": [
            Symptom(id=s["id"], category=s["category"], component=s["component"], label=s["label"],
                    keywords=s["keywords"], stages=s["stages"], prevention=s["prevention"],
                    position=i, source=s["source"])
            for i, s in enumerate(content.symptoms)
        ],
    }
