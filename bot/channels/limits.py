"""Body limits of the merchant webhooks, enforced before a byte of the body is read.

Sanic 21.12 reads a request's whole body before any middleware or handler runs, up to the app's
``REQUEST_MAX_SIZE`` (100 MB). A merchant's message is a few hundred bytes, so a 5 MB JSON body
on ``/webhooks/rest/webhook`` is never legitimate; reading it in full is only work for an
attacker. The ``http.lifecycle.request`` signal fires when the headers are parsed, before the
body: a declared ``Content-Length`` over the route's limit gets 413 there, and a chunked body
(no length declared) gets 411. The admin API keeps Sanic's own limit (it is behind the token).
"""

from __future__ import annotations

from typing import Any, Optional

from sanic import Blueprint, Sanic
from sanic.exceptions import PayloadTooLarge, SanicException
from sanic.request import Request

#: Path prefix → largest body accepted (bytes). REST: sender + message (cut at 300 characters)
#: + metadata; WeChat: an encrypted XML envelope (the channel checks 64 KB again after parsing).
WEBHOOK_BODY_LIMITS: dict[str, int] = {
    "/webhooks/rest/": 32 * 1024,
    "/webhooks/wechat/": 64 * 1024,
    "/webhooks/web/": 32 * 1024,
}


class LengthRequired(SanicException):
    status_code = 411
    quiet = True


def body_limit(path: str) -> Optional[int]:
    for prefix, limit in WEBHOOK_BODY_LIMITS.items():
        if path.startswith(prefix):
            return limit
    return None


def check_declared_size(request: Request) -> None:
    """Raise 413/411 for a webhook request whose body would be too large; else do nothing."""
    limit = body_limit(request.path)
    if limit is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if (request.headers.get("transfer-encoding") or "").lower() == "chunked":
        raise LengthRequired("A webhook body must declare its Content-Length.")
    declared = (request.headers.get("content-length") or "0").strip()
    if not declared.isdigit():
        raise SanicException("Invalid Content-Length.", status_code=400, quiet=True)
    if int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit // 1024} KB.")


def install(app: Sanic) -> None:
    """Register the check once per app (each channel's blueprint calls this)."""
    if getattr(app.ctx, "posbot_body_limits", False):
        return
    app.ctx.posbot_body_limits = True

    async def refuse_oversized(request: Request, **_: Any) -> None:
        check_declared_size(request)

    app.add_signal(refuse_oversized, "http.lifecycle.request")


class LimitedBlueprint(Blueprint):
    """A blueprint that installs the webhook body limits on the app it is registered with."""

    def register(self, app: Sanic, options: dict[str, Any]) -> None:
        install(app)
        super().register(app, options)


def limited(blueprint: Blueprint) -> Blueprint:
    """Make a blueprint built elsewhere (Rasa's REST channel) install the limits too.

    Rasa builds that blueprint inside its own method; swapping its class for the subclass above
    (which adds no state, only the ``register`` step) is the least code that keeps Rasa's routes.
    """
    if type(blueprint) is Blueprint:
        blueprint.__class__ = LimitedBlueprint
    return blueprint
