"""Staff side of the human handoff: list waiting requests, release a paused conversation.

``action_handoff`` (actions/handoff.py) stores a row in ``handoffs`` and pauses the conversation
with Rasa's ConversationPaused event. Releasing it is the same HTTP call staff could make by hand
(see docs/conversations.md):

    POST {rasa}/conversations/{conversation_id}/tracker/events   {"event": "resume"}

after which the row is stamped released, the merchant gets ``utter_handoff_released`` through
``/conversations/{id}/execute?output_channel=latest`` — pushed where the channel can push (the
message is in the conversation history in any case) — and ``{"event": "action", "name":
"action_listen"}`` is appended so the next message starts a normal turn. The Rasa server must run with
``--enable-api --auth-token``; the token comes from :func:`bot.api_token.rasa_token`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional
from urllib.parse import quote

import requests

from kb.settings import Settings
from records.store import HANDOFF_RELEASED, HandoffView, RecordStore

logger = logging.getLogger(__name__)

RESUME_EVENT = {"event": "resume"}
LISTEN_EVENT = {"event": "action", "name": "action_listen"}
RELEASED_RESPONSE = "utter_handoff_released"


def rasa_url_from_env(env: Optional[Mapping[str, str]] = None) -> str:
    """``POSBOT_RASA_URL`` (the Rasa server staff talk to), default http://localhost:5005;
    validated with the other KB-side settings (kb/settings.py)."""
    return Settings.from_env(env).rasa_url


class ReleaseError(Exception):
    """The handoff could not be released; the row is left as it was."""


@dataclass(frozen=True)
class ReleaseResult:
    handoff: HandoffView
    already_released: bool
    merchant_notified: bool


def format_handoffs(handoffs: list[HandoffView]) -> str:
    if not handoffs:
        return "no handoffs waiting"
    lines = [f"{'id':>4}  {'status':8}  {'created (UTC)':19}  {'brand':8}  conversation / last messages"]
    for h in handoffs:
        lines.append(
            f"{h.id:>4}  {h.status:8}  {h.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{(h.brand or '-'):8}  {h.conversation_id}"
        )
        if h.question:
            lines.append(f"{'':>45}{h.question}")
    return "\n".join(lines)


def release(
    store: RecordStore,
    handoff_id: int,
    rasa_url: str,
    *,
    token: Optional[str] = None,
    session: Optional[requests.Session] = None,
    timeout: float = 10.0,
) -> ReleaseResult:
    """Resume the conversation in Rasa, then mark the row released and tell the merchant.

    Rasa first: if the server cannot be reached, nothing is marked and staff can simply retry.
    Releasing twice is harmless (resuming an active conversation changes nothing).
    """
    handoff = store.handoff(handoff_id)
    if handoff is None:
        raise ReleaseError(f"no handoff with id {handoff_id} (see `posbot handoff list --all`)")
    http = session or requests.Session()
    base = f"{rasa_url.rstrip('/')}/conversations/{quote(handoff.conversation_id, safe='')}"
    params: dict[str, Any] = {"token": token} if token else {}
    try:
        response = http.post(f"{base}/tracker/events", json=RESUME_EVENT, params=params, timeout=timeout)
    except requests.RequestException as exc:
        raise ReleaseError(f"Rasa at {rasa_url} is not reachable ({exc}); nothing was changed") from exc
    if not response.ok:
        raise ReleaseError(
            f"Rasa refused the resume event: HTTP {response.status_code} "
            f"{response.text[:200]} (is it running with --enable-api?)"
        )
    already = handoff.status == HANDOFF_RELEASED
    released = store.mark_released(handoff_id) or handoff
    notified = False
    try:
        if not already:
            said = http.post(
                f"{base}/execute",
                json={"name": RELEASED_RESPONSE},
                params={**params, "output_channel": "latest"},
                timeout=timeout,
            )
            notified = said.ok
        # The pause cut the dialogue off before the bot listened; without this the policies
        # would read the merchant's next message as if it came mid-turn.
        http.post(f"{base}/tracker/events", json=LISTEN_EVENT, params=params, timeout=timeout)
    except requests.RequestException:
        logger.warning(
            "conversation %s resumed, but the merchant was not told", handoff.conversation_id, exc_info=True
        )
    return ReleaseResult(released, already, notified)
