"""posbot's DIETClassifier: Rasa's, whose model calls its one traced prediction graph directly.

Named in bot/config.yml instead of ``DIETClassifier`` (issue 18), so that training, ``rasa test``
and the server run the same class, not a patch installed by the server only.

DIET's prediction function is traced once with a fixed input signature, so there is exactly one
graph. Calling it through ``tf.function`` re-derives the signature from the ~30 input arrays on
every call: a fifth of the NLU time per message (py-spy under ``make bench``, 2026-11-24).
:class:`TracedDIET` converts the inputs the way tf.function does (``dtype_hint``, then the same
compatibility check) and calls that graph; anything unexpected takes Rasa's path.
``POSBOT_RASA_PATCHES=0``, another Rasa or a changed Rasa method (:data:`OVERRIDES`,
bot/speedups/overrides.py) run Rasa's own ``_rasa_predict``.

The trained weights are stored under the class name (``TracedDIETClassifier.tf_model``, as
Rasa names them), so a model trained with ``DIETClassifier`` must be retrained.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Text, Tuple, Type

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.classifiers.diet_classifier import DIET, DIETClassifier
from rasa.utils.tensorflow import models as tf_models_module
from rasa.utils.tensorflow.models import RasaModel

from bot.speedups.overrides import Override, speedups_on

logger = logging.getLogger(__name__)

#: Every Rasa method the classes below override, with the sha256 of the source reviewed.
OVERRIDES = [
    Override(
        RasaModel,
        "_rasa_predict",
        "7f745b0f9cb647c9df9e5b04b318a7b93709daf9460bad4373970c6cf9f04d8f",
        "tf.function's per-call signature handling: a fifth of the NLU time (py-spy, 2026-11-24)",
        "tests/bot/test_diet.py::test_the_trained_diet_model_answers_the_same_without_tf_function_dispatch",
    ),
]


class TracedDIET(DIET):
    """Rasa's DIET model; its prediction calls the traced graph without tf.function's dispatch."""

    def _rasa_predict(self, batch_in: Tuple[Any, ...]) -> Dict[Text, Any]:
        # Keras tracks attributes set on a model: what is kept here is ours, not a layer's, so
        # it lives in the instance's __dict__.
        speedups = self.__dict__.get("_posbot_speedups")
        if speedups is None:
            speedups = self.__dict__["_posbot_speedups"] = speedups_on(
                f"{__name__}.{type(self).__qualname__}", OVERRIDES
            )
        function = self._tf_predict_step
        if not speedups or self._run_eagerly or function is None or not self.prepared_for_prediction:
            return super()._rasa_predict(batch_in)
        self._training = False
        traced = self.__dict__.get("_posbot_traced")
        if traced is None or traced[0] is not function:
            traced = self.__dict__["_posbot_traced"] = (
                function,
                function.get_concrete_function(),
                tuple(tf_models_module.tf.nest.flatten(function.input_signature)),
            )
        _, concrete, specs = traced
        flat = tf_models_module.tf.nest.flatten(batch_in)
        if len(flat) != len(specs):
            return super()._rasa_predict(batch_in)
        tensors = [
            tf_models_module.tf.convert_to_tensor(value, dtype_hint=spec.dtype)
            for value, spec in zip(flat, specs, strict=True)
        ]
        if not all(spec.is_compatible_with(tensor) for spec, tensor in zip(specs, tensors, strict=True)):
            return super()._rasa_predict(batch_in)
        outputs: Dict[Text, Any] = tf_models_module.tf_utils.sync_to_numpy_or_python_type(
            concrete._call_flat(tensors, captured_inputs=concrete.captured_inputs)
        )
        if tf_models_module.DIAGNOSTIC_DATA in outputs:
            outputs[tf_models_module.DIAGNOSTIC_DATA] = self._empty_lists_to_none_in_dict(
                outputs[tf_models_module.DIAGNOSTIC_DATA]
            )
        return outputs


@DefaultV1Recipe.register(
    [
        DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER,
        DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR,
    ],
    is_trainable=True,
)
class TracedDIETClassifier(DIETClassifier):
    """Rasa's DIETClassifier with :class:`TracedDIET` as its model (same weights, same answers)."""

    @staticmethod
    def model_class() -> Type[RasaModel]:
        return TracedDIET
