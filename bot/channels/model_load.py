"""Load a new model into a running Rasa server without stalling its merchants (issue 17).

Rasa 3.6's ``PUT /model`` (rasa/server.py ``load_model``) awaits ``load_agent`` on the server's
event loop: unpacking the archive and building the graph (TensorFlow, the tokenizer, the KB
components) run there, so for the whole load the server answers nobody. This route does the
same load in a worker thread (``loop.run_in_executor``) while the old agent keeps answering,
then swaps the new agent in with plain assignments, no ``await`` in between: every channel and
API handler reads ``app.ctx.agent`` per message (rasa/core/channels/channel.py ``handler``,
rasa/server.py), so a message either runs wholly on the old model or wholly on the new one.

``PUT /staff/api/model/load?token=<Rasa API token>`` ``{"model_file": "<path on this server>"}``

* 200 ``{"model_file", "model_id", "previous": {...}, "seconds"}`` once the new model serves;
* 401 without the token (bot/api_token.py, the one ``rasa run --auth-token`` got), 503 when the
  server has no token configured; nothing is loaded;
* 400 no ``model_file`` / not a file, 500 the file could not be loaded (Rasa's error JSON,
  ``{"status": "failure", "reason", "message", "code"}``): the old model keeps serving;
* 409 another load is under way on this server, or the agent changed meanwhile (a ``PUT /model``).

What the new agent keeps (what Rasa's ``PUT /model`` gives it, from the same endpoints file the
old agent was built from): the old agent's lock store (Rasa keeps it too), its tracker store,
action endpoint, NLG (a response-template NLG gets the new domain's responses), NLU HTTP
interpreter, model server and remote storage settings. One difference: Rasa builds a *new*
tracker store from the endpoints (a second connection pool, an empty conversation cache); this
route keeps the running one (bot/stores.py rebuilds its remembered trackers per domain) and gives
it the new domain at the swap. ``model_server`` / ``remote_storage`` in the body are refused:
this route loads a file of this server.

A requester that disconnects mid-load does not stop the load thread (threads cannot be stopped),
but the model is then not swapped in: the server keeps serving what its publisher last saw, and a
new load is refused (409) until that thread is done, so never three models at once.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.api_token import TokenError, rasa_token

logger = logging.getLogger(__name__)

LOAD_ROUTE = "/api/model/load"
#: Where the route is, relative to a Rasa server's URL (the staff console's prefix + LOAD_ROUTE).
LOAD_PATH = "/staff" + LOAD_ROUTE

Build = Callable[[Any, Path], Any]


def build_agent(old: Any, model: Path) -> Any:
    """A new Agent for ``model`` with the old agent's stores and endpoints (in a worker thread:
    it touches nothing the old agent uses)."""
    from rasa.core.agent import Agent
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.core.processor import MessageProcessor

    templated = old.nlg is None or isinstance(old.nlg, TemplatedNaturalLanguageGenerator)
    nlg = TemplatedNaturalLanguageGenerator({}) if templated else old.nlg
    processor = MessageProcessor(
        model_path=str(model),
        tracker_store=old.tracker_store,
        lock_store=old.lock_store,
        generator=nlg,
        action_endpoint=old.action_endpoint,
        http_interpreter=old.http_interpreter,
    )
    if templated:
        nlg.responses = processor.domain.responses if processor.domain else {}
    agent = Agent(
        generator=nlg,
        lock_store=old.lock_store,
        action_endpoint=old.action_endpoint,
        model_server=old.model_server,
        remote_storage=old.remote_storage,
        http_interpreter=old.http_interpreter,
    )
    agent.tracker_store = old.tracker_store  # the running store, given the domain at the swap
    agent.processor = processor
    agent.domain = processor.domain
    return agent


def _failure(status: int, reason: str, message: str) -> HTTPResponse:
    """Rasa's error JSON (rasa/server.py ``ErrorResponse``), so clients read both alike."""
    import rasa

    return response.json(
        {
            "version": rasa.__version__,
            "status": "failure",
            "message": message,
            "reason": reason,
            "code": status,
        },
        status=status,
    )


def describe(agent: Any) -> dict[str, Optional[str]]:
    processor = getattr(agent, "processor", None)
    return {
        "model_file": getattr(processor, "model_filename", None),
        "model_id": agent.model_id if processor is not None else None,
    }


class ModelLoader:
    """The route, with how to read the token and how to build an agent (injected by tests)."""

    def __init__(self, token: Optional[Callable[[], str]] = None, build: Optional[Build] = None) -> None:
        self.token = token or (lambda: rasa_token(create=False))
        self.build = build or build_agent
        self._loading: Optional[asyncio.Task] = None

    def refused(self, request: Request) -> Optional[HTTPResponse]:
        try:
            expected = self.token()
        except (TokenError, OSError):
            logger.error("model load refused: this server has no Rasa API token configured")
            return _failure(503, "NoToken", "This server has no API token configured.")
        provided = request.args.get("token") or ""
        if not hmac.compare_digest(provided.encode(), expected.encode()):
            return _failure(401, "NotAuthenticated", "User is not authenticated.")
        return None

    async def _load(self, app: Any, model: Path, wanted: asyncio.Event) -> HTTPResponse:
        old = getattr(app.ctx, "agent", None)
        if old is None:
            return _failure(409, "Conflict", "The server has not started its agent yet.")
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        logger.info(
            "loading model %s in a worker thread; %s keeps serving", model, describe(old)["model_file"]
        )
        try:
            new = await loop.run_in_executor(None, self.build, old, model)
        except Exception as error:
            logger.warning(
                "could not load model %s: %s: %s (the old model keeps serving)",
                model,
                type(error).__name__,
                error,
                exc_info=True,
            )
            return _failure(500, "LoadingError", f"An unexpected error occurred. Error: {error}")
        if new is None or not new.is_ready():
            return _failure(400, "BadRequest", f"Agent with name '{model}' could not be loaded.")
        if not wanted.is_set():
            logger.warning("model %s loaded, but its requester has gone: not swapped in", model)
            return _failure(409, "Conflict", "The requester went away: not swapped in.")
        serving: Any = getattr(app.ctx, "agent", None)
        if serving is not old:  # someone swapped it meanwhile
            return _failure(409, "Conflict", "The model changed during the load: try again.")
        # the swap: no await from here on, so no message sees a half-made change
        old.tracker_store.domain = new.domain
        app.ctx.agent = new
        seconds = round(time.monotonic() - started, 2)
        logger.info(
            "model %s serving after %.1f s (was %s)",
            describe(new)["model_file"],
            seconds,
            describe(old)["model_file"],
        )
        previous = describe(old)
        del old
        await loop.run_in_executor(None, gc.collect)  # the old model's memory, off the loop
        return response.json({**describe(new), "previous": previous, "seconds": seconds})

    def register(self, bp: Blueprint) -> None:
        @bp.route(LOAD_ROUTE, methods=["PUT"])
        async def load_model(request: Request) -> HTTPResponse:
            refused = self.refused(request)
            if refused:
                return refused
            body = request.json if isinstance(request.json, dict) else {}
            if body.get("model_server") or body.get("remote_storage"):
                return _failure(
                    400,
                    "BadRequest",
                    "Only a model file of this server can be "
                    "loaded here (use PUT /model for a model server).",
                )
            model_file = body.get("model_file")
            if not isinstance(model_file, str) or not model_file:
                return _failure(400, "BadRequest", "No path to model file defined in request_body.")
            model = Path(model_file)
            if not model.is_file():
                return _failure(400, "ModelNotFound", f"No model file at '{model_file}'.")
            if self._loading is not None and not self._loading.done():
                return _failure(409, "Conflict", "Another model is being loaded on this server.")
            # a task of its own that outlives a requester who goes away, and then swaps nothing
            wanted = asyncio.Event()
            wanted.set()
            self._loading = asyncio.create_task(self._load(request.app, model, wanted))
            try:
                return await asyncio.shield(self._loading)
            except asyncio.CancelledError:
                wanted.clear()
                raise
