"""SQLAlchemy models of the knowledge base and of the operational records.

The KB tables (``kb_*``) are rebuilt as a whole by ``posbot kb build`` from kb/content; the record
tables (tickets, handoffs, feedback) grow at run time and are never touched by a KB build.
Ordered lists (steps, keywords, stages) are JSON columns: they are always read whole with their
parent row, so a child table would only add joins.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import JSON, Boolean, Column, Float, Integer, LargeBinary, String, Text, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import declarative_base

logger = logging.getLogger(__name__)

# SQLAlchemy 1.4 ships no type information: the declarative base is a class made at run time.
Base: Any = declarative_base()


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def add_missing_columns(engine: Engine, columns: Iterable[tuple[str, str, str]]) -> None:
    """Bring an older database up to date: (table, column, SQL type) added since it was made."""
    for table, column, ddl in columns:
        if column in {c["name"] for c in inspect(engine).get_columns(table)}:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
            logger.info("added column %s.%s", table, column)
        except SQLAlchemyError:  # another instance added it at the same moment
            if column not in {c["name"] for c in inspect(engine).get_columns(table)}:
                raise


class Topic(Base):
    """One answer, found by its questions: ``title`` is the standard question, ``questions`` the
    other ways merchants ask it; ``intent`` (a contract intent) is a prior, not a filter."""

    __tablename__ = "kb_topics"
    id = Column(String(80), primary_key=True)
    intent = Column(String(40), nullable=False, index=True)
    family = Column(String(40), nullable=False, default="")
    title = Column(String(200), nullable=False)
    questions = Column(JSON, nullable=False, default=list)
    answer = Column(Text, nullable=False)
    steps = Column(JSON, nullable=False, default=list)
    flow = Column(String(60), nullable=True)
    brand_notes = Column(JSON, nullable=False, default=dict)
    position = Column(Integer, nullable=False, default=0)
    source = Column(Text, nullable=False)


class QuestionVector(Base):
    """A topic question's sentence embedding (float32 bytes), computed by ``posbot kb build`` so
    the action server ranks topics without encoding the whole KB at start."""

    __tablename__ = "kb_question_vectors"
    id = Column(Integer, primary_key=True, autoincrement=True)
    topic_id = Column(String(80), nullable=False, index=True)
    text = Column(Text, nullable=False)
    encoder = Column(String(80), nullable=False)
    vector = Column(LargeBinary, nullable=False)


class Brand(Base):
    """A POS brand or acquirer; ``hotline`` is null unless a cited source gives the number."""

    __tablename__ = "kb_brands"
    name = Column(String(40), primary_key=True)
    hotline = Column(String(40), nullable=True)
    channels = Column(JSON, nullable=False, default=list)
    fault_handling = Column(Text, nullable=False, default="")
    software_updates = Column(Text, nullable=False, default="")
    after_sales = Column(Text, nullable=False, default="")
    position = Column(Integer, nullable=False, default=0)
    source = Column(Text, nullable=False)


class Alias(Base):
    """What a merchant types (lower-cased) → canonical value of a brand, component or card type."""

    __tablename__ = "kb_aliases"
    kind = Column(String(20), primary_key=True)
    alias = Column(String(80), primary_key=True)
    canonical = Column(String(40), nullable=False)


class ErrorCode(Base):
    """One UnionPay response code (ISO 8583 field 39) as a merchant reads it off the screen."""

    __tablename__ = "kb_error_codes"
    code = Column(String(4), primary_key=True)
    name = Column(String(120), nullable=False)
    meaning = Column(Text, nullable=False)
    cause = Column(Text, nullable=False)
    action = Column(Text, nullable=False)
    group = Column(String(20), nullable=False)
    retry = Column(Boolean, nullable=False)
    high_risk = Column(Boolean, nullable=False)
    source = Column(Text, nullable=False)


class FeeRule(Base):
    """Regulated caps per card type, the numbers the fee calculator applies (percent, yuan)."""

    __tablename__ = "kb_fee_rules"
    card_type = Column(String(20), primary_key=True)
    issuer_rate_cap = Column(Float, nullable=False)
    issuer_fee_cap = Column(Float, nullable=True)
    network_rate_cap = Column(Float, nullable=False)
    network_fee_cap = Column(Float, nullable=True)
    source = Column(Text, nullable=False)


class FeeItem(Base):
    """Fee facts told as text: regulation, market rates, history, hidden fees, exemptions."""

    __tablename__ = "kb_fee_items"
    id = Column(Integer, primary_key=True, autoincrement=True)
    kind = Column(String(20), nullable=False, index=True)
    label = Column(String(200), nullable=False)
    rate = Column(Float, nullable=True)
    text = Column(Text, nullable=False, default="")
    position = Column(Integer, nullable=False, default=0)
    source = Column(Text, nullable=False)


class Symptom(Base):
    """A fault symptom with escalating stages of steps, walked by guided troubleshooting."""

    __tablename__ = "kb_symptoms"
    id = Column(String(60), primary_key=True)
    category = Column(String(20), nullable=False, index=True)
    component = Column(String(40), nullable=True, index=True)
    label = Column(String(60), nullable=False)
    keywords = Column(JSON, nullable=False, default=list)
    stages = Column(JSON, nullable=False, default=list)
    prevention = Column(Text, nullable=False, default="")
    position = Column(Integer, nullable=False, default=0)
    source = Column(Text, nullable=False)


class KbMeta(Base):
    """Facts about the loaded content: its hash and when it was built."""

    __tablename__ = "kb_meta"
    key = Column(String(40), primary_key=True)
    value = Column(Text, nullable=False)


KB_TABLES: list[type[Any]] = [
    Topic,
    QuestionVector,
    Brand,
    Alias,
    ErrorCode,
    FeeRule,
    FeeItem,
    Symptom,
    KbMeta,
]
