"""Every change the Rasa server makes to Rasa's own code, in one table, installed at start.

Each :class:`Patch` names its target (owner and attribute), why it exists (the measurement),
its switch, the test that compares it with the installed Rasa's own code, and the sha256 of the
source of the original it replaces (reviewed against Rasa :data:`REVIEWED_RASA`).

:func:`install` is called once, by bot/serve.py before Rasa's command line runs (``make run``,
the launcher, ``make cluster``, the live tests and ``make bench`` all start the server that
way); importing any module of this package changes nothing. The tracker store installs the
two outage entries itself when it is built (:func:`install_fixes`), since it depends on them.
Before each patch it checks the Rasa version, that the target exists, and the hash of the
original's source: on any mismatch that patch is skipped with a WARNING naming it and the
reason (the bot still works, only slower), and tests/bot/test_speedups.py fails, so that an
upgrade of Rasa is noticed and reviewed.
One INFO line is logged per installed patch, and one summary.

Speed-ups that Rasa lets us name as our own class in bot/config.yml are classes, not patches,
so that training, ``rasa test`` and the server run the same code: the RulePolicy's rule window
(bot/policies.py) and DIET's traced-graph call (bot/nlu/diet.py). Their guard is the table of
overridden methods in each module (bot/speedups/overrides.py).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Dict, Iterable, List, Optional, Tuple

import rasa
from rasa.core.actions.action import RemoteAction
from rasa.core.processor import MessageProcessor
from rasa.core.tracker_store import FailSafeTrackerStore
from rasa.engine.graph import GraphSchema
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from bot.settings import Settings
from bot.speedups import actions, admission, dialogue, outage, overrides, states, tracker

logger = logging.getLogger(__name__)

#: The Rasa release every patch below was reviewed against.
REVIEWED_RASA = overrides.REVIEWED_RASA

PERF = "tests/bot/test_perf.py::"
ALL_PATCHES = "POSBOT_RASA_PATCHES"


@dataclass(frozen=True)
class Patch:
    """One replaced attribute of a Rasa class or module."""

    name: str
    owner: Any  # a class or a module
    attribute: str
    replacement: Any
    why: str  # one line: the measurement behind it
    switch: str  # the setting that turns it off
    test: str  # pytest node id of its comparison with the installed Rasa's own code
    sha256: str  # of the source of what it replaces (see ``guarded_source``)
    #: A speed-up (off with POSBOT_RASA_PATCHES=0), or a fix that is always installed.
    speedup: bool = True
    #: The module's whole source is guarded, not the attribute's (a module global such as
    #: ``copy``, whose safety depends on how the module uses it).
    guards_module: bool = False

    @property
    def kind(self) -> str:
        return "speed-up" if self.speedup else "fix"

    @property
    def target(self) -> str:
        owner = (
            self.owner.__name__
            if isinstance(self.owner, ModuleType)
            else f"{self.owner.__module__}.{self.owner.__qualname__}"
        )
        return f"{owner}.{self.attribute}"

    def guarded_source(self) -> str:
        """The source whose hash is recorded: the original attribute's, or the module's."""
        original = self.owner if self.guards_module else _original(self)
        return inspect.getsource(original)


_MISSING = object()
#: (id of owner, attribute) → (patch, what the owner's own ``__dict__`` held before)
_installed: Dict[Tuple[int, str], Tuple[Patch, Any]] = {}


def _key(patch: Patch) -> Tuple[int, str]:
    return id(patch.owner), patch.attribute


def _original(patch: Patch) -> Any:
    """What the attribute is without this patch (a function; a static method unwrapped)."""
    kept = _installed.get(_key(patch))
    if kept is None:
        return getattr(patch.owner, patch.attribute)
    if kept[1] is not _MISSING:
        value = kept[1]
        return value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
    for base in getattr(patch.owner, "__mro__", ())[1:]:  # inherited (e.g. from Policy)
        if patch.attribute in base.__dict__:
            return getattr(base, patch.attribute)
    raise AttributeError(patch.attribute)


def problem(patch: Patch, rasa_version: str = rasa.__version__) -> Optional[str]:
    """Why ``patch`` must not be installed on this Rasa, or None when it may."""
    what = "the module it patches" if patch.guards_module else "the original it replaces"
    exists = hasattr(patch.owner, patch.attribute)
    return overrides.guard(patch.target, exists, patch.guarded_source, patch.sha256, what, rasa_version)


def _apply(patch: Patch) -> None:
    kept = _installed.get(_key(patch))  # replacing another entry for the same target
    before = kept[1] if kept is not None else patch.owner.__dict__.get(patch.attribute, _MISSING)
    _installed[_key(patch)] = (patch, before)
    setattr(patch.owner, patch.attribute, patch.replacement)


def configure(settings: Settings) -> None:
    """Hand the speed-ups their settings (the gate, the kept dialogue-state folds)."""
    admission.configure(settings.max_inflight, settings.gate_max_wait_s)
    states.configure(settings.states_cache)


def install(
    settings: Optional[Settings] = None,
    patches: Optional[Iterable[Patch]] = None,
    rasa_version: str = rasa.__version__,
) -> List[str]:
    """Install the patches that pass the guard (idempotent); the names of those installed.

    ``settings`` defaults to ``Settings.from_env()``, which raises ``SettingsError`` naming a
    variable with a bad value. ``POSBOT_RASA_PATCHES=0`` installs only the fixes.
    """
    settings = Settings.from_env() if settings is None else settings
    configure(settings)
    return _install(list(PATCHES if patches is None else patches), settings.rasa_patches, rasa_version)


def install_fixes() -> List[str]:
    """Only the entries that are fixes, not speed-ups (the outage hooks).

    The tracker store (bot/stores.py) calls this when it is built: it raises
    ``StoreUnavailable`` and relies on it passing through Rasa's ``FailSafeTrackerStore``,
    also where nothing else installs (``rasa shell``, tests of a single store).
    """
    return _install([patch for patch in PATCHES if not patch.speedup], False, rasa.__version__)


def _install(chosen: List[Patch], speedups: bool, rasa_version: str) -> List[str]:
    installed: List[str] = []
    skipped: List[str] = []
    new = off = 0
    for patch in chosen:
        if patch.speedup and not speedups:
            off += 1
            continue
        kept = _installed.get(_key(patch))
        if kept is not None and kept[0] is patch:  # installed before
            installed.append(patch.name)
            continue
        reason = problem(patch, rasa_version)
        if reason is not None:
            consequence = (
                "Rasa's own code runs instead: the bot works, only slower"
                if patch.speedup
                else "Rasa's own behaviour stays"
            )
            logger.warning(
                "%s %s NOT installed on %s: %s; %s (review it and update " "bot/speedups/registry.py)",
                patch.kind,
                patch.name,
                patch.target,
                reason,
                consequence,
            )
            skipped.append(patch.name)
            continue
        _apply(patch)
        installed.append(patch.name)
        new += 1
        logger.info("%s %s installed on %s (%s)", patch.kind, patch.name, patch.target, patch.why)
    if new or skipped or off:
        logger.info(
            "patches of Rasa: %d of %d installed on Rasa %s%s%s",
            len(installed),
            len(chosen),
            rasa_version,
            f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else "",
            f", {off} off ({ALL_PATCHES}=0)" if off else "",
        )
    return installed


def revert() -> None:
    """Put Rasa's own code back (tests compare both)."""
    for patch, before in reversed(list(_installed.values())):
        if before is _MISSING:
            if patch.attribute in patch.owner.__dict__:
                delattr(patch.owner, patch.attribute)
        else:
            setattr(patch.owner, patch.attribute, before)
    _installed.clear()


def installed() -> List[str]:
    """Names of the patches in place now."""
    return [patch.name for patch, _ in _installed.values()]


#: sha256 of the source of each Rasa module whose ``copy`` is replaced (every use of ``copy``
#: there must stay a debug-log argument; tests/bot/test_perf.py checks the same with ``ast``).
_DEBUG_COPY_SHA256 = {
    "rasa.core.processor": "f42dfbf26e2ffcb66e08cf4180d1de1cce2a8f59389d5d3b4ea12a95b1f186dd",
    "rasa.core.policies.rule_policy": "952d1a13906511ac9b8d1c3dcd27148b24bbcd6610ebb13bff23f2fb1667b2b5",
    "rasa.core.policies.memoization": "e4519f1a04ecdcce2241f5bd01f33b0b886d8a2136329da104946acaff31b775",
    "rasa.core.actions.forms": "7cb6c30550116597a43e0139b3d0c3507e4a1a900d72a5eae8b818aa19647dd7",
}

PATCHES: List[Patch] = [
    Patch(
        "action-response-validation",
        RemoteAction,
        "_validate_action_result",
        actions._validate_action_result,
        "jsonschema re-checked the schema on every action response: ~1/5 of the CPU per "
        "custom-action turn (py-spy, 2026-11-23)",
        ALL_PATCHES,
        PERF + "test_action_responses_are_judged_as_rasas_full_schema_judges_them",
        "f8cdb4be6812396167ced74161b2ccd65c5ea676ad86d7d359d8c322d9d8dc42",
    ),
    Patch(
        "action-request-body",
        RemoteAction,
        "_action_call_format",
        actions._action_call_format,
        "every action call re-encoded the whole session: 10 % of the CPU per message " "(py-spy, 2026-11-24)",
        ALL_PATCHES,
        PERF + "test_action_server_requests_are_rasas_byte_for_byte",
        "428795b944f22edba142d278ec47a30098975b01463ba337ec447dade52a0492",
    ),
    Patch(
        "action-session",
        EndpointConfig,
        "session",
        actions._session,
        "a new aiohttp session, TCP connection and json encoding per action call: 6 % of the "
        "CPU (py-spy, 2026-11-23)",
        ALL_PATCHES,
        PERF + "test_action_calls_reuse_one_connection_and_send_the_same_json",
        "e55aa13d9d4fb4bc440ac33b870a97ee162b76dda7ccb6bf68433567475fdffb",
    ),
    Patch(
        "event-type-lookup",
        Event,
        "resolve_by_type",
        staticmethod(tracker._resolve_by_type),
        "walking every Event subclass per deserialised event: 13 % of the CPU with ten "
        "senders (py-spy, 2026-11-23)",
        ALL_PATCHES,
        PERF + "test_event_type_lookup_gives_the_same_class_as_rasa",
        "b5cf570fa7f286c7059ec73d8880528d03a78b28cf4e80285a46079c0fa65968",
    ),
    Patch(
        "dialogue-states",
        Domain,
        "states_for_tracker_history",
        states.states_for_tracker_history,
        "the session was replayed 6-8 times per message: the largest share of the Rasa "
        "server's CPU (py-spy, 2026-11-23)",
        f"{ALL_PATCHES}; POSBOT_STATES_CACHE=0",
        "tests/bot/test_states.py::test_every_turn_gives_rasas_states",
        "035111ce73ac90ba50e143abf556f924af07d9f452893f5a96a62895d44df8b7",
    ),
    Patch(
        "applied-events",
        DialogueStateTracker,
        "applied_events",
        tracker._applied_events,
        "applied_events computed 6-8 times per message for the same events (py-spy, " "2026-11-23)",
        ALL_PATCHES,
        PERF + "test_applied_events_follow_the_tracker_as_it_grows",
        "764d5065ea9997d613c1984d9357370f9ae32d31ca21346086f16c54f0487aae",
    ),
    Patch(
        "tracker-copy",
        DialogueStateTracker,
        "copy",
        tracker._copy,
        "each tracker copy replayed the whole session (3-4 per message): 5 % of the CPU "
        "(py-spy, 2026-11-23)",
        ALL_PATCHES,
        PERF + "test_tracker_copies_are_the_replayed_state_and_stay_independent",
        "dfa48dca9f355ad1b42c625bc6f6370bafe83514ed17a77904ed64c67bf07285",
    ),
    Patch(
        "pruned-graph",
        GraphSchema,
        "minimal_graph_schema",
        dialogue._minimal_graph_schema,
        "the prediction graph was pruned again on every run (2-4 per message; py-spy, " "2026-11-24)",
        ALL_PATCHES,
        PERF + "test_pruned_prediction_graphs_are_rasas",
        "58dfb30335499fff7640e0d4ea6c0a715e23abc27e641b05636798db7bb4f9fe",
    ),
    Patch(
        "plain-graph-run",
        DaskGraphRunner,
        "run",
        dialogue._graph_run,
        "dask's scheduler around every graph run: 1.8 ms of 17 ms per message (in-process "
        "timing, 2026-12-01)",
        ALL_PATCHES,
        PERF + "test_plain_graph_runs_are_dasks",
        "45f0f52f574f3aa9546a552bf671183e171092c18b66e97f5771a7fa295de37e",
    ),
    Patch(
        "fifo-gate",
        MessageProcessor,
        "handle_message",
        admission.handle_message,
        "messages overtook each other: the slowest 1 % took 2.6 × the median (make bench, " "10 senders)",
        f"{ALL_PATCHES}; POSBOT_MAX_INFLIGHT=0",
        "tests/bot/test_admission.py::test_merchants_behind_a_stalled_message_are_answered",
        "0c41d4780d2d46769ef2ae2b3f450b88d2602e916590e8be9975aa474db9f7f4",
    ),
    *[
        Patch(
            f"debug-copies-{module.__name__.rsplit('.', 1)[-1]}",
            module,
            "copy",
            dialogue._LogOnlyCopy(),
            "deep copies made only for debug log calls, also with debug logging off (py-spy, " "2026-11-24)",
            ALL_PATCHES,
            PERF + "test_skipped_copies_are_only_ever_debug_log_arguments",
            _DEBUG_COPY_SHA256[module.__name__],
            guards_module=True,
        )
        for module in dialogue.LOG_ONLY_COPY_MODULES
    ],
    Patch(
        "outage-save",
        FailSafeTrackerStore,
        "on_tracker_store_error",
        outage.on_tracker_store_error,
        "a failed save was kept in memory and never read again (bot/outage.py)",
        "always (a fix, not a speed-up)",
        "tests/bot/test_outage.py::test_other_errors_keep_rasas_fallback",
        "6faca7ba72b36da4594c789a1ee9d86ea185a8785a1e0543199b63bf02937e12",
        speedup=False,
    ),
    Patch(
        "outage-read",
        FailSafeTrackerStore,
        "on_tracker_store_retrieve_error",
        outage.on_tracker_store_retrieve_error,
        "a failed read answered from an empty conversation (bot/outage.py)",
        "always (a fix, not a speed-up)",
        "tests/bot/test_outage.py::test_other_errors_keep_rasas_fallback",
        "162b49564c52ab49f2be6a40ed56d11564e6607fdcd6975d44e678f69ca6ce9d",
        speedup=False,
    ),
]
