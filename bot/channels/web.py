"""Website chat widget channel: Rasa's socket.io channel plus the widget's static files.

Mounted from ``bot/credentials.yml`` as ``bot.channels.web.WebChatInput``; Rasa registers the
blueprint under ``/webhooks/web/`` and the socket.io server at ``/socket.io`` (app root).

Why this is not just Rasa's ``SocketIOInput``:

* Rasa 3.6.21 builds ``AsyncServer(cors_allowed_origins=[])``, which switches python-engineio's
  origin check off completely, so any site could drive the bot through a visitor's browser.
  Here the allowed origins come from ``POSBOT_CORS_ORIGINS`` (``Settings.cors_origins``), and
  the bot's own origin (the demo page) is always allowed.
* Rasa's ``session_request`` handler calls ``sio.enter_room(...)`` without ``await``; with
  python-socketio 5 that is a coroutine, so the socket never joins the session room and, with
  ``session_persistence: true``, no bot answer reaches the browser (RasaHQ/rasa#13027).
* ``SocketIOOutput.send_custom_json`` calls ``sio.emit(event, **json_message)``: a custom
  message such as ``{"posbot": {"handoff": "started"}}`` raises ``TypeError`` there
  (RasaHQ/rasa#8445). :class:`WebChatOutput` emits it as the event's payload instead.
* The health route ``GET /`` of Rasa's blueprint becomes the demo page; health moved to
  ``GET /webhooks/web/health``.
* A message whose conversation cannot be read, stored or locked (PostgreSQL or Redis down) gets
  one polite "请稍后再发一次" (bot/outage.py); a turn's messages are held until it is over, so a
  turn that could not be stored shows nothing but that text.

The socket.io protocol is unchanged (``session_request``/``session_confirm``, ``user_uttered``,
``bot_uttered``, ``session_persistence``, ``metadata_key``, JWT auth), so Rasa clients such as
rasa-webchat keep working against this channel.
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Dict, Iterable, List, Mapping, Optional, Text
from urllib.parse import urlsplit

import rasa.core.channels.channel
import rasa.shared.utils.io
from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.core.channels.socketio import SocketBlueprint, SocketIOInput, SocketIOOutput
from sanic import Blueprint, Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncRedisManager, AsyncServer

from bot.channels.limits import install as install_body_limits
from bot.handoff_gate import gate
from bot.outage import guard
from bot.settings import PROJECT_ROOT, Settings

try:  # Sanic-CORS is what `rasa run --cors ...` installs on the app.
    from sanic_cors.core import SANIC_CORS_EVALUATED
except ImportError:  # pragma: no cover - Sanic-CORS is a Rasa dependency
    SANIC_CORS_EVALUATED = "_sanic_cors_e"

logger = logging.getLogger(__name__)

WEB_ROOT = PROJECT_ROOT / "web"
SOCKETIO_CLIENT_DIR = Path("node_modules") / "socket.io-client" / "dist"

# Static files of the widget: route (relative to /webhooks/web/) -> (file, content type, cache).
# The widget's own files are revalidated on every load so a deploy reaches visitors at once;
# the vendored socket.io client only changes with package-lock.json.
_NO_CACHE = "no-cache"
_VENDOR_CACHE = "public, max-age=86400"
_WIDGET_FILES: Dict[str, tuple[str, str, str]] = {
    "/widget.js": ("widget.js", "text/javascript; charset=utf-8", _NO_CACHE),
    "/widget.css": ("widget.css", "text/css; charset=utf-8", _NO_CACHE),
}
_VENDOR_FILES: Dict[str, tuple[str, str, str]] = {
    "/socket.io.min.js": ("socket.io.min.js", "text/javascript; charset=utf-8", _VENDOR_CACHE),
    "/socket.io.min.js.map": ("socket.io.min.js.map", "application/json", _VENDOR_CACHE),
}
SOCKETIO_MISSING_TEXT = (
    "posbot web widget: the socket.io browser client is not installed on this server.\n"
    "Run `npm ci` in the web/ directory of the posbot checkout (see docs/widget.md).\n"
)
# The demo page needs no inline script; a strict policy proves the widget does not either.
DEMO_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' https: data:; connect-src 'self' ws: wss:; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)

# Keywords that make a custom JSON a set of `AsyncServer.emit` arguments (Rasa's convention).
_EMIT_ARGUMENT_KEYS = frozenset({"data", "room"})


def normalise_origin(origin: str) -> str:
    """Lower-case scheme and host and drop a trailing slash, as browsers send ``Origin``."""
    origin = origin.strip().rstrip("/")
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return origin.lower()
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class OriginPolicy:
    """Decides which web origins may open a socket.io connection to the bot.

    Used as python-engineio's ``cors_allowed_origins`` callable: engineio then rejects other
    origins with 400 (also for WebSocket, where browsers apply no CORS at all) and answers
    allowed ones with ``Access-Control-Allow-Origin: <origin>``. The bot's own host is always
    allowed, so the demo page at ``/webhooks/web/`` works whatever the list says.
    """

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = [normalise_origin(origin) for origin in origins if origin.strip()]
        self.allow_all = "*" in self.origins

    def __call__(self, origin: Optional[str], environ: Optional[Mapping[str, Any]] = None) -> bool:
        if not origin:
            return True  # not a browser cross-site request: nothing for CORS to decide
        if self.allow_all:
            return True
        normalised = normalise_origin(origin)
        if normalised in self.origins:
            return True
        if environ is not None and self._is_same_host(normalised, environ):
            return True
        logger.info("Refused socket.io connection from origin %s (POSBOT_CORS_ORIGINS).", origin)
        return False

    @staticmethod
    def _is_same_host(origin: str, environ: Mapping[str, Any]) -> bool:
        """Same host as the request, whatever the scheme (TLS may end at a proxy)."""
        netloc = urlsplit(origin).netloc
        hosts = [environ.get("HTTP_HOST", ""), environ.get("HTTP_X_FORWARDED_HOST", "")]
        return any(netloc == host.split(",")[0].strip().lower() for host in hosts if host)


def client_manager(settings: Settings) -> Optional[AsyncRedisManager]:
    """python-socketio's Redis manager on ``POSBOT_REDIS_URL`` (channel
    ``POSBOT_SOCKETIO_CHANNEL``), or None: one server, sockets kept in memory.

    Only connecting is bounded in time: a read timeout would also end the manager's idle
    subscription every few seconds. The manager connects lazily and retries by itself.
    """
    if not settings.redis_url:
        return None
    return AsyncRedisManager(
        settings.redis_url,
        channel=settings.socketio_channel,
        redis_options={"socket_connect_timeout": 3, "socket_keepalive": True},
    )


class WebChatOutput(SocketIOOutput):
    """Rasa's socket.io output, with custom JSON messages that actually reach the widget."""

    @classmethod
    def name(cls) -> Text:
        """Responses meant only for the widget use ``channel: web`` in the domain."""
        return "web"

    async def send_custom_json(
        self, recipient_id: Text, json_message: Dict[Text, Any], **kwargs: Any
    ) -> None:
        """Emit a custom JSON as the ``bot_uttered`` payload, e.g. the handoff signal.

        Rasa passes the dict as keyword arguments to ``AsyncServer.emit``; that only works for
        ``{"data": ..., "room": ...}`` (the rasa-webchat convention, kept here) and raises
        ``TypeError`` for anything else, such as ``{"posbot": {"handoff": "started"}}``.
        A ``room`` in the message is ignored: a conversation's messages go to its own room only.
        """
        if "data" in json_message and set(json_message) <= _EMIT_ARGUMENT_KEYS:
            await self._send_message(recipient_id, json_message["data"])
            return
        await self._send_message(recipient_id, dict(json_message))


class TurnOutput(WebChatOutput):
    """The output of one merchant message: held until the turn is over, then emitted in order.

    A turn whose conversation cannot be stored (bot/outage.py) must not have shown its answer:
    ``discard`` drops what was held and the merchant reads only "请稍后再发一次". Rasa sends a
    turn's messages while it runs and stores the turn at its end, so holding them delays the
    first bubble of a turn by the rest of that turn (one NLU pass and its actions).
    """

    def __init__(self, sio: AsyncServer, bot_message_evt: Text) -> None:
        super().__init__(sio, bot_message_evt)
        self._held: List[tuple[Text, Any]] = []

    async def _send_message(self, socket_id: Text, message: Any) -> None:
        self._held.append((socket_id, message))

    def discard(self) -> None:
        self._held.clear()

    async def flush(self) -> None:
        held, self._held = self._held, []
        for socket_id, message in held:
            await super()._send_message(socket_id, message)


class _WebSocketBlueprint(SocketBlueprint):
    """Attaches socket.io like Rasa's blueprint and keeps its CORS headers single.

    engineio writes ``Access-Control-Allow-Origin`` on socket.io responses itself. When Rasa
    also runs with ``--cors``, Sanic-CORS would add a second header on the same response and
    browsers refuse a response with two; marking the request as already evaluated makes
    Sanic-CORS leave socket.io responses alone.
    """

    def register(self, app: Sanic, options: Dict[Text, Any]) -> None:
        """Attach socket.io to ``app`` and add the CORS marker for its path."""
        install_body_limits(app)
        super().register(app, options)
        socketio_path = "/" + str(self.ctx.socketio_path).strip("/")

        async def mark_socketio_cors_handled(request: Request) -> None:
            if request.path.rstrip("/") == socketio_path:
                setattr(request.ctx, SANIC_CORS_EVALUATED, "1")

        app.register_middleware(mark_socketio_cors_handled, "request")


class WebChatInput(SocketIOInput):
    """socket.io channel of the website widget, served under ``/webhooks/web/``."""

    @classmethod
    def name(cls) -> Text:
        """``web`` puts the blueprint at ``/webhooks/web/`` and tags user messages with it."""
        return "web"

    def __init__(
        self,
        user_message_evt: Text = "user_uttered",
        bot_message_evt: Text = "bot_uttered",
        namespace: Optional[Text] = None,
        session_persistence: bool = False,
        socketio_path: Optional[Text] = "/socket.io",
        jwt_key: Optional[Text] = None,
        jwt_method: Optional[Text] = "HS256",
        metadata_key: Optional[Text] = "metadata",
        *,
        cors_origins: Optional[List[str]] = None,
        web_root: Optional[Path] = None,
    ) -> None:
        """Same arguments as Rasa's channel (``from_credentials`` passes them by position).

        ``cors_origins`` defaults to ``Settings.from_env().cors_origins`` (POSBOT_CORS_ORIGINS)
        and ``web_root`` to the repository's ``web/``; tests pass both explicitly.
        """
        super().__init__(
            user_message_evt,
            bot_message_evt,
            namespace,
            session_persistence,
            socketio_path,
            jwt_key,
            jwt_method,
            metadata_key,
        )
        if cors_origins is None:
            cors_origins = Settings.from_env().cors_origins
        self.origin_policy = OriginPolicy(cors_origins)
        self.web_root = Path(web_root) if web_root is not None else WEB_ROOT

    def get_output_channel(self) -> Optional[OutputChannel]:
        """Output channel for messages Rasa sends outside a request (e.g. reminders)."""
        if self.sio is None:
            return super().get_output_channel()  # warns, returns None
        return WebChatOutput(self.sio, self.bot_message_evt)

    def _build_server(self) -> AsyncServer:
        """The socket.io server, with the origin check Rasa leaves switched off.

        With ``POSBOT_REDIS_URL`` set (several Rasa servers), emits go through python-socketio's
        ``AsyncRedisManager``: an agent's reply or a release emitted on one server reaches a
        widget connected to another. Each emit is delivered to this server's own sockets first,
        then published, so a Redis outage only stops the fan-out, never a reply on the server
        the widget is connected to.
        """
        cors_allowed_origins: Any = "*" if self.origin_policy.allow_all else self.origin_policy
        manager = client_manager(Settings.from_env())
        return AsyncServer(
            async_mode="sanic", cors_allowed_origins=cors_allowed_origins, client_manager=manager
        )

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """Socket.io handlers (as in Rasa 3.6.21, with the fixes above) and the widget files."""
        sio = self._build_server()
        self.sio = sio
        web_webhook = _WebSocketBlueprint(sio, self.socketio_path, "web_webhook", __name__)
        self._add_static_routes(web_webhook)
        # guard: a store or lock outage is answered with "请稍后再发一次" (bot/outage.py)
        self._add_socket_handlers(sio, guard(gate(on_new_message)))
        return web_webhook

    def _add_socket_handlers(
        self, sio: AsyncServer, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> None:
        @sio.on("connect", namespace=self.namespace)
        async def connect(sid: Text, environ: Dict, auth: Optional[Dict] = None) -> bool:
            if not self.jwt_key:
                logger.debug("User %s connected to the web widget socket.", sid)
                return True
            jwt_payload = None
            if auth and auth.get("token"):
                jwt_payload = rasa.core.channels.channel.decode_bearer_token(
                    auth.get("token"), self.jwt_key, self.jwt_algorithm
                )
            return bool(jwt_payload)

        @sio.on("disconnect", namespace=self.namespace)
        async def disconnect(sid: Text, *_: Any) -> None:
            logger.debug("User %s disconnected from the web widget socket.", sid)

        @sio.on("session_request", namespace=self.namespace)
        async def session_request(sid: Text, data: Optional[Dict] = None) -> None:
            if not isinstance(data, dict):
                data = {}
            session_id = data.get("session_id")
            if not isinstance(session_id, str) or not session_id.strip():
                session_id = uuid.uuid4().hex
            if self.session_persistence:
                entered = sio.enter_room(sid, session_id, namespace=self.namespace)
                if inspect.isawaitable(entered):  # coroutine since python-socketio 5
                    await entered
            await sio.emit("session_confirm", session_id, room=sid, namespace=self.namespace)
            logger.debug("Socket %s joined session %s.", sid, session_id)

        @sio.on(self.user_message_evt, namespace=self.namespace)
        async def handle_message(sid: Text, data: Any) -> None:
            if not isinstance(data, dict):
                logger.warning("Ignored a %s event without an object payload.", self.user_message_evt)
                return
            output_channel = TurnOutput(sio, self.bot_message_evt)
            if self.session_persistence:
                if not data.get("session_id"):
                    rasa.shared.utils.io.raise_warning(
                        "A message without a valid session_id was received. This message will "
                        "be ignored. Make sure to set a proper session id using the "
                        "`session_request` socketIO event."
                    )
                    return
                sender_id = str(data["session_id"])
            else:
                sender_id = sid

            message = UserMessage(
                str(data.get("message") or ""),
                output_channel,
                sender_id,
                input_channel=self.name(),
                metadata=self._metadata(data),
            )
            try:
                await on_new_message(message)
            finally:  # after an unexpected error too: what the turn said before it still shows
                await output_channel.flush()

    def _metadata(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """The widget's ``metadata`` object; a malformed one must not drop the message."""
        metadata = data.get(self.metadata_key or "metadata") or {}
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                logger.warning("Ignored metadata that is not JSON: %.100s", metadata)
                return {}
        if not isinstance(metadata, dict):
            logger.warning("Ignored metadata of type %s.", type(metadata).__name__)
            return {}
        return metadata

    def _add_static_routes(self, bp: Blueprint) -> None:
        web_root = self.web_root
        vendor_dir = web_root / SOCKETIO_CLIENT_DIR

        @bp.route("/", methods=["GET"])
        async def demo_page(_: Request) -> HTTPResponse:
            """A merchant-service page with the widget, for demos and the browser tests."""
            return await _serve(
                web_root / "index.html",
                "text/html; charset=utf-8",
                _NO_CACHE,
                {"Content-Security-Policy": DEMO_PAGE_CSP},
            )

        @bp.route("/health", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            """Rasa's channel health check, moved off ``/`` which is now the demo page."""
            return response.json({"status": "ok"})

        for route, (filename, content_type, cache) in _WIDGET_FILES.items():
            bp.add_route(
                _file_handler(web_root / filename, content_type, cache),
                route,
                methods=["GET"],
                name=f"web_{filename.replace('.', '_')}",
            )
        for route, (filename, content_type, cache) in _VENDOR_FILES.items():
            bp.add_route(
                _vendor_handler(vendor_dir / filename, content_type, cache),
                route,
                methods=["GET"],
                name=f"web_{filename.replace('.', '_')}",
            )


async def _serve(
    path: Path, content_type: str, cache: str, extra_headers: Optional[Dict[str, str]] = None
) -> HTTPResponse:
    if not path.is_file():
        logger.error("Web widget file %s is missing from this deployment.", path)
        return response.text(f"{path.name} is missing on this server.\n", status=404)
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    headers.update(extra_headers or {})
    return await response.file(path, mime_type=content_type, headers=headers)


def _file_handler(
    path: Path, content_type: str, cache: str
) -> Callable[[Request], Coroutine[Any, Any, HTTPResponse]]:
    async def handler(_: Request) -> HTTPResponse:
        return await _serve(path, content_type, cache)

    return handler


def _vendor_handler(
    path: Path, content_type: str, cache: str
) -> Callable[[Request], Coroutine[Any, Any, HTTPResponse]]:
    """The npm-installed socket.io client; a 503 that says what to run if it is absent."""

    async def handler(_: Request) -> HTTPResponse:
        if not path.is_file():
            logger.error("%s is missing: run `npm ci` in the web/ directory.", path)
            return response.text(SOCKETIO_MISSING_TEXT, status=503, headers={"Retry-After": "3600"})
        return await _serve(path, content_type, cache)

    return handler
