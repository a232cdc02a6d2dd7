"""What the Rasa server remembers between turns: bounded maps and event-list prefixes.

Used by the tracker store (bot/stores.py: sessions it wrote) and the dialogue states
(bot/speedups/states.py: folds per conversation). Both hand out the same event objects turn
after turn, so "is this still the conversation I remember" is an identity check on the events.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Sequence


class LRU(OrderedDict):
    """A map that keeps the ``limit`` most recently used entries (``get`` and ``put`` use one)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = max(0, int(limit))

    def get(self, key: Hashable, default: Any = None) -> Any:
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key: Hashable, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def shared_prefix(old: Sequence[Any], new: Sequence[Any]) -> int:
    """How many leading items ``old`` and ``new`` have in common, object for object."""
    n = 0
    for mine, theirs in zip(old, new, strict=False):
        if mine is not theirs:
            break
        n += 1
    return n


def continues(old: Sequence[Any], new: Sequence[Any]) -> bool:
    """True when ``new`` starts with every object of ``old``."""
    return len(new) >= len(old) and shared_prefix(old, new) == len(old)
