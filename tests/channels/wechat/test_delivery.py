"""Customer-service messages (bot/channels/wechat/delivery.py): late answers, agents' replies and
other pushes, what WeChat refuses kept for the merchant's next message, receipts for the console."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.channels import delivery
from bot.channels.wechat import CONTENT_LIMIT_BYTES, InMemoryStore
from tests.channels.wechat.kit import (
    MENU_SCRIPT,
    TEXTS,
    USER,
    FakeBot,
    FakeMessageApi,
    FakeWeChatClient,
    agent_says,
    harness,
    message_xml,
    push,
    pushed,
    reply_content,
    text_xml,
)

# --------------------------------------------------------------------------------------------
# Slow answers
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_slow_bot_answers_success_then_customer_service_delivers() -> None:
    client = FakeWeChatClient()
    h = harness(
        FakeBot(delay_s=0.4, script={"查费率": [{"text": "费率为0.6%。"}]}),
        client=client,
        wechat_reply_budget_s=0.05,
        wechat_app_secret="secret",
    )
    started = time.perf_counter()
    response = await h.post_plain(text_xml("查费率", msg_id="555"))
    assert time.perf_counter() - started < 0.35
    assert response.status == 200 and response.text == "success"
    assert client.message.sent == []
    await h.channel.wait_for_background()
    assert client.message.sent == [(USER, "费率为0.6%。")]
    assert client.message.threads != [threading.get_ident()]  # blocking call off the loop
    retry = await h.post_plain(text_xml("查费率", msg_id="555"))
    assert retry.text == "success"
    assert len(h.bot.calls) == 1


@pytest.mark.asyncio
async def test_slow_bot_late_menu_is_remembered() -> None:
    client = FakeWeChatClient()
    bot = FakeBot(delay_s=0.2, script=MENU_SCRIPT)
    h = harness(bot, client=client, wechat_reply_budget_s=0.05)
    assert (await h.post_plain(text_xml("机器坏了"))).text == "success"
    await h.channel.wait_for_background()
    assert client.message.sent[0][1].endswith("2. 刷卡失败")
    bot.delay_s = 0
    assert await h.say("1") == "收到:/fault_printer"


@pytest.mark.asyncio
async def test_slow_bot_without_secret_logs_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness(FakeBot(delay_s=0.2), wechat_reply_budget_s=0.05, wechat_app_secret="")
    with caplog.at_level(logging.WARNING, logger="bot.channels.wechat"):
        response = await h.post_plain(text_xml("慢"))
        await h.channel.wait_for_background()
    assert response.text == "success"
    assert "could not be delivered" in caplog.text
    assert "WECHAT_APP_SECRET" in caplog.text


@pytest.mark.asyncio
async def test_customer_service_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(FakeMessageApi):
        def send_text(self, user_id: str, content: str, account: str | None = None) -> Any:
            raise RuntimeError("45015 response out of time limit")

    h = harness(
        FakeBot(delay_s=0.2),
        client=FakeWeChatClient(Broken()),
        wechat_reply_budget_s=0.05,
    )
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        await h.post_plain(text_xml("慢"))
        await h.channel.wait_for_background()
    assert "Customer-service message" in caplog.text


# --------------------------------------------------------------------------------------------
# Pushed messages: agent replies, messages kept for the merchant's next message
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_agent_reply_is_sent_as_a_customer_service_message_naming_the_agent() -> None:
    client = FakeWeChatClient()
    h = harness(client=client, wechat_app_secret="secret")
    await push(h, agent_says("王芳", "请把屏幕上的提示拍给我看看", receipt="r-1"))
    assert client.message.sent == [(USER, "【人工客服 王芳】\n请把屏幕上的提示拍给我看看")]
    assert client.message.threads != [threading.get_ident()]  # blocking call off the loop
    assert await h.channel.delivery_receipt("r-1") == delivery.DELIVERED
    assert await h.channel.undelivered(USER) == 0
    assert await h.say("好的") == "收到:好的"  # nothing left over for the next reply


@pytest.mark.asyncio
async def test_45015_keeps_the_reply_for_the_next_passive_reply_exactly_once() -> None:
    client = FakeWeChatClient(FakeMessageApi(refuse_with=45015))
    h = harness(client=client)
    await push(h, agent_says("王芳", "请把屏幕上的提示拍给我看看", receipt="r-2"))
    assert client.message.attempts == 1 and client.message.sent == []
    assert await h.channel.delivery_receipt("r-2") == delivery.Delivery(
        True, False, delivery.WECHAT_WINDOW_CLOSED
    )
    assert await h.channel.undelivered(USER) == 1
    assert await h.channel.undelivered("oSomeoneElse") == 0
    assert await h.say("你好", from_user="oSomeoneElse") == "收到:你好"

    xml = text_xml("在吗", msg_id="4501500001")
    first = reply_content(await h.post_plain(xml))
    assert first == "【人工客服 王芳】\n请把屏幕上的提示拍给我看看\n\n收到:在吗"
    assert reply_content(await h.post_plain(xml)) == first  # WeChat's retry: the same reply
    assert await h.channel.undelivered(USER) == 0
    assert await h.say("好的") == "收到:好的"
    assert h.bot.texts == ["你好", "在吗", "好的"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("errcode", "reason"),
    [
        (45015, delivery.WECHAT_WINDOW_CLOSED),
        (45047, delivery.WECHAT_LIMIT),
        (40001, delivery.WECHAT_ERROR),
    ],
)
async def test_every_refusal_is_reported_and_the_message_kept(errcode: int, reason: str) -> None:
    h = harness(client=FakeWeChatClient(FakeMessageApi(refuse_with=errcode)))
    await push(h, agent_says("王芳", "稍等", receipt="r"))
    assert await h.channel.delivery_receipt("r") == delivery.Delivery(True, False, reason)
    assert await h.say("在") == "【人工客服 王芳】\n稍等\n\n收到:在"


@pytest.mark.asyncio
async def test_without_an_app_secret_messages_wait_for_the_merchants_next_message() -> None:
    h = harness(wechat_app_secret="")
    await push(h, agent_says("王芳", "您好，我是人工客服王芳", receipt="r-3"))
    await push(h, agent_says("王芳", "请问机器是什么型号？", receipt="r-4"))
    for receipt in ("r-3", "r-4"):
        assert await h.channel.delivery_receipt(receipt) == delivery.Delivery(
            True, False, delivery.WECHAT_NO_SECRET
        )
    assert await h.channel.undelivered(USER) == 2
    assert await h.say("在") == (
        "【人工客服 王芳】\n您好，我是人工客服王芳\n\n" "【人工客服 王芳】\n请问机器是什么型号？\n\n收到:在"
    )
    assert await h.say("在吗") == "收到:在吗"


@pytest.mark.asyncio
async def test_kept_messages_go_out_first_once_wechat_takes_messages_again() -> None:
    api = FakeMessageApi(refuse_with=45015)
    h = harness(client=FakeWeChatClient(api))
    await push(h, agent_says("王芳", "第一条"))
    api.refuse_with = None
    await push(h, agent_says("王芳", "第二条", receipt="r-5"))
    assert api.sent == [(USER, "【人工客服 王芳】\n第一条\n\n【人工客服 王芳】\n第二条")]
    assert await h.channel.delivery_receipt("r-5") == delivery.DELIVERED
    assert await h.say("好") == "收到:好"


@pytest.mark.asyncio
async def test_pushed_bot_messages_keep_the_wechat_format_and_menu() -> None:
    client = FakeWeChatClient()
    h = harness(client=client)
    # `posbot handoff release`: utter_handoff_released, a text plus the widget's signal
    await push(h, pushed("人工客服已经处理完毕，我回来了。", custom={"posbot": {"handoff": "released"}}))
    await push(h, pushed("请问是哪种问题？", buttons=MENU_SCRIPT["机器坏了"][0]["buttons"]))
    await push(h, pushed(None, custom={"posbot": {"handoff": "started"}}))  # nothing to show
    assert client.message.sent == [
        (USER, "人工客服已经处理完毕，我回来了。"),
        (USER, "请问是哪种问题？\n回复数字选择：\n1. 打印机故障\n2. 刷卡失败"),
    ]
    assert await h.say("2") == "收到:/fault_card"


@pytest.mark.asyncio
async def test_a_kept_menu_is_numbered_together_with_the_next_answer() -> None:
    h = harness(FakeBot(script=MENU_SCRIPT), wechat_app_secret="")
    await push(h, pushed("要登记报修吗？", buttons=[{"title": "登记报修", "payload": "/ticket"}]))
    assert await h.say("机器坏了") == (
        "要登记报修吗？\n回复数字选择：\n1. 登记报修\n\n"
        "请问是哪种问题？\n回复数字选择：\n2. 打印机故障\n3. 刷卡失败"
    )
    assert json.loads(await h.channel.store.get(f"menu:{USER}") or "") == [
        "/ticket",
        "/fault_printer",
        "/fault_card",
    ]
    assert await h.say("3") == "收到:/fault_card"


@pytest.mark.asyncio
async def test_kept_messages_come_first_in_the_channels_own_replies_too() -> None:
    h = harness(wechat_app_secret="")
    await push(h, agent_says("王芳", "麻烦用文字说一下"))
    image = message_xml({"MsgType": "image", "PicUrl": "http://x/y.jpg", "MsgId": "770001"})
    assert reply_content(await h.post_plain(image)) == (
        "【人工客服 王芳】\n麻烦用文字说一下\n\n" + TEXTS.unsupported
    )
    await push(h, agent_says("王芳", "还在吗"))
    assert await h.say("继续") == "【人工客服 王芳】\n还在吗\n\n" + TEXTS.nothing_more
    assert h.bot.calls == []


@pytest.mark.asyncio
async def test_a_long_kept_message_is_paged_like_any_answer() -> None:
    h = harness(wechat_app_secret="")
    long_text = "。".join(f"第{i}步：检查打印机纸仓和电源" for i in range(120))
    await push(h, agent_says("王芳", long_text))
    pages = [await h.say("在")]
    while pages[-1].endswith(TEXTS.continuation_marker) and len(pages) < 10:
        pages.append(await h.say("继续"))
    assert len(pages) > 1
    assert all(len(page.encode("utf-8")) <= CONTENT_LIMIT_BYTES for page in pages)
    assert pages[0].startswith("【人工客服 王芳】\n第0步") and pages[-1].endswith("收到:在")


@pytest.mark.asyncio
async def test_a_slow_answer_without_secret_comes_with_the_next_reply() -> None:
    bot = FakeBot(delay_s=0.2, script={"慢": [{"text": "这是慢的回答。"}]})
    h = harness(bot, wechat_reply_budget_s=0.05, wechat_app_secret="")
    assert (await h.post_plain(text_xml("慢"))).text == "success"
    await h.channel.wait_for_background()
    bot.delay_s = 0
    assert await h.say("在吗") == "这是慢的回答。\n\n收到:在吗"


@pytest.mark.asyncio
async def test_a_push_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """Rasa's API would answer 500 if the output channel raised."""

    class BrokenStore(InMemoryStore):
        async def take_list(self, key: str) -> list[str]:
            raise RuntimeError("store down")

    h = harness(store=BrokenStore(), client=FakeWeChatClient())
    with caplog.at_level(logging.ERROR, logger="bot.channels.wechat"):
        await push(h, agent_says("王芳", "你好"))
    assert "Could not push" in caplog.text


@pytest.mark.asyncio
async def test_a_message_neither_sent_nor_kept_is_reported_as_such() -> None:
    class FullStore(InMemoryStore):
        async def append_list(
            self, key: str, values: list[str], ttl_s: float, *, front: bool = False
        ) -> bool:
            return False

    h = harness(store=FullStore(), client=FakeWeChatClient(FakeMessageApi(refuse_with=45015)))
    await push(h, agent_says("王芳", "你好", receipt="r-6"))
    assert await h.channel.delivery_receipt("r-6") == delivery.Delivery(True, False, delivery.WECHAT_NOT_KEPT)
    assert await h.channel.delivery_receipt("never-recorded") is None


@pytest.mark.asyncio
async def test_an_unreachable_access_token_cache_is_one_warning_not_a_traceback_per_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With several servers wechatpy reads the access token from Redis before each send."""

    class TokenCacheDown(FakeMessageApi):
        down = True

        def send_text(self, user_id: str, content: str, account: str | None = None) -> Any:
            if self.down:
                raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            return super().send_text(user_id, content, account)

    api = TokenCacheDown()
    h = harness(client=FakeWeChatClient(api))
    with caplog.at_level(logging.DEBUG, logger="bot.channels.wechat"):
        await push(h, agent_says("王芳", "第一条", receipt="r-8"))
        await push(h, agent_says("王芳", "第二条", receipt="r-9"))
    for receipt in ("r-8", "r-9"):
        assert await h.channel.delivery_receipt(receipt) == delivery.Delivery(
            True, False, delivery.WECHAT_ERROR
        )
    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in shown] == [
        "Redis unavailable for WeChat's access-token cache (ConnectionError: Error 111 "
        "connecting to 127.0.0.1:6379. Connection refused.); until it is back, "
        "customer-service messages cannot be sent (they are kept if possible)"
    ]
    assert not shown[0].exc_info
    assert [r.exc_info is not None for r in caplog.records if r.levelno == logging.DEBUG] == [
        True,
        True,
    ]  # each failure's traceback, at DEBUG

    api.down = False
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.channels.wechat"):
        await push(h, agent_says("王芳", "第三条", receipt="r-10"))
    assert api.sent == [
        (USER, "【人工客服 王芳】\n第一条\n\n【人工客服 王芳】\n第二条\n\n" "【人工客服 王芳】\n第三条")
    ]
    assert await h.channel.delivery_receipt("r-10") == delivery.DELIVERED
    assert [r.getMessage() for r in caplog.records] == [
        "Redis reachable again for WeChat's access-token cache (2 calls had failed)"
    ]
