"""Speed-ups for Rasa 3.6 internals that cost more than the work they guard.

Rasa validates every action-server response with ``jsonschema.validate``, which re-checks the
schema itself on every call: about a fifth of the Rasa server's CPU per custom-action turn in
our profile (py-spy, 2026-11-23). The same validation with a validator built once gives the same
errors at a fraction of the cost. Applied when the server loads our channels (bot/channels).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Dict, Text

from jsonschema import ValidationError
from jsonschema.validators import validator_for
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL

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


def apply() -> None:
    """Install the speed-ups (idempotent)."""
    if RemoteAction._validate_action_result is not _validate_action_result:
        RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
        logger.debug("action-response validation uses a cached validator")
