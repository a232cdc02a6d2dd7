"""TracedDIETClassifier (bot/nlu/diet.py) answers what Rasa's DIET answers, without tf.function.

A small DIET is trained here on a few messages, so that these run without the trained model;
the last test parses the dev set with the trained model (models/posbot.tar.gz).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.classifiers.diet_classifier import DIET
from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import CountVectorsFeaturizer
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from rasa.utils.tensorflow.models import RasaModel

from bot.nlu.diet import TracedDIET, TracedDIETClassifier
from bot.settings import PROJECT_ROOT

EXAMPLES = {
    "greet": ["hello", "hi there", "good morning", "hello hello"],
    "printer": ["printer gives no paper", "the printer is jammed", "paper stuck in printer"],
    "fees": ["how much is the fee", "fee for ten thousand", "what rate do you charge"],
}
ASKED = ["hello printer", "fee please", "morning", "jammed paper fee", "unknown words only"]


def _training_data() -> TrainingData:
    return TrainingData(
        [Message(data={"text": text, "intent": i}) for i, texts in EXAMPLES.items() for text in texts]
    )


def _context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test")


def _diet_config() -> Dict[str, Any]:
    return {
        **TracedDIETClassifier.get_default_config(),
        "epochs": 20,
        "entity_recognition": False,
        "constrain_similarities": True,
        "model_confidence": "softmax",
        "random_seed": 42,
    }


@pytest.fixture(autouse=True)
def patches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSBOT_RASA_PATCHES", raising=False)


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tuple[WhitespaceTokenizer, CountVectorsFeaturizer, LocalModelStorage]]:
    """A tokenizer and count vectors trained on EXAMPLES, and a TracedDIETClassifier trained
    on them into the storage (resource "diet")."""
    storage = LocalModelStorage(tmp_path_factory.mktemp("diet"))
    tokenizer = WhitespaceTokenizer(WhitespaceTokenizer.get_default_config())
    counts = CountVectorsFeaturizer.create(
        CountVectorsFeaturizer.get_default_config(), storage, Resource("counts"), _context()
    )
    data = _training_data()
    tokenizer.process_training_data(data)
    counts.train(data)
    counts.process_training_data(data)
    TracedDIETClassifier.create(_diet_config(), storage, Resource("diet"), _context()).train(data)
    yield tokenizer, counts, storage


def _parse(pipeline: Any, classifier: TracedDIETClassifier) -> List[Dict[str, Any]]:
    tokenizer, counts, _ = pipeline
    messages = [Message(data={"text": text}) for text in ASKED]
    tokenizer.process(messages)
    counts.process(messages)
    classifier.process(messages)
    return [{"intent": m.get("intent"), "ranking": m.get("intent_ranking")} for m in messages]


@pytest.fixture
def rasas_calls(monkeypatch: pytest.MonkeyPatch) -> List[RasaModel]:
    """The models whose prediction went through Rasa's own ``_rasa_predict``.

    Counted on DIET, between TracedDIET and RasaModel: the guard reads RasaModel's own."""
    calls: List[RasaModel] = []

    def counting(model: RasaModel, batch: Any) -> Any:
        calls.append(model)
        return RasaModel._rasa_predict(model, batch)

    monkeypatch.setattr(DIET, "_rasa_predict", counting)
    return calls


def _load(pipeline: Any) -> TracedDIETClassifier:
    return TracedDIETClassifier.load(_diet_config(), pipeline[2], Resource("diet"), _context())


def test_a_loaded_model_answers_as_rasas_prediction_without_it(pipeline, rasas_calls, monkeypatch) -> None:
    monkeypatch.setenv("POSBOT_RASA_PATCHES", "0")
    rasas_model = _load(pipeline)  # Rasa predicts once when it loads a model (tracing the graph)
    assert isinstance(rasas_model.model, TracedDIET) and len(rasas_calls) == 1
    rasas_calls.clear()
    rasas = _parse(pipeline, rasas_model)
    assert len(rasas_calls) == len(ASKED)  # patches off: every message through Rasa's code
    monkeypatch.delenv("POSBOT_RASA_PATCHES")
    ours_model = _load(pipeline)
    rasas_calls.clear()
    ours = [_parse(pipeline, ours_model) for _ in range(2)]
    assert rasas_calls == []  # the traced graph answered every message itself
    assert ours[0] == ours[1] == rasas
    assert len({answer["intent"]["name"] for answer in rasas}) > 1  # not one answer for all


def test_a_freshly_trained_model_answers_as_a_loaded_one(pipeline, tmp_path: Path) -> None:
    """As in `rasa train` then `rasa test`: the trained classifier predicts directly."""
    tokenizer, counts, _ = pipeline
    data = _training_data()
    tokenizer.process_training_data(data)
    counts.process_training_data(data)
    storage = LocalModelStorage(tmp_path)
    fresh = TracedDIETClassifier.create(_diet_config(), storage, Resource("diet"), _context())
    fresh.train(data)
    loaded = TracedDIETClassifier.load(_diet_config(), storage, Resource("diet"), _context())
    assert isinstance(fresh.model, TracedDIET) and isinstance(loaded.model, TracedDIET)
    assert _parse(pipeline, fresh) == _parse(pipeline, loaded) == _parse(pipeline, fresh)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_trained_diet_model_answers_the_same_without_tf_function_dispatch(rasas_calls) -> None:
    """Every third dev-set message parsed through tf.function (Rasa) and through the traced graph.

    Needs models/posbot.tar.gz trained with bot/config.yml's TracedDIETClassifier."""
    from rasa.core.agent import Agent

    from ops.launcher import DEFAULT_MODEL

    texts = re.findall(
        r"^    - (.+)$", (PROJECT_ROOT / "tests" / "nlu" / "dev.yml").read_text(encoding="utf-8"), flags=re.M
    )[::3]
    agent = Agent.load(str(DEFAULT_MODEL))
    nodes = agent.processor.graph_runner._instantiated_nodes.values()
    models = [node._component.model for node in nodes if isinstance(node._component, TracedDIETClassifier)]
    assert len(models) == 1, "models/posbot.tar.gz was trained without bot.nlu.diet.TracedDIETClassifier"
    model = models[0]
    assert isinstance(model, TracedDIET)
    model.__dict__["_posbot_speedups"] = False
    loading = len(rasas_calls)  # Rasa traces the graph with one prediction when it loads DIET
    try:
        rasas = [await agent.parse_message(text) for text in texts]
        through_rasa = len(rasas_calls) - loading
        model.__dict__["_posbot_speedups"] = True
        ours = [await agent.parse_message(text) for text in texts]
    finally:
        model.__dict__.pop("_posbot_speedups", None)
    assert len(texts) > 40 and through_rasa == len(texts)
    assert len(rasas_calls) - loading == through_rasa  # the traced graph answered every message itself
    for text, mine, theirs in zip(texts, ours, rasas, strict=True):
        assert mine["intent"] == theirs["intent"], text
        assert mine["intent_ranking"] == theirs["intent_ranking"], text
        assert mine["entities"] == theirs["entities"], text
