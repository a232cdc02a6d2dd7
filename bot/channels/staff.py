"""The staff console at /staff/ (issue 16, part 1): log in, see the handoffs, release them.

Mounted by `rasa run` as an input channel (bot/credentials.yml), so it is served by the bot
itself; it never receives merchants' messages. Security:

* every API route refuses without a session (401); the session is a random token in an
  HttpOnly, SameSite=Strict cookie scoped to /staff (Secure behind HTTPS), stored hashed;
* every state-changing request needs the session's CSRF token in ``X-CSRF-Token`` (403), and a
  cross-site ``Origin`` is refused (403);
* roles are enforced here: releasing needs ``agent``, the learning queue ``editor``, the audit
  log ``admin``;
* logins are throttled (staff/accounts.py: 5 failures per name or 20 per address in 15 minutes → 429);
* logins, logouts and releases (and teach/ignore in the learning queue) are written to the
  audit log.

The learning queue (questions the bot could not answer, taught from the console) is
bot/channels/learning.py, mounted here under /staff/api/learning.

An agent's words reach the merchant in the channel they last wrote from (``push_in_rasa``): the
widget at once, WeChat as a customer-service message or with the reply to their next message,
REST clients through GET /webhooks/rest/messages; the reply route says which
(``delivered``/``reason``, bot/channels/delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Text, Union
from urllib.parse import quote, urlparse

import requests
from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.api_token import own_url, rasa_token
from bot.channels.dashboard import Dashboard
from bot.channels.delivery import (
    NOT_ACCEPTED,
    RECEIPT_KEY,
    Delivery,
    KeepsUndelivered,
    agent_said,
    delivery_via,
    input_channel,
)
from bot.channels.kb_editor import KbEditor
from bot.channels.learning import Learning
from bot.channels.publish import Publish
from kb.store import shared_store
from records.store import HANDOFF_ACTIVE, HANDOFF_NO_AGENT, HANDOFF_WAITING, RecordStore
from staff.accounts import SESSION_HOURS, SessionView, StaffStore, Throttled
from staff.handoff import ReleaseError, release

logger = logging.getLogger(__name__)

COOKIE = "posbot_staff"
CSRF_HEADER = "X-CSRF-Token"
STAFF_ROOT = Path(__file__).resolve().parent.parent.parent / "web" / "staff"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
FILES = {"": ("index.html", "text/html; charset=utf-8")}
#: The page's other files: any script or style sheet in web/staff/ (flat names only).
ASSET = re.compile(r"^[a-z][a-z0-9_-]*\.(js|css)$")
ASSET_TYPES = {"js": "application/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
#: How many of a conversation's latest messages the inbox shows.
TRANSCRIPT = 30

Releaser = Callable[[RecordStore, int, Request], Awaitable[Any]]
#: Sends ``{"posbot": …}`` into a conversation; says whether Rasa took it and where it went.
Pusher = Callable[[Request, str, Dict[str, Any]], Awaitable[Delivery]]
MAX_REPLY = 1000
JOINED_RESPONSE = "utter_agent_joined"


def _json(body: Any, status: int = 200) -> HTTPResponse:
    return response.json(body, status=status, headers={"Cache-Control": "no-store"}, ensure_ascii=False)


def _error(status: int, message: str) -> HTTPResponse:
    return _json({"error": message}, status)


async def release_in_rasa(records: RecordStore, handoff_id: int, request: Request) -> Any:
    """Resume the conversation through this server's own HTTP API, as `posbot handoff release`
    does (in a thread: the call comes back to this event loop)."""
    url = own_url(request)
    token = rasa_token(create=False)
    return await asyncio.to_thread(release, records, handoff_id, url, token=token)


async def push_in_rasa(request: Request, conversation_id: str, posbot: Dict[str, Any]) -> Delivery:
    """Append a bot event carrying ``{"posbot": …}`` to the conversation and deliver it through
    the merchant's channel (Rasa's ``execute_side_effects`` with ``output_channel=latest``):
    the widget shows it at once, WeChat sends a customer-service message (or keeps it for the
    merchant's next message), REST clients fetch it from GET /webhooks/rest/messages. The event
    carries a receipt id, under which the channel records what it did (bot/channels/delivery.py).
    """
    url = f"{own_url(request)}/conversations/" f"{quote(conversation_id, safe='')}/tracker/events"
    params = {
        "token": rasa_token(create=False),
        "execute_side_effects": "true",
        "output_channel": "latest",
        "include_events": "NONE",
    }
    receipt = uuid.uuid4().hex
    body = {
        "event": "bot",
        "text": None,
        "data": {"custom": {"posbot": posbot}},
        "metadata": {RECEIPT_KEY: receipt},
    }
    try:
        reply = await asyncio.to_thread(requests.post, url, json=body, params=params, timeout=30)
    except requests.RequestException:
        logger.exception("could not deliver to conversation %s", conversation_id)
        return Delivery(False, False, NOT_ACCEPTED)
    if not reply.ok:
        logger.error(
            "Rasa refused a message for %s: HTTP %s %s", conversation_id, reply.status_code, reply.text[:200]
        )
        return Delivery(False, False, NOT_ACCEPTED)
    try:
        channel_name = reply.json().get("latest_input_channel")
    except ValueError:
        channel_name = None
    return await delivery_via(input_channel(request.app, channel_name), receipt)


def response_text(request: Request, response_name: str, **values: str) -> str:
    """A response of the bot's domain (merchant-facing text lives in bot/domain)."""
    agent = getattr(getattr(request.app, "ctx", None), "agent", None)
    domain = getattr(agent, "domain", None)
    variants = (getattr(domain, "responses", None) or {}).get(response_name) or [{}]
    return str(variants[0].get("text") or "").format(**values)


class StaffConsole(InputChannel):
    @classmethod
    def name(cls) -> Text:
        return "staff"

    def url_prefix(self) -> Text:
        return "/staff"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        return cls()

    def __init__(
        self,
        store: Optional[StaffStore] = None,
        records: Optional[RecordStore] = None,
        releaser: Optional[Releaser] = None,
        root: Optional[Path] = None,
        pusher: Optional[Pusher] = None,
        learning: Optional[Learning] = None,
        kb_editor: Optional[KbEditor] = None,
        dashboard: Optional[Dashboard] = None,
        publish: Optional[Publish] = None,
    ) -> None:
        self._store = store
        self._records = records
        self.releaser = releaser or release_in_rasa
        self.pusher = pusher or push_in_rasa
        self.root = root or STAFF_ROOT
        self.learning = learning or Learning()
        self.kb_editor = kb_editor or KbEditor()
        self.dashboard = dashboard or Dashboard()
        self.publish = publish or Publish()

    @property
    def store(self) -> StaffStore:
        if self._store is None:
            self._store = StaffStore(shared_store().engine)
        return self._store

    @property
    def records(self) -> RecordStore:
        if self._records is None:
            self._records = RecordStore(shared_store().engine)
        return self._records

    # ------------------------------------------------------------------ helpers
    def _session(self, request: Request) -> Optional[SessionView]:
        return self.store.session(request.cookies.get(COOKIE))

    @staticmethod
    def _same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin:
            return True
        return urlparse(origin).netloc.lower() == str(request.host).lower()

    def _signed_in(self, request: Request, role: str, *, changes: bool) -> Union[SessionView, HTTPResponse]:
        """The caller's session when it may do this (``role``; ``changes``: a same-origin
        request with the CSRF token), else the refusal to answer with (401 or 403)."""
        session = self._session(request)
        if session is None:
            return _error(401, "请先登录")
        if changes and not self._same_origin(request):
            return _error(403, "这个请求来自其他网站，已拒绝；请在客服后台页面里操作")
        if changes and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
            return _error(403, "请求缺少有效的 CSRF 令牌，请刷新页面后重试")
        if not session.user.can(role):
            return _error(403, "您的账号没有这个权限")
        return session

    def _guard(
        self, request: Request, role: str, *, changes: bool
    ) -> tuple[Optional[SessionView], Optional[HTTPResponse]]:
        """:meth:`_signed_in` as ``(session, None)`` or ``(None, refusal)``."""
        found = self._signed_in(request, role, changes=changes)
        return (None, found) if isinstance(found, HTTPResponse) else (found, None)

    @staticmethod
    def _address(request: Request) -> str:
        return str(request.remote_addr or request.ip or "?")

    @staticmethod
    async def _conversation(
        request: Request, conversation_id: str
    ) -> tuple[list[dict[str, str]], Optional[str]]:
        """The latest messages of the conversation, and the channel the merchant wrote from."""
        agent = getattr(getattr(request.app, "ctx", None), "agent", None)
        store = getattr(agent, "tracker_store", None)
        if store is None:
            return [], None
        try:
            tracker = await store.retrieve(conversation_id)
        except Exception:  # a store outage must not take the inbox down
            logger.exception("could not read conversation %s", conversation_id)
            return [], None
        if tracker is None:
            return [], None
        lines: list[dict[str, Any]] = []
        offered: dict[str, str] = {}  # payload → title of the buttons the bot showed last
        for event in tracker.events:
            kind = getattr(event, "type_name", "")
            text = getattr(event, "text", None)
            data = getattr(event, "data", None) or {}
            said = agent_said(data.get("custom"))
            if kind == "bot" and said is not None:
                lines.append({"from": "agent", **said})
                continue
            if kind == "bot":
                buttons = [b for b in data.get("buttons") or [] if isinstance(b, dict) and b.get("title")]
                if buttons:
                    offered = {str(b.get("payload") or b["title"]): str(b["title"]) for b in buttons}
                if text or buttons:
                    line: dict[str, Any] = {"from": "bot", "text": str(text or "")}
                    if buttons:
                        line["buttons"] = [str(b["title"]) for b in buttons]
                    lines.append(line)
            elif kind == "user" and text:
                pressed = offered.get(str(text)) if str(text).startswith("/") else None
                if pressed is not None:  # a button: staff read its title, not "/affirm"
                    lines.append({"from": "merchant", "text": pressed, "pressed": True})
                else:
                    lines.append({"from": "merchant", "text": str(text)})
        return lines[-TRANSCRIPT:], tracker.get_latest_input_channel()

    @staticmethod
    async def _undelivered(request: Request, channel_name: Optional[str], conversation_id: str) -> int:
        """Messages the merchant's channel keeps for their next message (WeChat)."""
        channel = input_channel(request.app, channel_name)
        if not isinstance(channel, KeepsUndelivered):
            return 0
        try:
            return await channel.undelivered(conversation_id)
        except Exception:
            logger.exception("could not count undelivered messages of %s", conversation_id)
            return 0

    # ------------------------------------------------------------------ routes
    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("staff_console", __name__)

        async def page(request: Request, name: str = "") -> HTTPResponse:
            if name in FILES:
                filename, content_type = FILES[name]
            elif ASSET.match(name):
                filename, content_type = name, ASSET_TYPES[name.rsplit(".", 1)[1]]
            else:
                return response.text("not found\n", status=404)
            path = self.root / filename
            if not path.is_file():
                return response.text(f"{filename} is missing on this server.\n", status=404)
            return await response.file(
                path,
                mime_type=content_type,
                headers={
                    "Content-Security-Policy": PAGE_CSP,
                    "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-cache",
                },
            )

        bp.add_route(page, "/", methods=["GET"], name="page_index")
        bp.add_route(page, "/<name:str>", methods=["GET"], name="page_file")

        @bp.route("/api/login", methods=["POST"])
        async def login(request: Request) -> HTTPResponse:
            if not self._same_origin(request):
                return _error(403, "跨站请求被拒绝")
            body = request.json if isinstance(request.json, dict) else None
            name = body.get("name") if body else None
            password = body.get("password") if body else None
            if not isinstance(name, str) or not isinstance(password, str) or not name.strip():
                return _error(400, "请输入用户名和密码")
            try:
                # argon2 takes tens of milliseconds on purpose: not on the merchants' event loop
                user = await asyncio.to_thread(
                    self.store.authenticate, name.strip(), password, self._address(request)
                )
            except Throttled:
                self.store.audit(name.strip()[:60], "login_throttled", self._address(request))
                return _error(429, "登录失败次数太多，请 15 分钟后再试")
            if user is None:
                self.store.audit(name.strip()[:60], "login_failed", self._address(request))
                return _error(401, "用户名或密码不对")
            token, session = self.store.start_session(user)
            self.store.audit(user.name, "login", self._address(request))
            reply = _json({"name": user.name, "role": user.role, "csrf": session.csrf})
            secure = request.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"
            reply.cookies[COOKIE] = token
            cookie = reply.cookies[COOKIE]
            cookie["httponly"] = True
            cookie["samesite"] = "Strict"
            cookie["path"] = "/staff"
            cookie["max-age"] = SESSION_HOURS * 3600
            cookie["secure"] = secure
            return reply

        @bp.route("/api/logout", methods=["POST"])
        async def logout(request: Request) -> HTTPResponse:
            session = self._signed_in(request, "agent", changes=True)
            if isinstance(session, HTTPResponse):
                return session
            self.store.end_session(request.cookies.get(COOKIE))
            self.store.audit(session.user.name, "logout")
            reply = _json({"ok": True})
            del reply.cookies[COOKIE]
            return reply

        @bp.route("/api/me", methods=["GET"])
        async def me(request: Request) -> HTTPResponse:
            session = self._signed_in(request, "agent", changes=False)
            if isinstance(session, HTTPResponse):
                return session
            return _json({"name": session.user.name, "role": session.user.role, "csrf": session.csrf})

        @bp.route("/api/handoffs", methods=["GET"])
        async def handoffs(request: Request) -> HTTPResponse:
            session = self._signed_in(request, "agent", changes=False)
            if isinstance(session, HTTPResponse):
                return session
            status = request.args.get("status", "open")
            if status == "open":  # waiting, being answered, or asked while nobody was on duty
                # what this agent has to do first: their own chats, then the merchants waiting
                # longest, then those who asked while nobody was on duty, then colleagues' chats
                def order(h: Any) -> tuple[int, int]:
                    if h.status == HANDOFF_ACTIVE:
                        return (0 if h.agent == session.user.name else 3, h.id)
                    return (1 if h.status == HANDOFF_WAITING else 2, h.id)

                rows = sorted(
                    self.records.handoffs(HANDOFF_WAITING)
                    + self.records.handoffs(HANDOFF_ACTIVE)
                    + self.records.handoffs(HANDOFF_NO_AGENT),
                    key=order,
                )[:100]
            else:
                rows = self.records.handoffs(None if status == "all" else status)[-100:]
            items = []
            for row in rows:
                transcript, channel = await self._conversation(request, row.conversation_id)
                items.append(
                    {
                        "id": row.id,
                        "conversation_id": row.conversation_id,
                        "brand": row.brand,
                        "symptom": row.symptom,
                        "question": row.question,
                        "status": row.status,
                        "agent": row.agent,
                        "mine": row.agent == session.user.name,
                        "created_at": row.created_at.isoformat() + "Z",
                        "channel": channel,
                        "transcript": transcript,
                        "undelivered": await self._undelivered(request, channel, row.conversation_id),
                    }
                )
            return _json({"handoffs": items})

        @bp.route("/api/handoffs/<handoff_id:int>/release", methods=["POST"])
        async def release_handoff(request: Request, handoff_id: int) -> HTTPResponse:
            session = self._signed_in(request, "agent", changes=True)
            if isinstance(session, HTTPResponse):
                return session
            if self.records.handoff(handoff_id) is None:
                return _error(404, "没有这个转人工记录")
            try:
                result = await self.releaser(self.records, handoff_id, request)
            except ReleaseError as error:
                logger.warning("release of handoff %s failed: %s", handoff_id, error)
                return _error(502, "机器人服务暂时无法恢复这个对话，请稍后再试")
            self.store.audit(session.user.name, "release", f"handoff:{handoff_id}")
            return _json(
                {
                    "id": handoff_id,
                    "released": True,
                    "merchant_notified": bool(getattr(result, "merchant_notified", False)),
                }
            )

        @bp.route("/api/handoffs/<handoff_id:int>/claim", methods=["POST"])
        async def claim(request: Request, handoff_id: int) -> HTTPResponse:
            session = self._signed_in(request, "agent", changes=True)
            if isinstance(session, HTTPResponse):
                return session
            if self.records.handoff(handoff_id) is None:
                return _error(404, "没有这个转人工记录")
            claimed = self.records.claim(handoff_id, session.user.name)
            if claimed is None:
                current = self.records.handoff(handoff_id)
                who = current.agent if current is not None and current.agent else "别人"
                return _error(409, f"这个对话已经由{who}接手或已结束")
            self.store.audit(session.user.name, "claim", f"handoff:{handoff_id}")
            shown = session.user.shown_name  # merchants see the display name, not the login
            joined = response_text(request, JOINED_RESPONSE, name=shown)
            result = await self.pusher(
                request,
                claimed.conversation_id,
                {"agent_message": {"name": shown, "text": joined}},
            )
            return _json({"id": handoff_id, "agent": session.user.name, "text": joined, **result.as_json()})

        @bp.route("/api/handoffs/<handoff_id:int>/reply", methods=["POST"])
        async def reply(request: Request, handoff_id: int) -> HTTPResponse:
            session = self._signed_in(request, "agent", changes=True)
            if isinstance(session, HTTPResponse):
                return session
            body = request.json if isinstance(request.json, dict) else {}
            text = body.get("text")
            if not isinstance(text, str):
                text = ""
            if not text.strip() or len(text) > MAX_REPLY:
                return _error(400, f"请输入 1 到 {MAX_REPLY} 个字的回复")
            row = self.records.handoff(handoff_id)
            if row is None:
                return _error(404, "没有这个转人工记录")
            if row.status != HANDOFF_ACTIVE or row.agent != session.user.name:
                return _error(409, "请先接手这个对话再回复")
            result = await self.pusher(
                request,
                row.conversation_id,
                {"agent_message": {"name": session.user.shown_name, "text": text.strip()}},
            )
            if not result.accepted:
                return _error(502, "消息没有发出去（机器人服务没有响应），请稍后重试")
            self.store.audit(session.user.name, "reply", f"handoff:{handoff_id}")
            # delivered: on the merchant's screen now; else the reason (kept for their next
            # message on WeChat, fetched by a REST client), shown under the message
            return _json({"id": handoff_id, **result.as_json()})

        @bp.route("/api/audit", methods=["GET"])
        async def audit(request: Request) -> HTTPResponse:
            session = self._signed_in(request, "admin", changes=False)
            if isinstance(session, HTTPResponse):
                return session
            return _json(
                {
                    "entries": [
                        {
                            "at": e.at.isoformat() + "Z",
                            "staff": e.staff,
                            "action": e.action,
                            "target": e.target,
                        }
                        for e in self.store.audit_entries()
                    ]
                }
            )

        self.learning.register(bp, self)
        self.kb_editor.register(bp, self)
        self.dashboard.register(bp, self)
        self.publish.register(bp, self)
        return bp
