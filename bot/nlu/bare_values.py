"""A message that is only a value asks about it: a response code, a fee rate or an amount.

Rasa's CountVectorsFeaturizer turns every number into the same ``__NUMBER__`` token, so to the
classifiers "51" looks exactly like "88" (拜拜 in chat slang) and "10000元" like "88了": both were
answered with a goodbye, even when the merchant was answering the fee calculator's "请告诉我这笔
交易的金额". This component runs after the classifiers and decides such messages by their
entities (KBEntityExtractor):

- the whole message is a code from kb/content/error_codes.yml (persisted into the model at
  training time, like the KB entities) → ``error_code``; numbers the KB does not list as codes
  keep the classifiers' answer, so 88 and 886 still say goodbye;
- the whole message is rates, amounts and card types ("0.6%", "千分之六", "10000元", "1万",
  "0.6", "10000", "信用卡", "信用卡 2万") → ``fees``.
- the whole message is a number of one or two digits that is no code ("2", "1."): a reply to a
  numbered menu that is gone (WeChat maps numbers to the options only while they are pending) →
  ``nlu_fallback``, and the bot says it has no options open (it was a goodbye, as 88 is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.jieba_tokenizer import files_digest
from bot.nlu.kb_entities import bare_code, kb_vocabulary
from bot.nlu.numbers import stray_number

CODES_FILE = "codes.json"
FALLBACK = "nlu_fallback"
# A card type counts too: "信用卡", "那借记卡呢" answer the calculator's "借记卡还是信用卡" (with
# more KB questions naming card types, retrieval was sure enough of a card topic to take them).
FEE_VALUES = {"amount", "rate", "card_type"}
# what may stand around a bare amount, rate or card type: 10000元, 一万块钱, 0.6%, 那借记卡呢。
FILLER = set(" \t,，.。、?？!！~～元块钱圆那呢的")


def only_fee_values(text: str, entities: List[Dict[str, Any]]) -> bool:
    """``text`` is nothing but amounts, rates and card types (and units or punctuation)."""
    if not entities or any(e.get("entity") not in FEE_VALUES for e in entities):
        return False
    rest = list(text)
    for entity in entities:
        rest[entity["start"] : entity["end"]] = [" "] * (entity["end"] - entity["start"])
    return all(char in FILLER for char in rest)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class BareValueIntent(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"content_dir": "kb/content"}

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        content_dir = config.get("content_dir")
        return files_digest(Path(content_dir), "*.yml") if content_dir else None

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        codes: Optional[List[str]] = None,
    ) -> None:
        self._config = config
        self._model_storage = model_storage
        self._resource = resource
        self.codes = {code.upper() for code in codes or []}

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> BareValueIntent:
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        codes = sorted(kb_vocabulary(Path(self._config["content_dir"])).error_codes)
        self.codes = set(codes)
        with self._model_storage.write_to(self._resource) as directory:
            (directory / CODES_FILE).write_text(json.dumps(codes), encoding="utf-8")
        return self._resource

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> BareValueIntent:
        try:
            with model_storage.read_from(resource) as directory:
                codes = json.loads((directory / CODES_FILE).read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError):
            codes = []
        return cls(config, model_storage, resource, codes)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT)
            if not isinstance(text, str):
                continue
            if bare_code(text) in self.codes:
                intent = "error_code"
            elif only_fee_values(text, message.get(ENTITIES) or []):
                intent = "fees"
            elif stray_number(text, self.codes):
                intent = FALLBACK  # the bot asks what the number was for (actions/fallback.py)
            else:
                continue
            ranking = [entry for entry in message.get(INTENT_RANKING_KEY) or [] if entry["name"] != intent]
            top = {"name": intent, "confidence": 1.0}
            message.set(INTENT, top, add_to_output=True)
            message.set(
                INTENT_RANKING_KEY,
                [top] + [{**entry, "confidence": 0.0} for entry in ranking],
                add_to_output=True,
            )
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data
