"""The version guard of the speed-ups that are classes named in bot/config.yml.

bot/policies.py (``WindowedRulePolicy``) and bot/nlu/diet.py (``TracedDIETClassifier``) override
methods of Rasa classes instead of patching them at server start, so that ``rasa train``,
``rasa test``, ``rasa shell`` and the server run the same code. Each module lists, as
:class:`Override` rows, every Rasa method its class overrides with the sha256 of that method's
source as reviewed against Rasa :data:`REVIEWED_RASA` (the registry's rule, bot/speedups/registry.py).

:func:`speedups_on` decides once per class whether its speed-ups run: not with
``POSBOT_RASA_PATCHES=0``, and not when the Rasa version or an overridden method's source
differs from the reviewed one (a WARNING names it; the class then runs Rasa's own methods: the
bot works, only slower). tests/bot/test_speedups.py fails on such a difference, so that an
upgrade of Rasa is reviewed.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import rasa

from bot.settings import Settings

logger = logging.getLogger(__name__)

#: The Rasa release every override was reviewed against (the registry's).
REVIEWED_RASA = "3.6.21"


@dataclass(frozen=True)
class Override:
    """One Rasa method a posbot class overrides, and the source it was reviewed against."""

    owner: type  # Rasa's class, as Rasa's own code resolves the method on it
    attribute: str
    sha256: str  # of ``inspect.getsource`` of the method Rasa's class has (maybe inherited)
    why: str  # one line: the measurement behind it, or why the override exists
    test: str  # pytest node id of its comparison with Rasa's own method

    @property
    def target(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.attribute}"

    def source(self) -> str:
        return inspect.getsource(getattr(self.owner, self.attribute))


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def guard(
    target: str, exists: bool, source: Callable[[], str], sha256: str, what: str, rasa_version: str
) -> Optional[str]:
    """Why a reviewed replacement of ``target`` must not run on this Rasa, or None when it may:
    another Rasa release, a missing target, or a source whose sha256 is not the reviewed one
    (``what`` names that source in the message). The registry's patches use it too."""
    if rasa_version != REVIEWED_RASA:
        return f"reviewed against Rasa {REVIEWED_RASA}, this is Rasa {rasa_version}"
    if not exists:
        return f"{target} does not exist in this Rasa"
    try:
        found = sha256_of(source())
    except (OSError, TypeError) as error:
        return f"the source of {target} cannot be read ({error})"
    if found != sha256:
        return f"{what} changed (sha256 {found[:12]}…, reviewed {sha256[:12]}…)"
    return None


def problem(override: Override, rasa_version: str = rasa.__version__) -> Optional[str]:
    """Why ``override`` must not run on this Rasa, or None when it may."""
    exists = hasattr(override.owner, override.attribute)
    return guard(override.target, exists, override.source, override.sha256, "Rasa's method", rasa_version)


def patches_enabled() -> bool:
    """``POSBOT_RASA_PATCHES`` (only that variable is read: a bad value of another setting
    stops the server in bot/serve.py, not the loading of a model in ``rasa test``)."""
    variable = Settings.variable("rasa_patches")
    given = {variable: os.environ[variable]} if variable in os.environ else {}
    return Settings.from_env(given).rasa_patches


_checked: Dict[str, bool] = {}


def speedups_on(name: str, overrides: Sequence[Override]) -> bool:
    """Whether the class ``name`` may run its speed-ups (the switch, then the guard).

    The guard is checked once per class and process; a failure is logged once as a WARNING.
    """
    if not patches_enabled():
        return False
    allowed = _checked.get(name)
    if allowed is None:
        reasons = {o.target: why for o in overrides if (why := problem(o)) is not None}
        for target, why in reasons.items():
            logger.warning(
                "speed-ups of %s NOT used: %s: %s; Rasa's own code runs instead: the bot works, "
                "only slower (review it and update the sha256 in %s)",
                name,
                target,
                why,
                name.rsplit(".", 1)[0].replace(".", "/") + ".py",
            )
        allowed = _checked[name] = not reasons
    return allowed
