"""The action server's access to the knowledge base.

One engine per process, built from POSBOT_DATABASE_URL (SQLite under var/ by default). Lookups are
indexed and small, but they run in a worker thread so a slow database never stalls the event loop
that serves other merchants. Content edits reach merchants as soon as ``posbot kb build`` commits:
nothing is cached here across requests.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from typing import Callable, TypeVar

from sqlalchemy import create_engine

from kb.settings import database_url
from kb.store import KnowledgeStore

logger = logging.getLogger(__name__)
T = TypeVar("T")


@lru_cache(maxsize=1)
def knowledge_store() -> KnowledgeStore:
    url = database_url()
    kwargs = {"connect_args": {"check_same_thread": False}} if url.startswith("sqlite") else {
        "pool_pre_ping": True}
    return KnowledgeStore(create_engine(url, **kwargs))


async def query(fn: Callable[[KnowledgeStore], T]) -> T:
    """Run ``fn(store)`` in a worker thread."""
    store = knowledge_store()
    return await asyncio.to_thread(fn, store)
