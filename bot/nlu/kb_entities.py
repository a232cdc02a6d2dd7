"""Rule-based entities from the knowledge base: brand, component, card_type, error_code, amount, rate.

A blank spaCy ``zh`` pipeline segmented by jieba runs an EntityRuler whose patterns are generated
from kb/content at training time and persisted into the model, so a model keeps answering with
the vocabulary it was trained with even if the content changes afterwards. Canonical values come
from the KB aliases (拉卡拉 for "Lakala"), which is why no EntitySynonymMapper is needed for them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import jieba
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.jieba_tokenizer import files_digest
from bot.nlu.numbers import find_numbers
from kb.loader import format_problems, load_content
from kb.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

PATTERNS_FILE = "patterns.json"
WORDS_FILE = "words.json"
_CODE = re.compile(r"[0-9A-Za-z]{2}")
_BARE_CODE = re.compile(r"^\s*([0-9]{2}|[A-Za-z][0-9])\s*[?？!！.。]*\s*$")


def bare_code(text: str) -> Optional[str]:
    """The code, upper case, when ``text`` is nothing but a response code ("51", "a0？")."""
    found = _BARE_CODE.match(text)
    return found.group(1).upper() if found else None


def kb_vocabulary(content_dir: Path) -> Vocabulary:
    """The KB's vocabulary for a training run; a KB with problems stops training with them."""
    content = load_content(content_dir)
    if content.problems:
        raise RasaException(
            "kb/content has problems, fix them (posbot kb lint) before training:\n"
            + format_problems(content.problems)
        )
    return Vocabulary.from_content(content)


def build_nlp(patterns: List[Dict[str, Any]], words: List[str]) -> Any:
    """A blank Chinese spaCy pipeline, jieba-segmented, with the KB EntityRuler."""
    import spacy
    from spacy.pipeline import EntityRuler

    for word in words:
        jieba.add_word(word, freq=50000)
    nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True})
    assert isinstance(ruler, EntityRuler)
    ruler.add_patterns(patterns)
    return nlp


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=True)
class KBEntityExtractor(GraphComponent, EntityExtractorMixin):
    """Finds the KB's entities with canonical values; numbers for fee questions by rule."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"content_dir": "kb/content"}

    @staticmethod
    def required_packages() -> List[str]:
        return ["spacy", "jieba"]

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        """The KB files are read at training time: a change to them must retrain, not restore.

        Rasa also calls this with the config of the node that hands out a cached result
        (``{"output": ...}``, no ``content_dir``); that node has nothing to digest.
        """
        content_dir = config.get("content_dir")
        return files_digest(Path(content_dir), "*.yml") if content_dir else None

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        patterns: Optional[List[Dict[str, Any]]] = None,
        words: Optional[List[str]] = None,
    ) -> None:
        self._config = config
        self._model_storage = model_storage
        self._resource = resource
        self.patterns = patterns or []
        self.words = words or []
        self._nlp = build_nlp(self.patterns, self.words) if self.patterns else None

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> KBEntityExtractor:
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        vocabulary = kb_vocabulary(Path(self._config["content_dir"]))
        self.patterns = vocabulary.entity_patterns()
        self.words = vocabulary.words()
        self._nlp = build_nlp(self.patterns, self.words)
        with self._model_storage.write_to(self._resource) as directory:
            (directory / PATTERNS_FILE).write_text(
                json.dumps(self.patterns, ensure_ascii=False), encoding="utf-8"
            )
            (directory / WORDS_FILE).write_text(json.dumps(self.words, ensure_ascii=False), encoding="utf-8")
        return self._resource

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> KBEntityExtractor:
        try:
            with model_storage.read_from(resource) as directory:
                patterns = json.loads((directory / PATTERNS_FILE).read_text(encoding="utf-8"))
                words = json.loads((directory / WORDS_FILE).read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError):
            logger.warning("KBEntityExtractor has no persisted patterns; it finds only numbers")
            return cls(config, model_storage, resource)
        extractor = cls(config, model_storage, resource, patterns, words)
        extractor.extract("拉卡拉POS机刷卡显示A0")  # warm jieba and spaCy before the first user
        return extractor

    def extract(self, text: str) -> List[Dict[str, Any]]:
        """Entities in ``text`` as Rasa entity dicts (start, end, value = canonical)."""
        entities: List[Dict[str, Any]] = []
        if self._nlp is not None and text.strip():
            for span in self._nlp(text).ents:
                entity = self._entity(span.label_, span.start_char, span.text, span.ent_id_)
                if entity:
                    entities.append(entity)
        bare = _BARE_CODE.match(text)
        if bare and not any(e["entity"] == "error_code" for e in entities):
            entities.append(
                {
                    "entity": "error_code",
                    "start": bare.start(1),
                    "end": bare.end(1),
                    "value": bare.group(1).upper(),
                }
            )
        taken = [(e["start"], e["end"]) for e in entities]
        for found in find_numbers(text):
            if not any(s < found.end and found.start < e for s, e in taken):
                entities.append(
                    {"entity": found.entity, "start": found.start, "end": found.end, "value": found.value}
                )
        return sorted(entities, key=lambda e: e["start"])

    @staticmethod
    def _entity(label: str, start: int, text: str, canonical: str) -> Optional[Dict[str, Any]]:
        if label == "error_code":
            # a code followed by its KB name carries the code as id ("51余额不足" → 51); after a
            # trigger ("显示A0") the code is the span's last two letters or digits
            at = text.upper().find(canonical.upper()) if canonical else -1
            if at >= 0:
                return {
                    "entity": label,
                    "start": start + at,
                    "end": start + at + len(canonical),
                    "value": canonical.upper(),
                }
            if canonical:  # a screen text that stands for a code ("余额不足" → 51): the whole span
                return {"entity": label, "start": start, "end": start + len(text), "value": canonical.upper()}
            codes = list(_CODE.finditer(text))
            if not codes:
                return None
            code = codes[-1]
            return {
                "entity": label,
                "start": start + code.start(),
                "end": start + code.end(),
                "value": code.group(0).upper(),
            }
        return {"entity": label, "start": start, "end": start + len(text), "value": canonical or text}

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT)
            if not isinstance(text, str):
                continue
            found = self.add_extractor_name(self.extract(text))
            message.set(ENTITIES, message.get(ENTITIES, []) + found, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data
