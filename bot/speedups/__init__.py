"""posbot's changes to Rasa's own code (speed-ups and one fix), installed explicitly at start.

The table of every patch, its guard and ``install`` / ``revert`` are in
:mod:`bot.speedups.registry`; the patch code is split by concern (``actions``, ``tracker``,
``dialogue``, ``states``, ``admission``, ``outage``). Importing this package or any of its
modules changes nothing in Rasa: bot/serve.py calls :func:`install` before Rasa's command line
runs. The speed-ups that are classes named in bot/config.yml (bot/policies.py, bot/nlu/diet.py)
are guarded by :mod:`bot.speedups.overrides`.
"""

from __future__ import annotations

from typing import Any, List


def install(*args: Any, **kwargs: Any) -> List[str]:
    """``bot.speedups.registry.install`` (imported here only when called: it loads Rasa)."""
    from bot.speedups import registry

    return registry.install(*args, **kwargs)


def revert() -> None:
    from bot.speedups import registry

    registry.revert()
