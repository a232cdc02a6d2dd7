"""A socket.io bot server for the browser tests: the real WebChatInput, a scripted agent.

The widget is tested against the channel exactly as `rasa run` mounts it (same blueprint, same
socket.io server, same output channel), but answers come from a script instead of a trained
model, so every test is deterministic and runs in a second. Started as its own process
(``python -m tests.browser.fake_bot --port N``) so a test can kill it to cut the connection
and start it again on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
from typing import Any, Dict, List
from urllib.parse import urljoin

from rasa.core.channels.channel import UserMessage
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.web import WebChatInput

logger = logging.getLogger(__name__)

# 1x1 blue PNG, served at /_test/image.png for the image-attachment reply.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

WELCOME = "您好，我是收银通智能客服。\n请问您的收银设备遇到了什么问题？"
WELCOME_BUTTONS = [
    {"title": "打印机不出纸", "payload": "/printer_no_paper"},
    {"title": "刷卡失败", "payload": "/card_failed"},
    {"title": "转人工客服", "payload": "/human_handoff"},
]
PRINTER_STEPS = (
    "请按以下步骤排查打印机不出纸：\n"
    "1. 打开纸仓盖，确认热敏面朝向打印头。\n"
    "2. 重新装纸后用力扣紧仓盖。\n"
    "3. 在收银机“设置 → 打印测试页”中试打一张。\n"
    "图解说明见 https://help.example.com/printer 。"
)
CARD_ANSWER = "刷卡失败时请记下屏幕上的错误代码，参考[刷卡故障排查指南](https://help.example.com/card)。"
AGENT_NAME = "小王"
AGENT_TEXT = "您好，我看到您的打印机不出纸了，请先打开纸仓盖看看。"
HANDOFF_TEXT = "正在为您转接人工客服，请稍候。"
RELEASE_TEXT = "人工客服已离开，有问题随时问我。"
SLOW_ANSWER = "查询完成：您的终端今天共有 12 笔交易。"
SLOW_SECONDS = 1.5


class ScriptedAgent:
    """Plays the part of ``app.ctx.agent``: records each message and answers from a script.

    Answers go through ``message.output_channel.send_response`` like Rasa's own message
    processor does, so text splitting, buttons -> quick_replies and custom JSON all take the
    same path as in production.
    """

    def __init__(self) -> None:
        self.received: List[Dict[str, Any]] = []

    async def handle_message(self, message: UserMessage) -> None:
        """Answer one user message (the ``on_new_message`` callback of the channel)."""
        text = message.text or ""
        self.received.append(
            {
                "sender_id": message.sender_id,
                "text": text,
                "metadata": message.metadata,
                "input_channel": message.input_channel,
            }
        )
        out = message.output_channel
        sender = message.sender_id
        if text == "/greet":
            await out.send_response(sender, {"text": WELCOME, "buttons": list(WELCOME_BUTTONS)})
        elif text == "/printer_no_paper" or "打印" in text:
            await out.send_response(sender, {"text": PRINTER_STEPS})
        elif text == "/card_failed":
            await out.send_response(sender, {"text": CARD_ANSWER})
        elif text == "/human_handoff" or "人工" in text:
            await out.send_response(sender, {"text": HANDOFF_TEXT})
            await out.send_response(sender, {"custom": {"posbot": {"handoff": "started"}}})
        elif text == "/agent":  # what the staff console sends when an agent replies
            await out.send_response(
                sender, {"custom": {"posbot": {"agent_message": {"name": AGENT_NAME, "text": AGENT_TEXT}}}}
            )
        elif text == "/release":
            await out.send_response(sender, {"custom": {"posbot": {"handoff": "released"}}})
            await out.send_response(sender, {"text": RELEASE_TEXT})
        elif "慢" in text:
            await asyncio.sleep(SLOW_SECONDS)
            await out.send_response(sender, {"text": SLOW_ANSWER})
        elif "图片" in text:
            await out.send_response(sender, {"text": "这是纸仓示意图："})
            await out.send_response(sender, {"image": "/_test/image.png"})
        else:
            await out.send_response(sender, {"text": f"已收到您的问题：{text}"})


SHOP_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>结账 · 示例商户</title></head>
<body><h1>结账</h1><p>一个嵌入了客服挂件的商户网站页面。</p>
<script src="{bot}/webhooks/web/widget.js" data-server="{bot}" data-text-title="收银帮助"
        defer></script>
</body></html>
"""


def build_app(port: int, name: str = "posbot_fake_bot") -> Sanic:
    """A Sanic app with the web channel mounted where `rasa run` mounts it."""
    app = Sanic(name)
    agent = ScriptedAgent()
    # Allowed origins from POSBOT_CORS_ORIGINS, as in production (the fixture sets it).
    channel = WebChatInput(session_persistence=True)
    app.blueprint(
        channel.blueprint(agent.handle_message),
        url_prefix=urljoin("/webhooks/", channel.url_prefix()),
    )

    @app.get("/_test/messages")
    async def messages(_: Request) -> HTTPResponse:
        return response.json(agent.received)

    @app.get("/_test/shop/<page>")
    async def shop(_: Request, page: str) -> HTTPResponse:
        """A merchant's page embedding the widget: open it as http://localhost:<port>/..., a
        different origin from the bot's http://127.0.0.1:<port> (both loopback, so Chromium's
        local-network checks allow it)."""
        return response.html(SHOP_PAGE.format(bot=f"http://127.0.0.1:{port}"))

    @app.get("/_test/image.png")
    async def image(_: Request) -> HTTPResponse:
        return response.raw(PIXEL_PNG, content_type="image/png")

    return app


def main() -> None:
    """Serve on 127.0.0.1:<port> until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    build_app(args.port).run(host="127.0.0.1", port=args.port, access_log=False, motd=False)


if __name__ == "__main__":
    main()
