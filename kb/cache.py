"""What is slow to compute and safe to recompute, kept on disk between processes.

Every `posbot kb build`, training run, server start and test process used to redo the same work:
encode the KB's ~4,200 questions (1-2 min on 2 cores) and fit three retrieval classifiers on them
(~30 s each). Both results depend only on their inputs, so they are kept under the cache folder
(``POSBOT_CACHE_DIR``, default ``var/cache``), shared by every process of this checkout:

* :class:`DiskVectors` — the encoder's vector of each text, one SQLite file per encoder (its name
  and the engine's version in the file name). Only texts encoded in batches are written (a KB
  build, training); a merchant's single message stays in the process's memory, so the file holds
  the KB's and the training data's texts, not what merchants typed.
* :class:`FittedFiles` — fitted objects (a retrieval index's vectorizer and classifier) under the
  SHA-256 of everything the fit reads; the newest :data:`FITS_KEPT` are kept.

A cache that cannot be read or written (read-only disk, a broken file) is logged once and then
left alone: the work is done in memory as before, never an error for the merchant.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sqlite3
import tempfile
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

logger = logging.getLogger(__name__)

#: Fitted objects kept (three indexes per KB version, ~50 MB each: the current KB and the one before).
FITS_KEPT = 6


def cache_dir() -> Optional[Path]:
    """The configured cache folder (``POSBOT_CACHE_DIR``), or None when it cannot be created."""
    from kb.settings import Settings

    folder = Settings.from_env().cache_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("cache folder %s unusable (%s): computing without it", folder, error)
        return None
    return folder


class DiskVectors:
    """Text → vector bytes in one SQLite file (WAL: readers never wait for a writer)."""

    def __init__(self, path: Path) -> None:
        self.path: Optional[Path] = path
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        connection = sqlite3.connect(self.path, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS vectors (text TEXT PRIMARY KEY, vector BLOB NOT NULL)"
            )
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def _give_up(self, error: Exception) -> None:
        logger.warning("vector cache %s unusable (%s): encoding without it", self.path, error)
        self.path = None

    def read(self, texts: Sequence[str]) -> dict[str, bytes]:
        if self.path is None or not texts:
            return {}
        found: dict[str, bytes] = {}
        try:
            # closing(): the connection is closed on an error too (its context only commits).
            with self._lock, closing(self._connect()) as connection, connection:
                unique = list(dict.fromkeys(texts))
                for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
                    chunk = unique[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    found.update(
                        connection.execute(f"SELECT text, vector FROM vectors WHERE text IN ({marks})", chunk)
                    )
        except (sqlite3.Error, OSError) as error:
            self._give_up(error)
            return {}
        return found

    def write(self, pairs: Iterable[tuple[str, bytes]]) -> None:
        if self.path is None:
            return
        try:
            with self._lock, closing(self._connect()) as connection, connection:
                connection.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", list(pairs))
        except (sqlite3.Error, OSError) as error:
            self._give_up(error)


def fingerprint(*parts: bytes | str) -> str:
    """SHA-256 over the parts, each length-prefixed (so ("ab", "c") ≠ ("a", "bc"))."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


class FittedFiles:
    """Fitted objects under the fingerprint of their inputs, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, key: str) -> Any:
        """The object stored under ``key``, or None (never stored, or unreadable)."""
        path = self.folder / f"{key}.pickle"
        try:
            with path.open("rb") as stream:
                found = pickle.load(stream)  # our own file, written by save() below
            os.utime(path)  # recently used: pruned last
            return found
        except FileNotFoundError:
            return None
        except Exception as error:  # a truncated or foreign file: fit again, overwrite it
            logger.warning("cached fit %s unreadable (%s): fitting again", path.name, error)
            return None

    def save(self, key: str, value: Any) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
            with os.fdopen(handle, "wb") as stream:
                pickle.dump(value, stream, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, self.folder / f"{key}.pickle")
            self._prune()
        except OSError as error:
            logger.warning("could not keep a fitted index in %s (%s)", self.folder, error)

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[FITS_KEPT:]:
            old.unlink(missing_ok=True)
