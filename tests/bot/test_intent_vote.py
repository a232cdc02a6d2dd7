"""DIET's ranking and the logistic regression's probabilities are averaged (bot/nlu/intent_vote.py)."""

from __future__ import annotations

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.features import Features
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from scipy.sparse import coo_matrix, csr_matrix
from sklearn.linear_model import LogisticRegression

from bot.nlu.intent_vote import IntentVote

# Three "messages" as count vectors: word 0 means fees, word 1 means a printer fault.
X = csr_matrix(np.array([[3, 0, 1], [0, 3, 1], [2, 0, 0], [0, 2, 0]], dtype=float))
Y = ["fees", "fault_hardware", "fees", "fault_hardware"]


@pytest.fixture()
def vote(tmp_path) -> IntentVote:
    component = IntentVote.create(
        {**IntentVote.get_default_config(), "weight": 0.5},
        LocalModelStorage(tmp_path),
        Resource("vote"),
        ExecutionContext(GraphSchema({}), "test"),
    )
    component.clf = LogisticRegression(max_iter=1000).fit(X, Y)
    return component


def message(row: list[float], ranking: list[tuple[str, float]]) -> Message:
    msg = Message(data={TEXT: "刷卡手续费"})
    if row:
        msg.add_features(
            Features(
                csr_matrix(np.array([row], dtype=float)),
                FEATURE_TYPE_SENTENCE,
                TEXT,
                "CountVectorsFeaturizer",
            )
        )
    if ranking:
        msg.set(INTENT_RANKING_KEY, [{"name": n, "confidence": c} for n, c in ranking])
        msg.set(INTENT, {"name": ranking[0][0], "confidence": ranking[0][1]})
    return msg


def test_the_intent_is_the_average_of_both_opinions(vote) -> None:
    diet = [("fault_hardware", 0.6), ("fees", 0.3), ("greet", 0.1)]
    msg = vote.process([message([3, 0, 1], diet)])[0]
    regression = dict(zip(vote.clf.classes_, vote.clf.predict_proba(X[0])[0], strict=True))
    expected = {
        "fault_hardware": 0.5 * 0.6 + 0.5 * regression["fault_hardware"],
        "fees": 0.5 * 0.3 + 0.5 * regression["fees"],
        "greet": 0.5 * 0.1,
    }
    ranking = msg.get(INTENT_RANKING_KEY)
    assert [r["name"] for r in ranking] == sorted(expected, key=lambda n: -expected[n])
    for entry in ranking:
        assert entry["confidence"] == pytest.approx(expected[entry["name"]])
    assert msg.get(INTENT) == ranking[0]
    assert sum(r["confidence"] for r in ranking) == pytest.approx(1.0)
    assert ranking[0]["name"] == "fees"  # the regression is sure enough to outvote DIET here


def test_without_features_or_training_diets_answer_stands(vote, tmp_path) -> None:
    diet = [("greet", 0.9), ("thanks", 0.1)]
    blank = vote.process([message([], diet)])[0]
    assert blank.get(INTENT) == {"name": "greet", "confidence": 0.9}
    untrained = IntentVote.create(
        IntentVote.get_default_config(),
        LocalModelStorage(tmp_path),
        Resource("untrained"),
        ExecutionContext(GraphSchema({}), "t"),
    )
    assert untrained.process([message([3, 0, 1], diet)])[0].get(INTENT)["name"] == "greet"


def test_training_examples_keep_their_labels(vote) -> None:
    example = Message(data={TEXT: "打印机不出纸", INTENT: "fault_hardware"})
    data = TrainingData([example])
    assert vote.process_training_data(data).training_examples[0].get(INTENT) == "fault_hardware"


def test_the_regression_is_trained_with_the_configured_strength(tmp_path) -> None:
    def trained(c: float) -> IntentVote:
        component = IntentVote.create(
            {**IntentVote.get_default_config(), "C": c},
            LocalModelStorage(tmp_path),
            Resource(f"vote-{c}"),
            ExecutionContext(GraphSchema({}), "test"),
        )
        component.clf.fit(X, Y)
        return component

    weak, strong = trained(0.1), trained(10.0)
    assert weak.clf.C == 0.1 and strong.clf.C == 10.0
    # less regularisation, sharper probabilities for the same message
    assert strong.clf.predict_proba(X[0]).max() > weak.clf.predict_proba(X[0]).max()


def _features(msg: Message, matrix: object, origin: str) -> None:
    msg.add_features(Features(matrix, FEATURE_TYPE_SENTENCE, TEXT, origin))


def test_the_fast_scores_are_scikit_learns_probabilities(tmp_path) -> None:
    """Two count-vector blocks and a sentence vector, four intents: the sum of weights at the
    message's columns gives exactly what Rasa's stacked row and predict_proba give."""
    rng = np.random.default_rng(7)
    counts = (rng.random((40, 30)) < 0.15) * rng.integers(1, 4, (40, 30))
    dense = rng.normal(size=(40, 8))
    intents = ["fees", "fault_hardware", "greet", "error_code"] * 10
    component = IntentVote.create(
        {**IntentVote.get_default_config(), "C": 3.0},
        LocalModelStorage(tmp_path),
        Resource("vote-fast"),
        ExecutionContext(GraphSchema({}), "test"),
    )
    component.clf.fit(np.hstack([counts, dense]), intents)
    for row in range(12):
        msg = Message(data={TEXT: "刷卡手续费"})
        _features(msg, coo_matrix(counts[row : row + 1, :18].astype(float)), "CountVectorsFeaturizer")
        _features(msg, coo_matrix(counts[row : row + 1, 18:].astype(float)), "CountVectorsFeaturizer")
        _features(msg, dense[row : row + 1], "SentenceEncoderFeaturizer")
        expected = component.clf.predict_proba(component._create_X([msg]))[0]
        assert component.probabilities(msg) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        voted = component.process([msg])[0].get(INTENT)
        assert voted["name"] == component.clf.classes_[int(np.argmax(expected))]


def test_features_that_do_not_fit_the_model_leave_diets_answer(tmp_path) -> None:
    counts = np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 1, 2]]
    component = IntentVote.create(
        IntentVote.get_default_config(),
        LocalModelStorage(tmp_path),
        Resource("vote-width"),
        ExecutionContext(GraphSchema({}), "test"),
    )
    component.clf.fit(counts, ["a", "b", "c"] * 3)
    msg = message([], [("greet", 0.9), ("thanks", 0.1)])
    _features(msg, coo_matrix(np.ones((1, 9))), "CountVectorsFeaturizer")  # a model of another vocabulary
    assert component.probabilities(msg) is None
    assert component.process([msg])[0].get(INTENT) == {"name": "greet", "confidence": 0.9}
