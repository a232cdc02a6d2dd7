"""The staff console's learning queue (issue 16): questions ignored by staff, and grouping by meaning.

* ``IgnoredQuestion`` is a small table in the records database (next to tickets, handoffs and
  feedback, same ``Base``; never touched by ``posbot kb build``), created on first use: a question
  staff pressed 忽略 on leaves the queue for good (matched by ``question_key``).
* ``group_questions`` puts questions that mean the same together, with the KB's own sentence
  encoder (kb/encoder.py, multilingual-e5-small, L2-normalised vectors: cosine = dot product).

Why complete linkage at ``GROUP_AT`` = 0.95: e5-small's cosines are compressed (two unrelated
POS questions are typically 0.80-0.92, "pos机能连蓝牙音箱吗" vs "pos机支持数字人民币吗" 0.90),
while the same question in other words is 0.96-0.99 ("收款码贴纸掉了怎么办" / "收款码的贴纸掉了
咋办" 0.994, "pos机能连蓝牙音箱吗" / "pos机能不能接蓝牙音箱播报" 0.966). Measured 2026-11-30 on
the KB's own questions (2,507: every topic's questions and learned.yml, labelled by their answer),
clustering random samples of 150 the way the queue does: at 0.95 97.5 % of the questions share
their group's answer (0.93: 88 %, 0.94: 96 %, 0.96: 99 %, with half as many questions grouped).
Staff teach a whole group one answer, so a wrong merge costs more than a missed one: 0.95, and
complete linkage (every pair in a group is at least 0.95 alike, so no chain of small steps joins
two different questions), not single linkage or a running centroid.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from typing import Sequence

import numpy as np
from sqlalchemy import Column, DateTime, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kb.encoder import SentenceEncoder
from kb.schema import Base, utcnow

#: Two questions at least this alike (cosine of their e5 vectors) belong to one group (see above).
GROUP_AT = 0.95
#: Longest question kept in the table (the console refuses longer ones before).
MAX_KEY = 255
_EDGES = "，。？！,.?!~～…、；;：:\"'“”‘’ "


def question_key(text: str) -> str:
    """One spelling per question: NFKC (full-width → half-width), no spaces, lower case, no
    punctuation at either end ("刷卡 没反应？" and "刷卡没反应" are the same question)."""
    kept = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or "")).lower()
    return kept.strip(_EDGES)[:MAX_KEY]


class IgnoredQuestion(Base):
    """A question staff chose not to teach (忽略): it no longer shows in the learning queue."""

    __tablename__ = "learning_ignored"
    id = Column(Integer, primary_key=True, autoincrement=True)
    key = Column(String(MAX_KEY), nullable=False, unique=True)
    text = Column(Text, nullable=False)
    staff = Column(String(60), nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class IgnoreStore:
    """Reads and writes ``learning_ignored``; creates the table on first use."""

    _ready: weakref.WeakSet[Engine] = weakref.WeakSet()

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        if engine not in IgnoreStore._ready:
            Base.metadata.create_all(engine, tables=[IgnoredQuestion.__table__])
            IgnoreStore._ready.add(engine)

    def ignore(self, texts: Sequence[str], staff: str) -> int:
        """Remember ``texts`` as ignored; returns how many were not ignored before."""
        added = 0
        for text in texts:
            key = question_key(text)
            if not key:
                continue
            try:
                with Session(self.engine) as session, session.begin():
                    if session.scalar(select(IgnoredQuestion.id).where(IgnoredQuestion.key == key)) is None:
                        session.add(IgnoredQuestion(key=key, text=text.strip(), staff=staff[:60]))
                        added += 1
            except IntegrityError:  # another editor ignored it at the same moment
                continue
        return added

    def keys(self) -> set[str]:
        with Session(self.engine) as session:
            return set(session.scalars(select(IgnoredQuestion.key)))


def group_questions(
    texts: Sequence[str], encoder: SentenceEncoder, threshold: float = GROUP_AT
) -> list[list[int]]:
    """Indexes of ``texts`` in groups of the same meaning (complete linkage at ``threshold``),
    each group in the order of ``texts``, groups ordered by their first member."""
    if not texts:
        return []
    if len(texts) == 1:
        return [[0]]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    vectors = np.asarray(encoder.encode(list(texts)), dtype=np.float64)
    distance = np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="complete")
    labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return sorted(groups.values(), key=lambda members: members[0])
