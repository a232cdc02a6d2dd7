"""DIET and a logistic regression on the same sparse features vote on the intent.

DIET (a small transformer over word and character n-gram counts) and a linear model over the
same counts make different mistakes: in 5-fold cross-validation a plain TF-IDF + logistic
regression came within 0.006 of DIET alone. This component trains Rasa's own
``LogisticRegressionClassifier`` on the featurizers' sentence vectors and, at prediction time,
averages its probabilities with DIET's ranking (``weight`` is the regression's share). The
FallbackClassifier after it judges the averaged confidence. ``C`` is the regression's inverse
regularisation strength (Rasa's class leaves scikit-learn's 1.0 and does not expose it).

Messages without sentence features (an empty message) keep DIET's answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from rasa.utils.tensorflow.constants import RANKING_LENGTH


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class IntentVote(LogisticRegressionClassifier):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            **LogisticRegressionClassifier.get_default_config(),
            "weight": 0.5,
            "max_iter": 1000,
            "C": 1.0,
        }

    def __init__(self, config: Dict[Text, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.clf.set_params(C=float(self.config["C"]))

    def process(self, messages: List[Message]) -> List[Message]:
        if not hasattr(self.clf, "classes_"):  # not trained (no intent examples)
            return messages
        weight = float(self.config["weight"])
        for message in messages:
            if (
                message.get_sparse_features(attribute=TEXT)[1] is None
                and message.get_dense_features(attribute=TEXT)[1] is None
            ):
                continue
            features = self._create_X([message])  # Rasa's: sentence features, sparse + dense
            if features.shape[1] != self.clf.n_features_in_:
                continue
            probabilities = self.clf.predict_proba(features)[0]
            earlier = message.get(INTENT_RANKING_KEY) or []
            share = weight if earlier else 1.0
            votes: Dict[Text, float] = {}
            for entry in earlier:
                votes[entry["name"]] = (1.0 - share) * float(entry["confidence"])
            for name, probability in zip(self.clf.classes_, probabilities, strict=True):
                votes[str(name)] = votes.get(str(name), 0.0) + share * float(probability)
            ranking = [
                {"name": name, "confidence": confidence}
                for name, confidence in sorted(votes.items(), key=lambda item: -item[1])
            ]
            if self.config[RANKING_LENGTH] > 0:
                ranking = ranking[: self.config[RANKING_LENGTH]]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        # Rasa's version predicts over the training examples' own intents; leave them as they are.
        return training_data
