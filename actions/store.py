"""The action server's access to the knowledge base.

One engine per process, built from POSBOT_DATABASE_URL (SQLite under var/ by default). Lookups are
indexed and small, but they run in a worker thread so a slow database never stalls the event loop
that serves other merchants. Content edits reach merchants as soon as ``posbot kb build`` commits:
nothing is cached here across requests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, TypeVar

from kb.store import KnowledgeStore, shared_store

logger = logging.getLogger(__name__)
T = TypeVar("T")


def knowledge_store() -> KnowledgeStore:
    return shared_store()


async def query(fn: Callable[[KnowledgeStore], T]) -> T:
    """Run ``fn(store)`` in a worker thread."""
    store = knowledge_store()
    return await asyncio.to_thread(fn, store)


def warm() -> None:
    """Build the retrieval indexes (encoder, question vectors, the topic and the topic-or-walk
    classifiers: ~10-40 s) before the action server answers its first request, so no
    merchant's question meets a half-built index: the launcher waits for /health, which
    answers only after this. Called by the action server's entry (actions/serve.py) before
    rasa_sdk serves, unless ``POSBOT_WARM_ACTIONS=0``; never on import, so the tests and the
    Rasa server that import this module build nothing. (Built in a background thread instead,
    the first conversations ran while a CPU-bound build held the interpreter, and a
    repair-ticket form under that load once dropped the merchant's SN without a reply:
    tests/integration/test_conversations_live.py; the root cause is not found yet,
    docs/quality.md.)"""
    try:
        store = knowledge_store()
        store.topic_index()
        store.answer_index()
        logger.info("retrieval indexes warm")
    except Exception:  # the KB may not be built yet: the first question builds it then
        logger.warning("could not warm the retrieval index", exc_info=True)
