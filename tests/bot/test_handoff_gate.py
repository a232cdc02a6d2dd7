"""The handoff gate's edges; the flows themselves run in tests/integration (real Rasa server)."""

from __future__ import annotations

import logging

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from sqlalchemy.exc import OperationalError

import bot.handoff_gate as handoff_gate
from bot.handoff_gate import DEFAULT_TIMEOUT_MIN, gate, timeout_minutes


@pytest.mark.parametrize(
    "raw, minutes", [("5", 5.0), ("0.5", 0.5), ("", DEFAULT_TIMEOUT_MIN), ("soon", DEFAULT_TIMEOUT_MIN)]
)
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


@pytest.mark.asyncio
async def test_a_records_database_outage_logs_one_warning_line_per_message(monkeypatch, caplog) -> None:
    """The message goes on to the bot (which answers it, or the outage guard apologises);
    the log gets one WARNING line per message, without traceback, SQL or the merchant's text;
    the traceback is there at DEBUG."""
    monkeypatch.setattr(handoff_gate, "rasa_agent", lambda: object())

    def database_down():
        raise OperationalError(
            "SELECT handoffs.secret_column FROM handoffs", {}, ConnectionRefusedError("connection refused")
        )

    monkeypatch.setattr(handoff_gate, "shared_store", database_down)
    seen = []

    async def bot(message: UserMessage) -> str:
        seen.append(message.text)
        return "answered"

    caplog.set_level(logging.DEBUG, logger="bot.handoff_gate")
    for text in ("刷卡机没反应", "还是不行"):
        message = UserMessage(text, CollectingOutputChannel(), "shop-1")
        assert await gate(bot)(message) == "answered"
    assert seen == ["刷卡机没反应", "还是不行"]
    records = [r for r in caplog.records if r.name == "bot.handoff_gate"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "handoff gate: could not read the handoff of shop-1 (ConnectionRefusedError), "
        "passing the message on"
    ] * 2
    assert all(r.exc_info is None for r in records if r.levelno >= logging.INFO)
    assert not [r for r in records if r.levelno > logging.WARNING]
    debug = [r for r in records if r.levelno == logging.DEBUG]
    assert len(debug) == 2 and all(r.exc_info and r.exc_info[0] is OperationalError for r in debug)
    shown = "\n".join(r.getMessage() for r in warnings)
    assert "SELECT" not in shown and "刷卡机" not in shown
