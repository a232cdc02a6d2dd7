"""Speed-ups of the Rasa server's calls to the action server (1-3 per message).

Found with py-spy on the Rasa server under ``make bench`` load:

- Rasa validates every action-server response with ``jsonschema.validate``, which re-checks the
  schema itself on every call: about a fifth of the CPU per custom-action turn (2026-11-23). The
  same validation with a validator built once gives the same errors at a fraction of the cost.
- Every call opened a new aiohttp session and TCP connection and encoded the whole tracker with
  the ``json`` module (6 % of the CPU, 2026-11-23). One long-lived session per event loop and
  endpoint headers keeps the connection alive and encodes with ujson (a Rasa dependency; the
  decoded JSON is identical).
- Every action call turned the whole session into dicts and JSON again (10 %, 2026-11-24);
  earlier turns' events keep their JSON, and the request body stays the same bytes.

Registered in bot/speedups/registry.py; compared with Rasa's own code in tests/bot/test_perf.py.
"""

from __future__ import annotations

import asyncio
import copy
from functools import lru_cache
from typing import Any, Dict, List, Text, Tuple

import aiohttp
import rasa
import ujson
from jsonschema import ValidationError
from jsonschema.validators import validator_for
from rasa.core.actions.action import RemoteAction
from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from rasa.utils.endpoints import EndpointConfig

from bot.speedups.lru import LRU, continues


@lru_cache(maxsize=1)
def _response_validator() -> Any:
    schema = RemoteAction.action_response_format_spec()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _validator(schema: Dict[Text, Any]) -> Any:
    return validator_for(schema)(schema)


@lru_cache(maxsize=1)
def _response_checks() -> Tuple[Any, Dict[Text, Any]]:
    """The response schema split at its ``oneOf`` over event types.

    Every alternative of Rasa's event schema pins ``event`` to its own constant and ``event`` is
    required, so an event satisfies the ``oneOf`` exactly when it satisfies the alternative named
    by its ``event`` field. Checking that one alternative (instead of all 23, building an error
    for each of the 22 that fail) accepts the same responses.
    """
    schema = copy.deepcopy(RemoteAction.action_response_format_spec())
    event_schema = schema["properties"]["events"]["items"]
    alternatives = event_schema.pop("oneOf")
    by_type = {alt["properties"]["event"]["const"]: _validator(alt) for alt in alternatives}
    if len(by_type) != len(alternatives):  # pragma: no cover - a changed Rasa schema
        raise RuntimeError("event alternatives are not distinguished by their constant")
    return _validator(schema), by_type


def _valid_response(result: Dict[Text, Any]) -> bool:
    outer, by_type = _response_checks()
    if not outer.is_valid(result):
        return False
    for event in result.get("events") or []:
        check = by_type.get(event["event"])
        if check is None or not check.is_valid(event):
            return False
    return True


def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
    try:
        if _valid_response(result):
            return True
        _response_validator().validate(result)  # Rasa's full check, for Rasa's error message
        return True
    except ValidationError as e:
        e.message += (
            ". Failed to validate Action server response from API, make sure your response "
            f"from the Action endpoint is valid. For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise e


_original_session = EndpointConfig.session
_shared_sessions: Dict[Any, aiohttp.ClientSession] = {}
#: Seconds an idle connection to the action server is kept for reuse. It must stay below the
#: action server's own keep-alive timeout (Sanic's KEEP_ALIVE_TIMEOUT, 5 s by default): a
#: connection the server has just closed, picked from the pool as its FIN arrives, fails with
#: "Cannot write to closing transport" and Rasa drops the action's events — a form then took
#: the merchant's answer and said nothing (found 2026-11-30; aiohttp's default is 15 s).
ACTION_KEEPALIVE_S = 2.0


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
    key = (
        id(loop),
        tuple(sorted((self.headers or {}).items())),
        tuple(sorted((self.basic_auth or {}).items())),
    )
    session = _shared_sessions.get(key)
    if session is None or session.closed:
        # The same settings as EndpointConfig.session, plus the encoder.
        auth = (
            aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"])
            if self.basic_auth
            else None
        )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=ACTION_KEEPALIVE_S),
            headers=self.headers,
            auth=auth,
            json_serialize=ujson.dumps,
            timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
        )
        _shared_sessions[key] = session
    return _LentSession(session)


async def close_sessions() -> None:
    """Close the shared sessions of the running loop (server shutdown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _shared_sessions if k[0] == loop_id]:
        await _shared_sessions.pop(key).close()


class _EncodedJson:
    """A value that ujson writes as the JSON text it holds (ujson calls ``__json__``)."""

    __slots__ = ("text",)

    def __init__(self, text: Text) -> None:
        self.text = text

    def __json__(self) -> Text:
        return self.text


def _event_json(event: Event) -> Text:
    return ujson.dumps(event.as_dict())


# first event of a session → (the settled events, their JSON joined by commas)
SETTLED_RUNS_KEPT = 128
_settled_runs: LRU = LRU(SETTLED_RUNS_KEPT)


def _settled_run(events: List[Event]) -> _EncodedJson:
    """The settled events of a session as one piece of JSON (list items joined by commas).

    Each conversation's run is kept and extended turn by turn with the events that settled
    since, for the ``SETTLED_RUNS_KEPT`` conversations used last (at most ~150 KB each, for a
    30-message session); it is used only while the events are the same objects, so an event
    copied and changed (Rasa does that for fallbacks) is encoded again. One joined piece also
    spares ujson its slow ``__json__`` call per event (0.3 ms for 350 events).
    """
    kept = _settled_runs.get(id(events[0]))
    if kept is not None and continues(kept[0], events):
        known, text = kept
        if len(known) < len(events):
            text = ",".join([text, *map(_event_json, events[len(known) :])])
    else:
        text = ",".join(map(_event_json, events))
    _settled_runs.put(id(events[0]), (events, text))
    return _EncodedJson(text)


_original_action_call_format = RemoteAction._action_call_format


def _action_call_format(self: RemoteAction, tracker: DialogueStateTracker, domain: Domain) -> Dict[Text, Any]:
    """Rasa's request to the action server, with earlier turns' events encoded only once.

    Every call sends the whole session (a 30-message session is ~350 events, 137 KB), and Rasa
    turned every event into a dict and then into JSON again for each of the 1-3 calls of every
    message: a tenth of the CPU per message. Events of earlier turns never change, so their JSON
    is kept per conversation; the events from the latest user message on are encoded fresh.
    The shared action session encodes with ujson, which writes the kept text where it finds
    it: the request body is the same text, byte for byte (tests/bot/test_perf.py).
    """
    events = list(tracker.events)
    settled = len(events)
    for index in range(len(events) - 1, -1, -1):
        settled = index
        if isinstance(events[index], UserUttered):
            break
    state = tracker.current_state(EventVerbosity.NONE)
    state["events"] = [
        *([_settled_run(events[:settled])] if settled else []),
        *(event.as_dict() for event in events[settled:]),
    ]
    result = {
        "next_action": self._name,
        "sender_id": tracker.sender_id,
        "tracker": state,
        "version": rasa.__version__,
    }
    if not self._is_selective_domain_enabled() or domain.does_custom_action_explicitly_need_domain(
        self.name()
    ):
        result["domain"] = domain.as_dict()
    return result
