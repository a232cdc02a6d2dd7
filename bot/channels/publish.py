"""The staff console's "retrain and publish" (训练发布, issue 16), mounted under /staff/api/.

* ``GET /staff/api/model`` (editors and admins): the latest job — ``state`` idle, training,
  guard, publishing, published, refused or failed, with its start, the inputs that had changed,
  the guard's figures (held-out intent accuracy of the new and the serving model), each Rasa
  server's answer to ``PUT /model``, the tail of the training log — and the training inputs
  changed since the serving model now (``pending``).
* ``POST /staff/api/model/train`` (admins, CSRF): start a job (202); 409 while one runs; 200
  with ``started: false`` when nothing changed since the serving model.
* ``POST /staff/api/model/retry`` (admins, CSRF): publish the latest job's model again to the
  servers that do not serve it (after ``partial`` or a failed publish; 202); 409 otherwise.
* ``PUT /staff/api/model/load?token=…`` (the Rasa API token, not a session): what the job calls
  on each server to load the new model off the event loop (bot/channels/model_load.py).

``GET /staff/api/model`` also asks every server which model it serves now (``servers``: its
``GET /status``, 2 s at most each), so a cluster left mixed (a failed load, a restart) shows.

The job itself is bot/training.py. It publishes to the servers in ``POSBOT_RASA_URLS``
(bot/settings.py), by default the server the console runs in, with the Rasa API token
(bot/api_token.py, never shown). Starting and the outcome are written to the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

import requests
from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.api_token import TokenError, own_url, rasa_token
from bot.channels.model_load import ModelLoader
from bot.settings import Settings
from bot.training import Busy, NothingToRetry, NothingToTrain, Trainer

if TYPE_CHECKING:
    from bot.channels.staff import StaffConsole

logger = logging.getLogger(__name__)

#: Editors may watch; only admins start a training.
VIEW_ROLE, TRAIN_ROLE = "editor", "admin"
#: How many of the changed inputs the page lists.
SHOWN_INPUTS = 50
#: How long the state waits for each server's GET /status.
STATUS_TIMEOUT_S = 2


def _iso(seconds: Any) -> Optional[str]:
    if not isinstance(seconds, (int, float)) or not seconds:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


class Publish:
    """The routes, with the trainer, the token and the servers to publish to (injected by the
    tests; by default bot/training.py's, bot/api_token.py's and ``POSBOT_RASA_URLS``)."""

    def __init__(
        self,
        trainer: Optional[Trainer] = None,
        token: Optional[Callable[[], str]] = None,
        urls: Optional[Callable[[], list[str]]] = None,
        loader: Optional[ModelLoader] = None,
    ) -> None:
        self._trainer = trainer
        self.token = token or (lambda: rasa_token(create=False))
        self.urls = urls or (lambda: Settings.from_env().rasa_urls)
        self.loader = loader or ModelLoader(self.token)
        self.console: Optional[StaffConsole] = None

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            self._trainer = Trainer(on_finish=self._finished)
        elif self._trainer.on_finish is None:
            self._trainer.on_finish = self._finished
        return self._trainer

    def _finished(self, state: dict[str, Any]) -> None:
        """The outcome in the audit log, under the admin who started the job."""
        if self.console is None:
            return
        self.console.store.audit(
            str(state.get("by") or "?"),
            f"model_{state.get('state')}",
            str(state.get("model") or ""),
            json.dumps(
                {
                    "guard": state.get("guard"),
                    "instances": state.get("instances"),
                    "message": state.get("message"),
                },
                ensure_ascii=False,
            ),
        )

    def servers(self, urls: list[str]) -> list[dict[str, Any]]:
        """Which model each server serves now (its ``GET /status``)."""
        try:
            token = self.token()
        except (TokenError, OSError):
            return [{"url": url, "error": "没有 API 令牌，问不了"} for url in urls]
        found = []
        for url in urls:
            try:
                reply = requests.get(
                    url.rstrip("/") + "/status", params={"token": token}, timeout=STATUS_TIMEOUT_S
                )
                body = reply.json() if reply.ok else {}
                found.append(
                    {
                        "url": url,
                        "model_file": body.get("model_file"),
                        "model_id": body.get("model_id"),
                        "error": None if reply.ok else f"HTTP {reply.status_code}",
                    }
                )
            except (requests.RequestException, ValueError) as error:
                found.append({"url": url, "error": f"没有回答：{type(error).__name__}"})
        return found

    def status(self, role_can_train: bool, urls: Optional[list[str]] = None) -> dict[str, Any]:
        trainer = self.trainer
        state = trainer.state()
        pending = trainer.changed()
        serving = trainer.paths.serving
        stat = serving.stat() if serving.is_file() else None
        servers = self.servers(urls) if urls else []
        return {
            "state": state.get("state"),
            "message": state.get("message", ""),
            "by": state.get("by"),
            "model": state.get("model"),
            "started": _iso(state.get("started")),
            "finished": _iso(state.get("finished")),
            "changed": (state.get("changed") or [])[:SHOWN_INPUTS],
            "guard": state.get("guard"),
            "instances": state.get("instances") or [],
            "log": trainer.log_tail(),
            "serving": {
                "file": f"models/{serving.name}",
                "exists": stat is not None,
                "trained_at": _iso(stat.st_mtime) if stat else None,
            },
            "pending": pending[:SHOWN_INPUTS],
            "pending_count": len(pending),
            "can_train": role_can_train,
            "servers": servers,
            "mixed": len({s.get("model_id") for s in servers if not s.get("error")}) > 1,
            "can_retry": role_can_train
            and state.get("state") in ("partial", "failed")
            and bool(state.get("instances")),
        }

    def register(self, bp: Blueprint, console: StaffConsole) -> None:
        from bot.channels.staff import _error, _json

        self.console = console
        self.loader.register(bp)

        @bp.route("/api/model", methods=["GET"])
        async def model_state(request: Request) -> HTTPResponse:
            session = console._signed_in(request, VIEW_ROLE, changes=False)
            if isinstance(session, HTTPResponse):  # the refusal
                return session
            body = await asyncio.to_thread(
                self.status, session.user.can(TRAIN_ROLE), self.urls() or [own_url(request)]
            )
            return _json(body)

        @bp.route("/api/model/retry", methods=["POST"])
        async def model_retry(request: Request) -> HTTPResponse:
            session = console._signed_in(request, TRAIN_ROLE, changes=True)
            if isinstance(session, HTTPResponse):  # the refusal
                return session
            try:
                token = self.token()
            except (TokenError, OSError):
                logger.exception("no Rasa API token to publish a model with")
                return _error(
                    503,
                    "服务器上没有 Rasa API 令牌（POSBOT_RASA_TOKEN 或 var/rasa-token），"
                    "无法加载新模型，请联系管理员",
                )
            urls = self.urls() or [own_url(request)]
            try:
                state = await asyncio.to_thread(self.trainer.retry, session.user.name, urls, token)
            except Busy:
                return _error(409, "已经有一个训练或发布在进行，请等它结束")
            except NothingToRetry:
                return _error(409, "没有需要重试的发布（上一次发布已完成，或它的模型文件已不在）")
            console.store.audit(
                session.user.name,
                "model_retry",
                str(state["model"]),
                json.dumps({"urls": urls}, ensure_ascii=False),
            )
            return _json(
                {
                    "started": True,
                    "state": state["state"],
                    "model": state["model"],
                    "message": "正在重新发布：逐台加载，本页会自动刷新",
                },
                202,
            )

        @bp.route("/api/model/train", methods=["POST"])
        async def model_train(request: Request) -> HTTPResponse:
            session = console._signed_in(request, TRAIN_ROLE, changes=True)
            if isinstance(session, HTTPResponse):  # the refusal
                return session
            try:
                token = self.token()
            except (TokenError, OSError):
                logger.exception("no Rasa API token to publish a model with")
                return _error(
                    503,
                    "服务器上没有 Rasa API 令牌（POSBOT_RASA_TOKEN 或 var/rasa-token），"
                    "训练好也无法加载新模型，请联系管理员",
                )
            urls = self.urls() or [own_url(request)]

            def announce(state: dict[str, Any]) -> None:
                console.store.audit(
                    session.user.name,
                    "model_train",
                    str(state["model"]),
                    json.dumps(
                        {"changed": state["changed"][:SHOWN_INPUTS], "urls": urls}, ensure_ascii=False
                    ),
                )

            try:
                state = await asyncio.to_thread(self.trainer.start, session.user.name, urls, token, announce)
            except Busy:
                return _error(409, "已经有一个训练在进行，请等它结束")
            except NothingToTrain:
                return _json(
                    {"started": False, "message": "训练数据自正在使用的模型以来没有变化，" "不需要重新训练"}
                )
            return _json(
                {
                    "started": True,
                    "state": state["state"],
                    "model": state["model"],
                    "changed": state["changed"][:SHOWN_INPUTS],
                    "message": "已开始训练：训练、检查、发布大约需要几分钟，本页会自动刷新",
                },
                202,
            )
