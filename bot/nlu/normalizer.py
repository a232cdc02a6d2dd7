"""Rasa graph component that normalises the message text first in the pipeline."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.normalize import MAX_CHARS, normalize


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER], is_trainable=False)
class TextNormalizer(GraphComponent):
    """繁體 → 简体, full-width → half-width, emoji/control → space; same length, so offsets hold.

    Training examples go through the same function, so the model never sees a form of a word
    at run time that it did not see in training.
    """

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"max_chars": MAX_CHARS}

    def __init__(self, config: Dict[str, Any]) -> None:
        self.max_chars = int(config.get("max_chars", MAX_CHARS))

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> TextNormalizer:
        normalize("預熱")  # load OpenCC's tables now, not on the first merchant's message
        return cls(config)

    def _normalize(self, message: Message) -> None:
        text = message.get(TEXT)
        if isinstance(text, str):
            message.set(TEXT, normalize(text, self.max_chars))

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        for example in training_data.training_examples:
            self._normalize(example)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._normalize(message)
        return messages


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class BlankMessageGuard(GraphComponent):
    """A message with no letter or digit (only emoji, spaces, control characters) has no intent.

    DIET would still pick one (often `affirm`), and the bot would answer "好的" to "😀😀😀".
    Marking it ``nlu_fallback`` with an empty ranking lets the clarification action ask the
    merchant to describe the problem instead.
    """

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "BlankMessageGuard":
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT)
            if isinstance(text, str) and not any(c.isalnum() for c in text):
                message.set(
                    INTENT,
                    {INTENT_NAME_KEY: "nlu_fallback", PREDICTED_CONFIDENCE_KEY: 1.0},
                    add_to_output=True,
                )
                message.set(INTENT_RANKING_KEY, [], add_to_output=True)
        return messages
