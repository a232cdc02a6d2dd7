"""The action server finds every custom action of the domain, each in exactly one module."""

from __future__ import annotations

import inspect
from collections import Counter

from rasa_sdk import Action
from rasa_sdk.executor import ActionExecutor


def test_every_domain_action_is_registered_exactly_once(flow_domain) -> None:
    # What `rasa run actions --actions actions` does: import the package and its submodules.
    executor = ActionExecutor()
    executor.register_package("actions")
    custom = [name for name in flow_domain["actions"] if not name.startswith("utter_")]
    assert custom and sorted(set(custom) - set(executor.actions)) == []
    classes = [
        cls
        for cls in _subclasses(Action)
        if cls.__module__.startswith("actions.") and not inspect.isabstract(cls)
    ]
    names = Counter(cls().name() for cls in classes)
    assert [name for name, count in names.items() if count > 1] == []
    assert set(names) == set(executor.actions)


def test_the_ticket_form_lives_in_its_own_module() -> None:
    executor = ActionExecutor()
    executor.register_package("actions")
    for name in ("validate_ticket_form", "action_submit_ticket"):
        assert type(executor.actions[name].__self__).__module__ == "actions.ticket"


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
