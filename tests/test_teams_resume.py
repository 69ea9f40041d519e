"""A Teams answer whose replica died is closed by the janitor through the Teams adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.state.inflight import INTERRUPTED
from tests.fakes.bot_connector import FakeBotConnector

pytestmark = pytest.mark.usefixtures("teams_env")


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


async def test_an_activity_is_recorded_before_the_ack_and_forgotten_once_answered(
    make_service: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    from tests.fakes.dify import Fault

    dify_app.faults.append(Fault.slow_first_byte(1.0))
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    bot = await make_service(env, adapters=["teams"])
    activity = connector.channel_mention("record me")
    status, _, _ = await connector.deliver(bot.base_url, activity)
    assert status == 200
    redis, inflight = bot.store.redis, bot.bridge.inflight
    assert await redis.zcard(inflight.index) == 1  # recorded before Teams got its 200
    await connector.wait_for(
        lambda f: any("You said: record me" in (c.text or "") for c in f.sent()), within=15
    )
    for _ in range(50):
        if await redis.zcard(inflight.index) == 0:
            break
        await asyncio.sleep(0.05)
    assert await redis.zcard(inflight.index) == 0
