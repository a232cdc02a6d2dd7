"""Speed-ups for Rasa 3.6 internals that cost more than the work they guard.

Each one gives the same results as the code it replaces, found with py-spy on the Rasa server
under `make bench` load (2026-11-23):

- Rasa validates every action-server response with ``jsonschema.validate``, which re-checks the
  schema itself on every call: about a fifth of the CPU per custom-action turn. The same
  validation with a validator built once gives the same errors at a fraction of the cost.
- ``Event.resolve_by_type`` walks every subclass of ``Event`` (with ``inspect.isabstract`` on
  each) for every event it deserialises: 13 % of the CPU with ten senders. A name → class map,
  rebuilt when a name is missing, returns the same class.

Applied when the server loads our channels (bot/channels) or tracker store (bot/stores.py).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Dict, Optional, Text, Type

from jsonschema import ValidationError
from jsonschema.validators import validator_for
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.events import Event
from rasa.shared.utils.common import all_subclasses

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _response_validator() -> Any:
    schema = RemoteAction.action_response_format_spec()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
    try:
        _response_validator().validate(result)
        return True
    except ValidationError as e:
        e.message += (
            ". Failed to validate Action server response from API, make sure your response "
            f"from the Action endpoint is valid. For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise e


_original_resolve_by_type = Event.resolve_by_type
_event_types: Dict[Text, Type[Event]] = {}


def _resolve_by_type(type_name: Text, default: Optional[Type[Event]] = None
                     ) -> Optional[Type[Event]]:
    found = _event_types.get(type_name)
    if found is None:
        # First match wins, in the order Rasa's own loop would meet the classes.
        for cls in all_subclasses(Event):
            _event_types.setdefault(cls.type_name, cls)
        found = _event_types.get(type_name)
    if found is not None:
        return found
    return _original_resolve_by_type(type_name, default)  # "topic", default, or the error


def apply() -> None:
    """Install the speed-ups (idempotent)."""
    if RemoteAction._validate_action_result is not _validate_action_result:
        RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
        logger.debug("action-response validation uses a cached validator")
    if Event.resolve_by_type is not _resolve_by_type:
        Event.resolve_by_type = staticmethod(_resolve_by_type)  # type: ignore[method-assign]
