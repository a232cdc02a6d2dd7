"""What the channel says by itself comes from bot/channels/wechat_texts.yml (texts.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.channels.wechat import TEXTS_PATH, WeChatInput, WeChatTexts
from tests.channels.wechat.kit import TEXTS, USER, FakeWeChatClient, agent_says, make_settings


@pytest.mark.asyncio
async def test_the_agent_line_comes_from_the_texts_file(tmp_path: Any) -> None:
    import yaml

    assert TEXTS.agent_line("王芳") == "【人工客服 王芳】"
    data = yaml.safe_load(TEXTS_PATH.read_text(encoding="utf-8"))
    changed = tmp_path / "texts.yml"
    changed.write_text(
        yaml.safe_dump({**data, "agent_prefix": "客服{name}："}, allow_unicode=True), encoding="utf-8"
    )
    client = FakeWeChatClient()
    channel = WeChatInput(make_settings(), texts=WeChatTexts.load(changed), wechat_client=client)
    await channel.get_output_channel().send_response(USER, agent_says("李", "好的"))
    assert client.message.sent == [(USER, "客服李：\n好的")]
    changed.write_text(yaml.safe_dump({**data, "agent_prefix": "【{agent}】"}), encoding="utf-8")
    with pytest.raises(ValueError, match="agent_prefix"):
        WeChatTexts.load(changed)


def test_texts_file_documents_menu_mapping() -> None:
    assert TEXTS.menu_header == "回复数字选择："
    assert TEXTS.continuation_marker == "(内容较长,回复“继续”查看)"
    assert TEXTS.subscribe_payload == "/greet"
    assert TEXTS.menu_click_payloads == {
        "MENU_FAULT": "/fault_hardware",
        "MENU_ERROR_CODE": "/error_code",
        "MENU_FEES": "/fees",
        "MENU_SUPPORT": "/contact_support",
        "MENU_HUMAN": "/human_handoff",
    }
