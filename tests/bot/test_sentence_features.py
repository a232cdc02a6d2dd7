"""SentenceEncoderFeaturizer gives every message the same features, blank ones included."""

from __future__ import annotations

import numpy as np
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.sentence_features import SentenceEncoderFeaturizer
from kb.encoder import get_encoder


def test_a_blank_message_gets_a_zero_vector_like_the_others_get_theirs() -> None:
    featurizer = SentenceEncoderFeaturizer(
        "e5", {**SentenceEncoderFeaturizer.get_default_config(), "scale": 1.0}
    )
    question, blank = Message(data={TEXT: "打印机不出纸"}), Message(data={TEXT: "   "})
    featurizer.process([question, blank])
    dim = get_encoder().dim
    shapes = []
    for message in (question, blank):
        _, sentence = message.get_dense_features(TEXT)
        assert sentence is not None
        shapes.append(sentence.features.shape)
    assert shapes == [(1, dim), (1, dim)]
    assert np.linalg.norm(question.get_dense_features(TEXT)[1].features) > 0.5
    assert not blank.get_dense_features(TEXT)[1].features.any()
