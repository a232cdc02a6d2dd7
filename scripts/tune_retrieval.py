"""Choose retrieval's weights and thresholds on the KB's own questions (leave one question out).

Each alternate question of each topic is ranked against the index with itself removed; the
topic it belongs to is the right answer. Nothing here reads a held-out set: those only score
the result (make eval). Prints top-1 accuracy per lexical weight and the precision/coverage of
answering directly at several thresholds.

    .venv/bin/python scripts/tune_retrieval.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.retrieval import TopicDoc, TopicIndex  # noqa: E402
from kb.settings import database_url  # noqa: E402
from kb.store import KnowledgeStore  # noqa: E402


def folds(index: TopicIndex, k: int = 5) -> list[tuple[TopicIndex, list[tuple[str, str]]]]:
    """k indexes, each without one fifth of the alternate questions, and those questions."""
    out = []
    for fold in range(k):
        docs, held = [], []
        for topic in index.topics:
            keep = [i for i in range(len(topic.questions)) if i == 0 or i % k != fold]
            held += [(topic.questions[i], topic.id) for i in range(1, len(topic.questions)) if i % k == fold]
            docs.append(
                TopicDoc(topic.id, topic.intent, tuple(topic.questions[i] for i in keep), topic.vectors[keep])
            )
        out.append((TopicIndex(docs, index.encoder, index.digest), held))
    return out


def main() -> int:
    store = KnowledgeStore(create_engine(database_url()))
    index = store.topic_index()
    splits = folds(index)
    total = sum(len(held) for _, held in splits)
    print(f"{total} alternate questions of {len(index.topics)} topics, 5 folds")
    ranked = [(fold_index.rank(q, limit=3), gold) for fold_index, held in splits for q, gold in held]
    top1 = sum(r[0].topic_id == gold for r, gold in ranked) / len(ranked)
    top3 = sum(gold in [m.topic_id for m in r] for r, gold in ranked) / len(ranked)
    print(f"top-1 {top1:.3f}, top-3 {top3:.3f} (no intent prior)")
    for at in (0.2, 0.3, 0.4, 0.5, 0.6):
        for margin in (0.0, 0.05, 0.1, 0.2):
            answered = [
                (r, gold)
                for r, gold in ranked
                if r[0].score >= at and (len(r) < 2 or r[0].score - r[1].score >= margin)
            ]
            if answered:
                precision = sum(r[0].topic_id == gold for r, gold in answered) / len(answered)
                print(
                    f"  answer at {at:.2f}, margin {margin:.2f}: answers "
                    f"{len(answered) / len(ranked):.2f}, right {precision:.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
