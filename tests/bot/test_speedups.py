"""The registry of posbot's changes to Rasa (bot/speedups/registry.py) and its guard.

Every entry must still match the installed Rasa (an upgrade of Rasa fails here, and the patch is
then skipped at start with a warning), must name a comparison test that exists, and nothing may
be patched by importing a module: only bot/serve.py installs, before Rasa's CLI runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import textwrap

import pytest
import rasa

from bot import policies, serve
from bot.nlu import diet
from bot.settings import PROJECT_ROOT, Settings
from bot.speedups import overrides, registry

#: Every Rasa method posbot's classes in bot/config.yml override, and the class overriding it.
OVERRIDDEN = [
    *[(policies.WindowedRulePolicy, o) for o in policies.OVERRIDES],
    *[(diet.TracedDIET, o) for o in diet.OVERRIDES],
]


def _is_ours(patch: registry.Patch) -> bool:
    return patch.owner.__dict__.get(patch.attribute) is patch.replacement


@pytest.fixture
def unpatched() -> object:
    """Rasa as it is shipped; installed again afterwards (other tests expect the speed-ups)."""
    registry.revert()
    yield
    registry.revert()
    registry.install()


def test_every_entry_was_reviewed_against_the_installed_rasa() -> None:
    assert rasa.__version__ == registry.REVIEWED_RASA
    problems = {patch.name: registry.problem(patch) for patch in registry.PATCHES}
    assert {name: why for name, why in problems.items() if why} == {}, (
        "Rasa changed under these patches: review each against the new Rasa code, then record "
        "the new sha256 in bot/speedups/registry.py"
    )


def test_every_overridden_rasa_method_is_the_reviewed_one() -> None:
    """The speed-ups that are classes named in bot/config.yml (bot/policies.py, bot/nlu/diet.py)
    replace these Rasa methods: an upgrade of Rasa that changes one fails here."""
    assert overrides.REVIEWED_RASA == registry.REVIEWED_RASA == rasa.__version__
    problems = {o.target: overrides.problem(o) for _, o in OVERRIDDEN}
    assert {target: why for target, why in problems.items() if why} == {}, (
        "Rasa changed under these overrides: review each against the new Rasa code, then record "
        "the new sha256 in the module's OVERRIDES"
    )


def test_the_overrides_table_names_every_method_the_classes_replace() -> None:
    for cls, override in OVERRIDDEN:
        assert issubclass(cls, override.owner) and override.attribute in cls.__dict__, override.target
        assert len(override.sha256) == 64 and override.why.strip()
    for cls, table in ((policies.WindowedRulePolicy, policies.OVERRIDES), (diet.TracedDIET, diet.OVERRIDES)):
        replaced = {
            name
            for name, value in cls.__dict__.items()
            if callable(value) and not name.startswith("__") and name not in ("load", "train")
            for base in cls.__mro__[1:]
            if name in base.__dict__
        }
        assert replaced == {o.attribute for o in table}, cls


def test_a_changed_rasa_method_runs_rasas_code_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    changed = dataclasses.replace(policies.OVERRIDES[0], sha256="0" * 64)
    with caplog.at_level(logging.WARNING, logger="bot.speedups"):
        assert not overrides.speedups_on("tests.Changed", [changed, *policies.OVERRIDES[1:]])
        assert overrides.speedups_on("tests.Unchanged", policies.OVERRIDES)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"speed-ups of tests.Changed NOT used: {changed.target}: Rasa's method")


def test_entries_are_complete_and_unique() -> None:
    names = [patch.name for patch in registry.PATCHES]
    targets = [patch.target for patch in registry.PATCHES]
    assert len(set(names)) == len(names) and len(set(targets)) == len(targets)
    for patch in registry.PATCHES:
        assert patch.why.strip() and patch.switch.strip(), patch.name
        assert len(patch.sha256) == 64 and set(patch.sha256) <= set("0123456789abcdef")
        assert patch.test.startswith("tests/") and "::test_" in patch.test, patch.name


def test_every_entry_has_a_comparison_test_that_pytest_collects() -> None:
    node_ids = sorted({patch.test for patch in registry.PATCHES} | {o.test for _, o in OVERRIDDEN})
    found = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *node_ids],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    collected = {line.split("[", 1)[0] for line in found.stdout.splitlines() if line.startswith("tests/")}
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
    assert set(node_ids) <= collected, set(node_ids) - collected


def test_install_logs_each_patch_and_a_summary(unpatched: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bot.speedups"):
        names = registry.install(Settings.from_env({}))
    assert names == [patch.name for patch in registry.PATCHES]
    assert all(_is_ours(patch) for patch in registry.PATCHES)
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.speedups.registry"]
    assert len(lines) == len(registry.PATCHES) + 1
    for patch, line in zip(registry.PATCHES, lines, strict=False):
        assert line.startswith(f"{patch.kind} {patch.name} installed on {patch.target}"), line
    assert lines[-1] == f"patches of Rasa: {len(names)} of {len(names)} installed on Rasa 3.6.21"
    assert registry.install(Settings.from_env({})) == names  # idempotent
    registry.revert()
    assert not any(_is_ours(patch) for patch in registry.PATCHES)


def test_a_changed_original_is_skipped_and_named_while_the_others_install(
    unpatched: object, caplog: pytest.LogCaptureFixture
) -> None:
    changed = dataclasses.replace(registry.PATCHES[0], sha256="0" * 64)
    gone = dataclasses.replace(registry.PATCHES[1], attribute="_no_such_method_in_rasa")
    others = registry.PATCHES[2:]
    with caplog.at_level(logging.INFO, logger="bot.speedups"):
        names = registry.install(Settings.from_env({}), [changed, gone, *others])
    assert names == [patch.name for patch in others]
    assert not _is_ours(changed) and not _is_ours(registry.PATCHES[1])
    assert all(_is_ours(patch) for patch in others)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"speed-up {changed.name} NOT installed on {changed.target}")
    assert "the original it replaces changed" in warnings[0]
    assert f"{gone.target} does not exist in this Rasa" in warnings[1]
    summary = caplog.records[-1].getMessage()
    assert f"2 skipped ({changed.name}, {gone.name})" in summary


def test_another_rasa_version_installs_nothing(unpatched: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.speedups"):
        assert registry.install(Settings.from_env({}), rasa_version="3.7.0") == []
    assert not any(_is_ours(patch) for patch in registry.PATCHES)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(registry.PATCHES)
    assert all("reviewed against Rasa 3.6.21, this is Rasa 3.7.0" in w for w in warnings)


def test_patches_off_keeps_only_the_outage_fix(unpatched: object) -> None:
    names = registry.install(Settings.from_env({"POSBOT_RASA_PATCHES": "0"}))
    fixes = [patch for patch in registry.PATCHES if not patch.speedup]
    assert names == [patch.name for patch in fixes] and {"outage-read", "outage-save"} <= set(names)
    assert all(_is_ours(patch) == (not patch.speedup) for patch in registry.PATCHES)


def test_importing_the_server_modules_patches_nothing_even_with_bad_settings() -> None:
    """No import side effects: Rasa is unchanged after importing every module that used to
    patch it, and a bad setting does not break an import (it stops the server at start)."""
    script = textwrap.dedent("""
        import json
        import bot.channels.rest, bot.stores, bot.outage, bot.speedups.registry as registry
        print(json.dumps([p.name for p in registry.PATCHES
                          if p.owner.__dict__.get(p.attribute) is p.replacement]))
    """)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "POSBOT_MAX_INFLIGHT": "many",
        "POSBOT_STATES_CACHE": "-1",
        "POSBOT_GATE_MAX_WAIT_S": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_server_installs_before_rasas_cli_runs(
    unpatched: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rasa.__main__

    seen: list[list[str]] = []
    monkeypatch.setattr(rasa.__main__, "main", lambda: seen.append(registry.installed()))
    monkeypatch.setenv("POSBOT_RASA_PATCHES", "1")
    monkeypatch.setattr(sys, "argv", ["bot.serve", "run", "actions", "--actions", "actions"])
    serve.main()
    assert seen == [[]]  # the action server: Rasa's code untouched
    monkeypatch.setattr(sys, "argv", ["bot.serve", "run", "--model", "models/posbot.tar.gz"])
    serve.main()
    assert seen[-1] == [patch.name for patch in registry.PATCHES]
    assert sys.argv == ["rasa", "run", "--model", "models/posbot.tar.gz"]


def test_a_bad_setting_stops_the_server_at_start_naming_it(
    unpatched: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rasa.__main__

    monkeypatch.setattr(rasa.__main__, "main", lambda: pytest.fail("Rasa must not start"))
    monkeypatch.setenv("POSBOT_MAX_INFLIGHT", "lots")
    monkeypatch.setattr(sys, "argv", ["bot.serve", "run"])
    with pytest.raises(SystemExit, match="POSBOT_MAX_INFLIGHT='lots'"):
        serve.main()
    assert registry.installed() == []


def test_a_bad_kb_setting_stops_the_rasa_server_too(
    unpatched: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console and the NLU's KB reads use kb/settings.py: checked at start, not on first use."""
    import rasa.__main__

    monkeypatch.setattr(rasa.__main__, "main", lambda: pytest.fail("Rasa must not start"))
    monkeypatch.setenv("POSBOT_DATABASE_URL", "var/posbot.sqlite3")
    monkeypatch.setattr(sys, "argv", ["bot.serve", "run"])
    with pytest.raises(SystemExit, match="^posbot: bad setting POSBOT_DATABASE_URL='var/posbot.sqlite3'"):
        serve.main()
    assert registry.installed() == []
