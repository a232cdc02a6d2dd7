"""Speed-ups of Rasa's dialogue prediction: the prediction graph, debug copies.

Found with py-spy on the Rasa server under ``make bench`` load (2026-11-24):

- Rasa prunes the prediction graph to the requested targets on every run (2-4 per message).
- Rasa deep-copies events, slots and states for debug log calls even when debug logging is off.

The RulePolicy's speed-ups (the rule window, kept rule sets and reversed rule states) are the
class bot.policies.WindowedRulePolicy named in bot/config.yml, no longer patches.

Registered in bot/speedups/registry.py; compared with Rasa's own code in tests/bot/test_perf.py.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Text, Tuple

from rasa.core import processor as processor_module
from rasa.core.actions import forms as forms_module
from rasa.core.policies import memoization as memoization_module
from rasa.core.policies import rule_policy as rule_policy_module
from rasa.engine.graph import GraphSchema

_original_minimal_graph_schema = GraphSchema.minimal_graph_schema
_minimal_schemas: Dict[Tuple[int, Tuple[Text, ...]], Tuple[GraphSchema, GraphSchema]] = {}


def _minimal_graph_schema(self: GraphSchema, targets: Optional[List[Text]] = None) -> GraphSchema:
    """Rasa prunes the prediction graph to the requested targets on every run (2-4 per
    message); the graph of a loaded model does not change, so each pruning is kept."""
    key = (id(self), tuple(targets or ()))
    kept = _minimal_schemas.get(key)
    if kept is None or kept[0] is not self:
        kept = (self, _original_minimal_graph_schema(self, targets))
        _minimal_schemas[key] = kept
    return kept[1]


class _LogOnlyCopy:
    """The ``copy`` module for Rasa modules that deep-copy only what they pass to debug logs.

    Rasa copies the events, slots and states of every turn for ``structlogger.debug`` calls,
    even when debug logging is off and the copies are dropped unread. Below debug level the
    copy is skipped; with ``--debug`` it is made as before. tests/bot/test_perf.py checks that
    every use of ``copy`` in these modules is an argument of a debug call.
    """

    _rasa_logger = logging.getLogger("rasa")

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if self._rasa_logger.isEnabledFor(logging.DEBUG):
            return copy.deepcopy(value, memo)
        return value

    def __getattr__(self, name: Text) -> Any:
        return getattr(copy, name)


LOG_ONLY_COPY_MODULES = [processor_module, rule_policy_module, memoization_module, forms_module]
