"""Speed-ups of Rasa's dialogue prediction: the prediction graph, debug copies.

Found with py-spy on the Rasa server under ``make bench`` load (2026-11-24):

- Rasa prunes the prediction graph to the requested targets on every run (2-4 per message).
- Rasa hands every graph run to dask's scheduler, which orders, wraps and tracks ~10 tiny tasks
  anew each time: 0.3-0.8 ms per run, 1.8 ms per message beside 15 ms of work (in-process
  timing of the bench's messages, 2026-12-01). The runs are plain calls in a fixed order.
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
from rasa.engine.exceptions import GraphRunError
from rasa.engine.graph import GraphNode, GraphSchema
from rasa.engine.runner.dask import DaskGraphRunner

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


_original_graph_run = DaskGraphRunner.run
#: One node of a run: its name, the node, and the names of the nodes whose outputs it takes.
Step = Tuple[Text, GraphNode, Tuple[Text, ...]]


def _plan(runner: DaskGraphRunner, targets: Tuple[Text, ...]) -> List[Step]:
    """The nodes the targets need, each after the nodes it takes outputs from."""
    schema = runner._graph_schema.minimal_graph_schema(list(targets))
    order: List[Step] = []
    placed: set = set()
    for target in targets:
        stack: List[Tuple[Text, bool]] = [(target, False)]
        while stack:
            name, ready = stack.pop()
            if name in placed or name not in schema.nodes:
                continue
            needs = tuple(schema.nodes[name].needs.values())
            if ready:
                placed.add(name)
                order.append((name, runner._instantiated_nodes[name], needs))
            else:
                stack.append((name, True))
                stack.extend((need, False) for need in reversed(needs) if need not in placed)
    return order


def _graph_run(
    self: DaskGraphRunner,
    inputs: Optional[Dict[Text, Any]] = None,
    targets: Optional[List[Text]] = None,
) -> Dict[Text, Any]:
    """``DaskGraphRunner.run`` as plain calls: the same nodes, each once, each after the nodes
    it needs, with the same arguments as under dask (a node's output is ``(name, value)``; an
    input is ``(input name, value)``; a need nobody provides is passed as its name, which the
    node reports). The order of a loaded model's run never changes, so it is kept per targets.
    """
    run_targets = tuple(targets if targets else self._graph_schema.target_names)
    plans: Dict[Tuple[Text, ...], List[Step]] = self.__dict__.setdefault("_posbot_plans", {})
    plan = plans.get(run_targets)
    if plan is None:
        plan = plans[run_targets] = _plan(self, run_targets)
    results: Dict[Text, Any] = {}
    for name, value in (inputs or {}).items():
        if isinstance(value, str) and (value in results or any(value == step[0] for step in plan)):
            raise GraphRunError(
                f"Input value '{value}' clashes with a node name. Make sure that none of the "
                f"input names passed to the `run` method are the same as node names in the "
                f"graph schema."
            )
        results[name] = (name, value)
    try:
        for name, node, needs in plan:
            results[name] = node(*[results.get(need, need) for need in needs])
    except RuntimeError as error:
        raise GraphRunError("Error running runner.") from error
    return dict(results[target] for target in run_targets)


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
