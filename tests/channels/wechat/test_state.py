"""What the channel remembers (bot/channels/wechat/state.py): WeChat's retries are answered once,
menus are per merchant, and the stores: in memory, in Redis, and through a Redis outage."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import pytest

from bot.channels import delivery
from bot.channels.wechat import InMemoryStore, RedisStore
from tests.channels.wechat.kit import (
    MENU_SCRIPT,
    TEXTS,
    USER,
    FakeBot,
    agent_says,
    event_xml,
    harness,
    long_answer,
    push,
    reply_content,
    text_xml,
)

if TYPE_CHECKING:
    from tests.bot.outage_kit import Relay

# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_retry_with_same_msg_id_does_not_reach_bot_and_gets_same_reply() -> None:
    h = harness()
    xml = text_xml("POS机没反应", msg_id="6054768590064713728")
    first = reply_content(await h.post_plain(xml))
    second = reply_content(await h.post_plain(xml))
    assert first == second == "收到:POS机没反应"
    assert h.bot.texts == ["POS机没反应"]


@pytest.mark.asyncio
async def test_retry_of_continue_does_not_skip_a_page() -> None:
    h = harness(FakeBot(script={"怎么排查": [{"text": long_answer()}]}))
    await h.say("怎么排查")
    again = text_xml("继续", msg_id="777")
    assert reply_content(await h.post_plain(again)) == reply_content(await h.post_plain(again))
    third = await h.say("继续")
    assert third.startswith("第")
    assert third != reply_content(await h.post_plain(again))


@pytest.mark.asyncio
async def test_retry_while_first_is_running_gets_success() -> None:
    h = harness(FakeBot(delay_s=0.3))
    xml = text_xml("慢问题", msg_id="123123")
    first_task = asyncio.create_task(h.post_plain(xml))
    await asyncio.sleep(0.1)
    retry = await h.post_plain(xml)
    first = await first_task
    assert retry.status == 200 and retry.text == "success"
    assert reply_content(first) == "收到:慢问题"
    assert len(h.bot.calls) == 1


@pytest.mark.asyncio
async def test_event_retry_is_deduplicated_by_sender_and_create_time() -> None:
    h = harness()
    xml = event_xml("subscribe", create_time="1714036504")
    assert reply_content(await h.post_plain(xml)) == reply_content(await h.post_plain(xml))
    assert h.bot.texts == ["/greet"]
    other_user = event_xml("subscribe", create_time="1714036504", from_user="oOther")
    await h.post_plain(other_user)
    assert h.bot.texts == ["/greet", "/greet"]


# --------------------------------------------------------------------------------------------
# Menus
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_menus_are_per_user() -> None:
    h = harness(FakeBot(script=MENU_SCRIPT))
    await h.say("机器坏了", from_user="oAlice")
    assert await h.say("1", from_user="oBob") == "收到:1"
    assert await h.say("1", from_user="oAlice") == "收到:/fault_printer"


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_in_memory_store_expires_and_claims() -> None:
    now = [1000.0]
    store = InMemoryStore(max_entries=3, clock=lambda: now[0])
    assert await store.claim("a", "1", 10) is None
    assert await store.claim("a", "2", 10) == "1"
    now[0] += 11
    assert await store.get("a") is None
    assert await store.claim("a", "3", 10) is None
    for key in "bcd":
        await store.set(key, key, 10)
    assert len(store._data) <= 3  # bounded
    assert await store.get("d") == "d"
    await store.delete("d")
    assert await store.get("d") is None


@pytest.mark.asyncio
async def test_in_memory_lists_keep_order_expire_and_are_taken_once() -> None:
    now = [1000.0]
    store = InMemoryStore(clock=lambda: now[0])
    assert await store.take_list("k") == [] and await store.list_length("k") == 0
    assert await store.append_list("k", ["c"], 10)
    await store.append_list("k", ["d"], 10)
    await store.append_list("k", ["a", "b"], 10, front=True)
    assert await store.list_length("k") == 4
    assert await store.take_list("k") == ["a", "b", "c", "d"]
    assert await store.take_list("k") == []
    await store.append_list("k", ["x"], 10)
    now[0] += 11
    assert await store.list_length("k") == 0


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_redis_store_primitives(redis_store: RedisStore) -> None:
    assert await redis_store.claim("k", "first", 5) is None
    assert await redis_store.claim("k", "second", 5) == "first"
    await redis_store.set("s", json.dumps(["甲", "乙"]), 5)
    assert json.loads(await redis_store.get("s") or "") == ["甲", "乙"]
    await redis_store.delete("s")
    assert await redis_store.get("s") is None
    await redis_store.set("short", "x", 0.05)
    await asyncio.sleep(0.15)
    assert await redis_store.get("short") is None
    assert await redis_store.append_list("l", ["c"], 5)
    await redis_store.append_list("l", ["a", "b"], 5, front=True)
    await redis_store.append_list("l", ["d"], 5)
    assert await redis_store.list_length("l") == 4
    assert await redis_store.take_list("l") == ["a", "b", "c", "d"]
    assert await redis_store.take_list("l") == [] and await redis_store.list_length("l") == 0


@pytest.mark.asyncio
async def test_kept_messages_are_shared_through_redis_and_delivered_once(
    redis_store: RedisStore,
) -> None:
    one = harness(store=redis_store, wechat_app_secret="")
    await push(one, agent_says("王芳", "请稍等，我查一下", receipt="r-7"))
    other = harness(store=redis_store, wechat_app_secret="")  # a second server, same Redis
    assert await other.channel.delivery_receipt("r-7") == delivery.Delivery(
        True, False, delivery.WECHAT_NO_SECRET
    )
    assert await other.channel.undelivered(USER) == 1
    replies = await asyncio.gather(one.say("在"), other.say("在吗"))
    assert sum("请稍等，我查一下" in reply for reply in replies) == 1
    assert await one.channel.undelivered(USER) == 0


@pytest.mark.asyncio
async def test_channel_with_redis_store_dedupes_and_keeps_menu(
    redis_store: RedisStore,
) -> None:
    h = harness(FakeBot(script=MENU_SCRIPT), store=redis_store)
    xml = text_xml("机器坏了", msg_id="8888")
    first = reply_content(await h.post_plain(xml))
    assert reply_content(await h.post_plain(xml)) == first
    # a second server sharing the same Redis sees the same menu
    other = harness(FakeBot(), store=redis_store)
    assert await other.say("2") == "收到:/fault_card"
    assert h.bot.texts == ["机器坏了"]


@pytest.mark.asyncio
async def test_redis_outage_degrades_to_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="posbot-test-wechat:down:")
    h = harness(store=store)
    with caplog.at_level(logging.WARNING, logger="bot.channels.wechat"):
        assert await h.say("你好") == "收到:你好"
    assert "Redis unavailable" in caplog.text


@pytest.mark.asyncio
async def test_a_redis_outage_is_one_warning_per_kind_of_failure_and_one_when_it_is_back(
    relayed_redis: tuple[RedisStore, Relay],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What stops working is said once, with what merchants lose; no traceback per message
    (those are at DEBUG). Merchants are answered all along."""
    store, relay = relayed_redis
    h = harness(FakeBot(script=MENU_SCRIPT), store=store, wechat_app_secret="")
    assert (await h.say("机器坏了")).endswith("2. 刷卡失败")
    relay.cut()
    with caplog.at_level(logging.DEBUG, logger="bot.channels.wechat"):
        for _ in range(3):
            assert await h.say("1") == "收到:1"  # the menu cannot be read: "1" is plain text
            assert await h.say("继续") == TEXTS.nothing_more
            await push(h, agent_says("王芳", "稍等"))  # cannot be sent (no secret) nor kept
            assert await h.channel.undelivered(USER) == 0
    logged = [r for r in caplog.records if r.name.startswith("bot.channels.wechat")]
    assert [r for r in logged if r.levelno >= logging.WARNING and r.exc_info] == []
    assert len([r for r in logged if r.levelno == logging.DEBUG and r.exc_info]) >= 3 * 5
    unavailable = [
        r.getMessage()
        for r in logged
        if r.levelno == logging.WARNING and "Redis unavailable" in r.getMessage()
    ]
    losses = [
        "a retried message may be answered twice",
        "menus, unread pages and delivery receipts cannot be read",
        "menus, unread pages and delivery receipts are not stored",
        "cannot be kept for the merchant's next message",
        "messages kept for merchants cannot be read or counted",
    ]
    assert sorted(unavailable) == sorted(
        next(line for line in unavailable if loss in line) for loss in losses
    )  # each kind once, whatever the order, though every message failed them all again
    assert all("ConnectionError" in line for line in unavailable)
    assert [r.getMessage() for r in logged if r.levelno == logging.ERROR] == [
        f"A message for {USER} could not be sent nor kept: it is lost"
    ] * 3

    relay.restore()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.channels.wechat"):
        assert await h.say("机器坏了") == await h.say("机器坏了")
        assert await h.say("2") == "收到:/fault_card"  # the menu is remembered again
    back = [r.getMessage() for r in caplog.records if r.name.startswith("bot.channels.wechat")]
    assert len(back) == 1 and back[0].startswith("Redis reachable again")
