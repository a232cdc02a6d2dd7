"""The staff console's knowledge editor (issue 16): topics, error codes and brands, edited one at a
time, linted on save, live at once, with history and restore — mounted under /staff/api/kb/ by
bot/channels/staff.py.

Every route needs a session and the ``editor`` role (admins too; agents get 403); the ones that
change something need the CSRF token and are written to the audit log (``kb_save``,
``kb_create``, ``kb_restore``). The file and database work is kb/editing.py, run in a worker thread.

Routes:

* ``GET  /api/kb/items`` — every topic, error code and brand (for the list and its search), the
  form of each kind and the choices (intents, groups, brands, flows);
* ``GET  /api/kb/items/<kind>/<id>`` — one entity's fields, file, line and version;
* ``POST /api/kb/items/<kind>`` ``{"file", "fields"}`` — a new entity at the end of the file;
* ``POST /api/kb/items/<kind>/<id>`` ``{"fields", "version"}`` — save: 400 (bad input, or the
  linter's ``problems``: nothing written), 404, 409 (changed since loaded, or another editor is
  saving), 503;
* ``GET  /api/kb/history?kind=&id=`` — who changed what and when, newest first, with a diff;
* ``POST /api/kb/history/<n>/restore`` ``{"version"}`` — the entity back as it was before change
  n (itself a save);
* ``GET  /api/kb/try?q=`` — which topics and walks retrieval ranks for a question, with scores
  (the live KB, as the bot answers now).
"""

from __future__ import annotations

import asyncio
import json
import logging
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import unquote

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from kb.editing import (
    KINDS,
    Busy,
    HistoryStore,
    Invalid,
    NotFound,
    Refused,
    Saved,
    Stale,
    create,
    describe,
    entities,
    read_entity,
    restore,
    save,
    valid_id,
)
from kb.encoder import SentenceEncoder
from kb.learned import ContentCache, answer_choices
from kb.loader import CODE_GROUPS, FLOWS, Content
from kb.retrieval import confident, suggestions
from kb.settings import TOPIC_INTENTS, content_dir
from kb.store import KnowledgeStore, shared_store, warm_in_background

if TYPE_CHECKING:
    from bot.channels.staff import StaffConsole

logger = logging.getLogger(__name__)

#: Who may read and edit the knowledge base (admins too); agents answer merchants only.
ROLE = "editor"
MAX_QUESTION = 200
TRY_LIMIT = 5
HISTORY_LIMIT = 50


class BadRequest(ValueError):
    """A request the editor answers with 400 and this message."""


def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("请求内容必须是 JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("请求内容必须是 JSON 对象")
    return body


def _version(body: dict[str, Any]) -> str:
    version = body.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise BadRequest("缺少 version：请重新打开这个条目再保存")
    return version.strip()


def saved_message(saved: Saved, kind_label: str, restored: bool = False) -> str:
    if not saved.changed:
        return "没有改动，不需要保存"
    done = "已恢复并发布" if restored else "已保存并发布"
    if saved.version == "absent":
        return (
            f"{done}：{kind_label}「{saved.id}」已从 {saved.file} 里删掉（它是新加的，"
            "恢复就是撤销添加）。请记得在 git 里提交这个文件。"
        )
    return (
        f"{done}：{kind_label}「{saved.id}」写入了 {saved.file}，机器人从下一条消息起就按"
        "新内容回答（不用重启）。请记得在 git 里提交这个文件。"
    )


class KbEditor:
    """The editor's routes, with what they need: content folder, KB database, encoder."""

    def __init__(
        self,
        content: Optional[Path] = None,
        engine: Optional[Engine] = None,
        encoder: Optional[SentenceEncoder] = None,
        warm: bool = True,
    ) -> None:
        self.content_dir = content or content_dir()
        self._engine = engine
        self._encoder = encoder
        self.warm = warm
        self.cache = ContentCache()

    @property
    def engine(self) -> Engine:
        """The KB database (also the records database: one ``POSBOT_DATABASE_URL``)."""
        if self._engine is None:
            self._engine = shared_store().engine
        return self._engine

    def content(self) -> Content:
        return self.cache.get(self.content_dir)

    # ------------------------------------------------------------------ the work (in threads)
    def items(self) -> dict[str, Any]:
        content = self.content()
        flows = [f"walk:{s['id']}" for s in content.symptoms] + list(FLOWS)
        return {
            "items": entities(content),
            "kinds": {name: {"label": kind.label, "fields": describe(name)} for name, kind in KINDS.items()},
            "choices": {
                "intent": list(TOPIC_INTENTS),
                "group": list(CODE_GROUPS),
                "brands": [b["name"] for b in content.brands],
                "flow": flows,
            },
            "files": {name: kind.files(self.content_dir) for name, kind in KINDS.items()},
            "problems": [str(p) for p in content.problems],
        }

    def save(self, kind: str, entity_id: str, fields: Any, version: str, staff: str) -> Saved:
        saved = save(
            self.content_dir,
            kind,
            entity_id,
            fields,
            version,
            staff=staff,
            engine=self.engine,
            encoder=self._encoder,
        )
        if saved.changed:
            self._warm()
        return saved

    def create(self, kind: str, file: str, fields: Any, staff: str) -> Saved:
        saved = create(
            self.content_dir, kind, file, fields, staff=staff, engine=self.engine, encoder=self._encoder
        )
        self._warm()
        return saved

    def restore(self, history_id: int, version: str, staff: str) -> Saved:
        saved = restore(
            self.content_dir, history_id, version, staff=staff, engine=self.engine, encoder=self._encoder
        )
        if saved.changed:
            self._warm()
        return saved

    def try_question(self, question: str) -> dict[str, Any]:
        content = self.content()
        titles = {c["id"]: c for c in answer_choices(content)}
        matches = KnowledgeStore(self.engine).answer_index(self._encoder).rank(question, limit=TRY_LIMIT)
        shown = [
            {
                "id": m.topic_id,
                "kind": titles.get(m.topic_id, {}).get("kind", ""),
                "title": titles.get(m.topic_id, {}).get("title", m.topic_id),
                "score": round(m.score, 3),
                "meaning": round(m.meaning, 3),
                "words": round(m.words, 3),
                "nearest": m.question,
            }
            for m in matches
        ]
        if confident(matches):
            verdict = {"kind": "answer", "text": f"会直接回答「{shown[0]['title']}」（{shown[0]['id']}）"}
        elif suggestions(matches):
            offered = "、".join(
                f"「{titles.get(m.topic_id, {}).get('title', m.topic_id)}」" for m in suggestions(matches)
            )
            verdict = {"kind": "clarify", "text": f"不够确定，会问“您是想问”：{offered}"}
        else:
            verdict = {"kind": "none", "text": "没有足够接近的回答：机器人会说没听懂，请换个说法"}
        return {
            "question": question,
            "matches": shown,
            "verdict": verdict,
            "digest": KnowledgeStore(self.engine).digest(),
        }

    def _warm(self) -> None:
        """Fit the new retrieval indexes now, in the background, so neither the bot's next
        message (this process) nor the next "try it" waits for them."""
        if self.warm:
            warm_in_background(self.engine, "an edit")

    # ------------------------------------------------------------------ routes
    def register(self, bp: Blueprint, console: StaffConsole) -> None:
        from bot.channels.staff import _error, _json

        def refuse(request: Request, changes: bool) -> tuple[Any, Optional[HTTPResponse]]:
            return console._guard(request, ROLE, changes=changes)

        def entity_args(kind: str, entity_id: str) -> Optional[HTTPResponse]:
            """A refusal for a bad kind or id (the id comes URL-encoded: brand names are Chinese)."""
            if kind not in KINDS:
                return _error(404, f"没有这种条目：{kind[:40]}")
            if not valid_id(entity_id):
                return _error(400, "条目标识不对")
            return None

        def refused_body(refusal: Refused) -> HTTPResponse:
            return _json(
                {
                    "error": "内容检查没有通过，文件没有改动："
                    + "；".join(str(p) for p in refusal.problems[:3]),
                    "problems": [str(p) for p in refusal.problems],
                },
                400,
            )

        async def audit(staff: str, action: str, saved: Saved, **detail: Any) -> None:
            await asyncio.to_thread(
                console.store.audit,
                staff,
                action,
                f"{saved.kind}:{saved.id}"[:255],
                json.dumps({"file": saved.file, "history": saved.history_id, **detail}, ensure_ascii=False),
            )

        async def write(
            request: Request, work: Any, action: str, session: Any, **detail: Any
        ) -> HTTPResponse:
            try:
                saved = await asyncio.to_thread(work)
            except NotFound as missing:
                return _error(404, str(missing))
            except Invalid as bad:
                return _error(400, str(bad))
            except Stale as stale:
                return _json(
                    {
                        "error": "这个条目在您打开之后被别人改过了：请重新打开，看过最新内容后再改。"
                        "（您的修改没有保存，可以先复制下来）",
                        "version": stale.current,
                    },
                    409,
                )
            except Refused as refusal:
                return refused_body(refusal)
            except Busy:
                return _error(409, "另一位同事正在保存知识库，请稍后再试")
            except (OSError, SQLAlchemyError):
                logger.exception("knowledge editor: saving failed")
                return _error(503, "没有保存：写文件或更新知识库时出错，请稍后再试或联系管理员")
            if saved.changed:
                await audit(session.user.name, action, saved, **detail)
            label = KINDS[saved.kind].label
            return _json(
                {
                    "saved": saved.changed,
                    "kind": saved.kind,
                    "id": saved.id,
                    "file": saved.file,
                    "version": saved.version,
                    "history_id": saved.history_id or None,
                    "message": saved_message(saved, label, action == "kb_restore"),
                }
            )

        @bp.route("/api/kb/items", methods=["GET"])
        async def kb_items(request: Request) -> HTTPResponse:
            _, refused = refuse(request, False)
            if refused:
                return refused
            try:
                return _json(await asyncio.to_thread(self.items))
            except OSError:
                logger.exception("knowledge editor: cannot read the content")
                return _error(503, "读不到知识库文件，请联系管理员")

        @bp.route("/api/kb/items/<kind:str>/<entity_id:str>", methods=["GET"])
        async def kb_item(request: Request, kind: str, entity_id: str) -> HTTPResponse:
            _, refused = refuse(request, False)
            if refused:
                return refused
            entity_id = unquote(entity_id)
            bad = entity_args(kind, entity_id)
            if bad:
                return bad
            try:
                return _json(await asyncio.to_thread(read_entity, self.content_dir, kind, entity_id))
            except NotFound as missing:
                return _error(404, str(missing))
            except Refused as refusal:
                return refused_body(refusal)
            except OSError:
                logger.exception("knowledge editor: cannot read the content")
                return _error(503, "读不到知识库文件，请联系管理员")

        @bp.route("/api/kb/items/<kind:str>/<entity_id:str>", methods=["POST"])
        async def kb_save(request: Request, kind: str, entity_id: str) -> HTTPResponse:
            session, refused = refuse(request, True)
            if refused:
                return refused
            entity_id = unquote(entity_id)
            bad = entity_args(kind, entity_id)
            if bad:
                return bad
            try:
                body = _body(request)
                version = _version(body)
                if "fields" not in body:
                    raise BadRequest("缺少 fields：要保存的字段")
            except BadRequest as error:
                return _error(400, str(error))
            return await write(
                request,
                lambda: self.save(kind, entity_id, body["fields"], version, session.user.name),
                "kb_save",
                session,
            )

        @bp.route("/api/kb/items/<kind:str>", methods=["POST"])
        async def kb_create(request: Request, kind: str) -> HTTPResponse:
            session, refused = refuse(request, True)
            if refused:
                return refused
            if kind not in KINDS:
                return _error(404, f"没有这种条目：{kind[:40]}")
            try:
                body = _body(request)
                file = body.get("file")
                if not isinstance(file, str) or not file.strip():
                    raise BadRequest("请选择新条目要加到哪个文件（file）")
                if "fields" not in body:
                    raise BadRequest("缺少 fields：要保存的字段")
            except BadRequest as error:
                return _error(400, str(error))
            return await write(
                request,
                lambda: self.create(kind, file.strip(), body["fields"], session.user.name),
                "kb_create",
                session,
            )

        @bp.route("/api/kb/history", methods=["GET"])
        async def kb_history(request: Request) -> HTTPResponse:
            _, refused = refuse(request, False)
            if refused:
                return refused
            kind = request.args.get("kind") or None
            entity_id = request.args.get("id") or None
            if kind is not None and kind not in KINDS:
                return _error(400, f"没有这种条目：{kind[:40]}")
            if entity_id is not None and not valid_id(entity_id):
                return _error(400, "条目标识不对")
            try:
                rows = await asyncio.to_thread(
                    lambda: HistoryStore(self.engine).entries(kind, entity_id, HISTORY_LIMIT)
                )
            except SQLAlchemyError:
                logger.exception("knowledge editor: cannot read the history")
                return _error(503, "数据库暂时不可用，请稍后再试")
            return _json({"history": [row.as_json() for row in rows]})

        @bp.route("/api/kb/history/<history_id:int>/restore", methods=["POST"])
        async def kb_restore(request: Request, history_id: int) -> HTTPResponse:
            session, refused = refuse(request, True)
            if refused:
                return refused
            try:
                version = _version(_body(request))
            except BadRequest as error:
                return _error(400, str(error))
            return await write(
                request,
                lambda: self.restore(history_id, version, session.user.name),
                "kb_restore",
                session,
                restored_from=history_id,
            )

        @bp.route("/api/kb/try", methods=["GET"])
        async def kb_try(request: Request) -> HTTPResponse:
            _, refused = refuse(request, False)
            if refused:
                return refused
            question = unicodedata.normalize("NFC", request.args.get("q") or "").strip()
            if not question or len(question) > MAX_QUESTION:
                return _error(400, f"请输入 1 到 {MAX_QUESTION} 个字的问题")
            try:
                return _json(await asyncio.to_thread(self.try_question, question))
            except SQLAlchemyError:
                logger.exception("knowledge editor: the KB is not built")
                return _error(503, "知识库还没有构建（posbot kb build），暂时不能试")
