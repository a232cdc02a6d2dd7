"""The action server's access to the knowledge base.

One engine per process, built from POSBOT_DATABASE_URL (SQLite under var/ by default). Lookups are
indexed and small, but they run in a worker thread so a slow database never stalls the event loop
that serves other merchants. Content edits reach merchants as soon as ``posbot kb build`` commits:
nothing is cached here across requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
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


def warm_in_background() -> None:
    """Build the retrieval index (encoder, question vectors, the topic and the
    topic-or-walk classifiers: ~10-40 s) while
    the action server starts, so the first merchant's question does not wait for it. Set by
    the launcher (``POSBOT_WARM_ACTIONS=1``) for the action server process only."""
    import threading

    def warm() -> None:
        try:
            store = knowledge_store()
            store.topic_index()
            store.answer_index()
            logger.info("retrieval indexes warm")
        except Exception:  # the KB may not be built yet: the first question builds it then
            logger.warning("could not warm the retrieval index", exc_info=True)

    threading.Thread(target=warm, name="posbot-warm-retrieval", daemon=True).start()


if os.environ.get("POSBOT_WARM_ACTIONS") == "1":
    warm_in_background()
