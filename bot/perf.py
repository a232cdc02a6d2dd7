"""Speed-ups for Rasa 3.6 internals that cost more than the work they guard.

Each one gives the same results as the code it replaces, found with py-spy on the Rasa server
under `make bench` load (2026-11-23):

- Rasa validates every action-server response with ``jsonschema.validate``, which re-checks the
  schema itself on every call: about a fifth of the CPU per custom-action turn. The same
  validation with a validator built once gives the same errors at a fraction of the cost.
- ``Event.resolve_by_type`` walks every subclass of ``Event`` (with ``inspect.isabstract`` on
  each) for every event it deserialises: 13 % of the CPU with ten senders. A name → class map,
  rebuilt when a name is missing, returns the same class.

- Every call to the action server (1-3 per message) opened a new aiohttp session and TCP
  connection and encoded the whole tracker with the ``json`` module (6 % of the CPU). One
  long-lived session per event loop and endpoint headers keeps the connection alive and encodes
  with ujson (a Rasa dependency; the decoded JSON is identical, tests/bot/test_perf.py).

Applied when the server loads our channels (bot/channels) or tracker store (bot/stores.py).
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from typing import Any, Dict, Optional, Text, Type

import aiohttp
import ujson
from jsonschema import ValidationError
from jsonschema.validators import validator_for
from rasa.core.actions.action import RemoteAction
from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.events import Event
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import EndpointConfig

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


_original_session = EndpointConfig.session
_shared_sessions: Dict[Any, aiohttp.ClientSession] = {}


class _LentSession:
    """``async with`` hands out a long-lived session and leaves it open afterwards."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self._session

    async def __aexit__(self, *exc_info: Any) -> None:
        return None


def _session(self: EndpointConfig) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _original_session(self)
    key = (id(loop), tuple(sorted((self.headers or {}).items())),
           tuple(sorted((self.basic_auth or {}).items())))
    session = _shared_sessions.get(key)
    if session is None or session.closed:
        # The same settings as EndpointConfig.session, plus the encoder.
        auth = (aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"])
                if self.basic_auth else None)
        session = aiohttp.ClientSession(
            headers=self.headers, auth=auth, json_serialize=ujson.dumps,
            timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT))
        _shared_sessions[key] = session
    return _LentSession(session)


async def close_sessions() -> None:
    """Close the shared sessions of the running loop (server shutdown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _shared_sessions if k[0] == loop_id]:
        await _shared_sessions.pop(key).close()


def apply() -> None:
    """Install the speed-ups (idempotent)."""
    if RemoteAction._validate_action_result is not _validate_action_result:
        RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
        logger.debug("action-response validation uses a cached validator")
    if EndpointConfig.session is not _session:
        EndpointConfig.session = _session  # type: ignore[method-assign]
    if Event.resolve_by_type is not _resolve_by_type:
        Event.resolve_by_type = staticmethod(_resolve_by_type)  # type: ignore[method-assign]
