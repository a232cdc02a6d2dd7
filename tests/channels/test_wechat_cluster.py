"""WeChat with two Rasa servers behind the balancer (issue 17): the state of the channel lives in
Redis, so it does not matter which server WeChat's request reaches.

Two channel instances ("server A", "server B") share one Redis store, as two Rasa servers with
the same POSBOT_REDIS_URL do. Uses the helpers (tests/channels/wechat/kit.py) and the Redis
fixture (tests/channels/wechat/conftest.py) of the channel's own tests.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.channels.wechat import RedisStore
from tests.channels.wechat.conftest import redis_store  # noqa: F401  (a fixture)
from tests.channels.wechat.kit import (
    TEXTS,
    FakeBot,
    harness,
    long_answer,
    reply_content,
    text_xml,
)


@pytest.mark.asyncio
async def test_a_retry_reaching_the_other_server_is_not_answered_twice(redis_store: RedisStore) -> None:
    """WeChat retries after 5 s; the retry lands on B while A is still working on it."""
    a = harness(
        FakeBot(script={"打印机不出纸": [{"text": "请先检查纸仓。"}]}, delay_s=1.0), store=redis_store
    )
    b = harness(FakeBot(), store=redis_store)
    xml = text_xml("打印机不出纸", msg_id="7001")

    first = asyncio.create_task(a.post_plain(xml))
    await asyncio.sleep(0.3)
    retry_meanwhile = await b.post_plain(xml)
    answered = reply_content(await first)
    retry_after = reply_content(await b.post_plain(xml))

    assert answered == "请先检查纸仓。"
    assert retry_meanwhile.status == 200 and retry_meanwhile.text == "success"  # no 2nd run
    assert retry_after == "请先检查纸仓。"  # the stored answer, from A's run
    assert a.bot.texts == ["打印机不出纸"] and b.bot.texts == []


@pytest.mark.asyncio
async def test_pages_continue_on_the_other_server(redis_store: RedisStore) -> None:
    answer = long_answer()
    a = harness(FakeBot(script={"怎么排查": [{"text": answer}]}), store=redis_store)
    b = harness(FakeBot(), store=redis_store)
    servers = [a, b]
    pages = [await a.say("怎么排查")]
    while pages[-1].endswith(TEXTS.continuation_marker):
        pages.append(await servers[len(pages) % 2].say("继续"))  # B, A, B, …
        assert len(pages) < 20
    shown = [p.removesuffix("\n" + TEXTS.continuation_marker) for p in pages]
    assert len(pages) >= 4 and "\n".join(shown) == answer
    assert await servers[len(pages) % 2].say("继续") == TEXTS.nothing_more
    assert b.bot.texts == []


class SlowRedisStore(RedisStore):
    """The shared Redis 20 ms away (another machine): every call waits first, so two requests
    being answered at once interleave between their calls, as they do in production."""

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store._redis, store._prefix)

    async def _network(self) -> None:
        await asyncio.sleep(0.02)

    async def get(self, key: str) -> str | None:
        await self._network()
        return await super().get(key)

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        await self._network()
        await super().set(key, value, ttl_s)

    async def delete(self, key: str) -> None:
        await self._network()
        await super().delete(key)

    async def pop_first(self, key: str, ttl_s: float) -> str | None:
        await self._network()
        return await super().pop_first(key, ttl_s)


@pytest.mark.asyncio
async def test_two_continues_at_once_on_two_servers_show_two_different_pages(redis_store: RedisStore) -> None:
    """A merchant taps "继续" twice; the requests reach A and B at the same moment."""
    answer = long_answer()
    slow = SlowRedisStore(redis_store)
    a = harness(FakeBot(script={"怎么排查": [{"text": answer}]}), store=slow)
    b = harness(FakeBot(), store=slow)
    first = await a.say("怎么排查")
    second, third = await asyncio.gather(a.say("继续"), b.say("继续"))
    assert len({first, second, third}) == 3, "a page shown twice, another skipped"
    rest = []
    while not rest or rest[-1].endswith(TEXTS.continuation_marker):
        rest.append(await a.say("继续"))
        assert len(rest) < 20
    pages = [first, *sorted([second, third], key=answer.find), *rest]
    shown = [p.removesuffix("\n" + TEXTS.continuation_marker) for p in pages]
    assert "\n".join(shown) == answer


@pytest.mark.asyncio
async def test_pop_first_takes_each_page_once_and_keeps_the_text_exact(redis_store: RedisStore) -> None:
    pages = ["第1页：http://pos.example.com/a/b 😀", '第2页："引号" \\ 反斜杠', "第3页"]
    await redis_store.set("pages:x", json.dumps(pages, ensure_ascii=False), 60)
    taken = [await redis_store.pop_first("pages:x", 60) for _ in range(4)]
    assert taken == [*pages, None]
    assert await redis_store.get("pages:x") is None
    await redis_store.set("pages:bad", "不是JSON", 60)
    assert await redis_store.pop_first("pages:bad", 60) is None
    assert await redis_store.get("pages:bad") is None
    await redis_store.set("pages:mid", json.dumps(pages, ensure_ascii=False), 60)
    await redis_store.pop_first("pages:mid", 60)
    assert json.loads(await redis_store.get("pages:mid") or "") == pages[1:]  # Python reads it
