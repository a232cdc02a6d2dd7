"""Speed-up of DIET's prediction (a fifth of the NLU time; py-spy under make bench, 2026-11-24).

DIET's prediction skips tf.function's per-call signature handling and calls the one traced graph
with the inputs converted the same way. Registered in bot/speedups/registry.py; compared with
Rasa's own code on the dev set and the trained model in tests/bot/test_perf.py.
"""

from __future__ import annotations

from typing import Any, Dict, Text, Tuple

from rasa.utils.tensorflow import models as tf_models_module
from rasa.utils.tensorflow.models import RasaModel

_original_rasa_predict = RasaModel._rasa_predict


def _rasa_predict(self: RasaModel, batch_in: Tuple[Any, ...]) -> Dict[Text, Any]:
    """DIET's prediction without tf.function's per-call argument handling.

    The prediction function is traced once with a fixed input signature, so there is exactly
    one graph. Calling it through ``tf.function`` re-derives the signature from the ~30 input
    arrays on every call (a fifth of DIET's time per message); this converts them the way
    tf.function does (``dtype_hint``, then the same compatibility check) and calls that graph.
    Anything unexpected (eager mode, no graph yet, another input structure) takes Rasa's path.
    """
    function = self._tf_predict_step
    if self._run_eagerly or function is None or not self.prepared_for_prediction:
        return _original_rasa_predict(self, batch_in)
    self._training = False
    traced = self.__dict__.get("_posbot_traced")
    if traced is None or traced[0] is not function:
        # Keras tracks attributes set on a model; this one is ours, not a layer.
        traced = self.__dict__["_posbot_traced"] = (
            function,
            function.get_concrete_function(),
            tuple(tf_models_module.tf.nest.flatten(function.input_signature)),
        )
    _, concrete, specs = traced
    flat = tf_models_module.tf.nest.flatten(batch_in)
    if len(flat) != len(specs):
        return _original_rasa_predict(self, batch_in)
    tensors = [
        tf_models_module.tf.convert_to_tensor(value, dtype_hint=spec.dtype)
        for value, spec in zip(flat, specs, strict=True)
    ]
    if not all(spec.is_compatible_with(tensor) for spec, tensor in zip(specs, tensors, strict=True)):
        return _original_rasa_predict(self, batch_in)
    outputs = tf_models_module.tf_utils.sync_to_numpy_or_python_type(
        concrete._call_flat(tensors, captured_inputs=concrete.captured_inputs)
    )
    if tf_models_module.DIAGNOSTIC_DATA in outputs:
        outputs[tf_models_module.DIAGNOSTIC_DATA] = self._empty_lists_to_none_in_dict(
            outputs[tf_models_module.DIAGNOSTIC_DATA]
        )
    return outputs
