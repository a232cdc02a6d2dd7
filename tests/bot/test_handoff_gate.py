"""The handoff gate's edges; the flows themselves run in tests/integration (real Rasa server)."""

from __future__ import annotations

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

import bot.handoff_gate as handoff_gate
from bot.handoff_gate import DEFAULT_TIMEOUT_MIN, gate, timeout_minutes


@pytest.mark.parametrize("raw, minutes", [("5", 5.0), ("0.5", 0.5), ("", DEFAULT_TIMEOUT_MIN),
                                          ("soon", DEFAULT_TIMEOUT_MIN)])
def test_the_timeout_comes_from_the_environment(raw: str, minutes: float) -> None:
    assert timeout_minutes({"POSBOT_HANDOFF_TIMEOUT_MIN": raw}) == minutes


@pytest.mark.asyncio
async def test_outside_the_rasa_server_messages_pass_on_untouched(monkeypatch) -> None:
    monkeypatch.setattr(handoff_gate, "rasa_agent", lambda: None)
    seen = []

    async def bot(message: UserMessage) -> str:
        seen.append(message.text)
        return "answered"

    message = UserMessage("取消转人工", CollectingOutputChannel(), "shop-1")
    assert await gate(bot)(message) == "answered"
    assert seen == ["取消转人工"]
