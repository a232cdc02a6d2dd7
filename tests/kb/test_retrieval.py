"""FAQ retrieval scores a text once, whatever priors it is ranked with afterwards."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from kb.encoder import SentenceEncoder
from kb.retrieval import CachedIndex, TopicIndex
from kb.store import KnowledgeStore


class Counting:
    """The index's encoder, counting the texts it is asked to embed."""

    def __init__(self, inner: SentenceEncoder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.encode(texts)


def test_a_text_ranked_again_is_scored_once_and_ranked_the_same(store: KnowledgeStore) -> None:
    index = store.topic_index()
    counting = Counting(index.encoder)
    index.encoder = counting
    question = "电签机的电池能不能自己拆下来换"
    first = index.rank(question)
    assert index.rank(question) == first
    assert counting.texts == [question]
    assert first[0].topic_id == "battery_removal"


def test_the_priors_still_move_a_text_scored_before(store: KnowledgeStore) -> None:
    index = store.topic_index()
    question = "怎么收费的"  # could be several topics: the NLU's intent decides between them
    plain = index.rank(question, limit=len(index.topics))
    by_intent = {t.id: t.intent for t in index.topics}
    second_intent = next(
        by_intent[m.topic_id] for m in plain if by_intent[m.topic_id] != by_intent[plain[0].topic_id]
    )
    leaning = index.rank(question, {second_intent: 1.0}, limit=len(index.topics))
    assert by_intent[leaning[0].topic_id] == second_intent
    assert {m.topic_id: m.meaning for m in leaning} == {m.topic_id: m.meaning for m in plain}


def test_a_server_answers_from_the_previous_index_while_a_new_build_is_fitted(
    store: KnowledgeStore,
) -> None:
    """The first merchant after a publish must not wait 20-40 s for the new index."""
    index = store.topic_index()
    cache = CachedIndex()
    assert cache.get("v1", lambda: index) is index
    release = threading.Event()
    newer = TopicIndex(index.topics, index.encoder, "v2")

    def slow_build() -> TopicIndex:
        release.wait(10)
        return newer

    started = time.monotonic()
    assert cache.get("v2", slow_build, stale_ok=True) is index  # at once, the previous index
    assert cache.get("v2", slow_build, stale_ok=True) is index  # one build, not one per request
    assert time.monotonic() - started < 1
    release.set()
    deadline = time.monotonic() + 10
    while cache.get("v2", slow_build, stale_ok=True) is index and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.get("v2", slow_build, stale_ok=True) is newer


def test_tools_and_the_console_wait_for_the_new_index(store: KnowledgeStore) -> None:
    index = store.topic_index()
    cache = CachedIndex()
    cache.get("v1", lambda: index)
    newer = TopicIndex(index.topics, index.encoder, "v2")
    assert cache.get("v2", lambda: newer) is newer


def test_a_failed_background_build_is_tried_again(store: KnowledgeStore) -> None:
    index = store.topic_index()
    cache = CachedIndex()
    cache.get("v1", lambda: index)
    failed = threading.Event()

    def broken() -> TopicIndex:
        failed.set()
        raise OSError("disk full")

    assert cache.get("v2", broken, stale_ok=True) is index
    assert failed.wait(5)
    newer = TopicIndex(index.topics, index.encoder, "v2")
    deadline = time.monotonic() + 10
    while cache.get("v2", lambda: newer, stale_ok=True) is index and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.get("v2", lambda: newer, stale_ok=True) is newer


def test_an_index_fitted_with_another_encoder_never_answers(store: KnowledgeStore) -> None:
    """Same KB build, another encoder (a test's stand-in, a new model): fitted again."""
    index = store.topic_index()
    cache = CachedIndex()
    cache.get("v1", lambda: index, encoder=index.encoder.name)

    class Other:
        name, dim = "other-encoder", index.encoder.dim

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            return index.encoder.encode(texts)

    refitted = TopicIndex(index.topics, Other(), "v1")
    assert cache.get("v1", lambda: refitted, stale_ok=True, encoder="other-encoder") is refitted
    assert cache.get("v1", lambda: index, encoder="other-encoder") is refitted


def test_a_message_that_is_a_topics_question_gets_that_topic_whatever_the_intent(
    store: KnowledgeStore,
) -> None:
    """A question staff just added is answered after `posbot kb build`, before any retraining
    has taught the NLU its intent (which may lean, confidently, elsewhere)."""
    index = store.topic_index()
    topic = next(t for t in index.topics if t.id == "battery_removal")
    other_intent = next(t.intent for t in index.topics if t.intent != topic.intent)
    for asked in (topic.questions[1], f" {topic.questions[1]}？", topic.questions[1].upper()):
        best = index.rank(asked, {other_intent: 1.0})[0]
        assert best.topic_id == "battery_removal" and best.score >= 1.0, asked
    near = index.rank(topic.questions[1] + "呢 我的机器", {other_intent: 1.0})
    assert near[0].score < 1.0  # only the question itself, not text around it
