"""A Teams answer whose replica died is closed by the janitor through the Teams adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from app.inflight import INTERRUPTED
from tests.fakes.bot_connector import FakeBotConnector


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def connector() -> AsyncIterator[FakeBotConnector]:
    fake = FakeBotConnector()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(autouse=True)
def _fresh(connector: FakeBotConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    connector.reset()
    monkeypatch.setenv("MICROSOFT_TOKEN_URL", connector.token_url)


async def test_an_orphaned_channel_answer_is_replaced_with_a_clear_message(
    make_service: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.answer = "word " * 400
    dify_app.chunk_size = 5
    dify_app.chunk_delay = 0.05
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    bot = await make_service(env, adapters=["teams"])
    activity = connector.channel_mention("a long answer please")
    status, _, _ = await connector.deliver(bot.base_url, activity)
    assert status == 200
    await dify_app.wait_running()
    redis, index = bot.store.redis, bot.bridge.inflight.index
    for _ in range(100):  # the answer is recorded and something is visible in the chat
        if await redis.zcard(index) and connector.sent():
            break
        await asyncio.sleep(0.05)
    (answer_id,) = [i.decode() for i in await redis.zrange(index, 0, -1)]
    # As if this replica had died: its lease runs out and a janitor (any replica) sweeps.
    await bot.bridge.inflight.expire_now(answer_id)
    assert await bot.bridge.inflight.sweep() == 1
    assert any(INTERRUPTED in (c.text or "") for c in connector.sent())
