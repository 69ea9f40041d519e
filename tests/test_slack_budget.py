"""Slack's per-method limits as the adapter keeps them: per process (deterministic clock) and
shared by replicas through Redis (two budget objects on one Redis stand for two replicas)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis

from adapters.slack._budget import POST_BURST, POST_RATE, ChannelPacer, SlackBudgets, UpdateBudget
from app.state.budgets import SharedBudgets
from app.state.store import RedisStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_answers_open_messages_only_while_their_final_edit_stays_affordable() -> None:
    clock = Clock()
    b = UpdateBudget(45, interim_share=0.7, clock=clock)  # 31 for interim use
    opened = sum([await b.try_open() for _ in range(100)])
    assert opened == 31, "the rest keep to the status line and post their final text"
    # Interim edits have no room left: every reservation may still need its final edit.
    assert not await b.try_interim()
    # Finals may use the whole minute.
    assert all([await b.take_final() == 0 for _ in range(31)])
    for _ in range(31):
        b.release()
    assert sum([await b.take_final() == 0 for _ in range(20)]) == 14  # 45 per minute in total
    assert await b.take_final() > 0
    clock.now += 60
    assert await b.take_final() == 0, "the window slides"


async def test_interim_edits_leave_room_for_the_reserved_finals() -> None:
    clock = Clock()
    b = UpdateBudget(10, interim_share=0.5, clock=clock)  # 5 for interim use
    assert await b.try_open() and await b.try_open()
    assert [await b.try_interim() for _ in range(5)] == [True, True, True, False, False]
    assert await b.take_final() == 0 and await b.take_final() == 0


async def test_channel_pacer_allows_a_short_burst_then_paces_with_a_margin() -> None:
    clock = Clock()
    p = ChannelPacer(clock=clock)
    assert POST_RATE < 1.0 and POST_BURST < 3.0, "slower than Slack's ~1/s and burst of ~3"
    assert [await p.take("C1") for _ in range(2)] == [0, 0]
    assert await p.take("C1") > 1.0
    assert await p.take("C2") == 0, "channels are paced separately"
    clock.now += 1 / POST_RATE + 1e-6
    assert await p.take("C1") == 0


@pytest_asyncio.fixture(loop_scope="session")
async def two_replicas(redis_url: str) -> Any:
    """Two replicas' budgets (each its own connection) on one Redis, under a fresh prefix."""
    prefix = "t" + uuid.uuid4().hex[:10]
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    stores = [RedisStore(c, prefix=prefix) for c in clients]
    yield [SlackBudgets(shared=SharedBudgets(s)) for s in stores]
    for c in clients:
        await c.aclose()


async def test_replicas_share_one_channel_bucket(two_replicas: Any) -> None:
    a, b = two_replicas
    waits = await asyncio.gather(*(r.posts("T1").take("C1") for r in (a, b, a, b, a, b)))
    assert sorted(w == 0 for w in waits).count(True) == int(POST_BURST), "one burst for both"
    assert all(0 < w <= 1 / POST_RATE + 0.05 for w in waits if w), "each waits about a slot"
    assert await a.posts("T1").take("C2") == 0, "another channel has its own bucket"
    assert await b.posts("T2").take("C1") == 0, "another workspace too"


async def test_replicas_share_the_workspace_update_minute_and_its_reservations(
    two_replicas: Any,
) -> None:
    a, b = two_replicas
    ua, ub = a.updates("T1"), b.updates("T1")  # 45 a minute, 31 for interim use
    opened = [await (ua if n % 2 else ub).try_open(f"answer{n}") for n in range(40)]
    assert sum(opened) == 31, "both replicas' answers count against one share"
    assert not await ua.try_interim("answer1") and not await ub.try_interim("answer2")
    for n in range(31):
        (ua if n % 2 else ub).release(f"answer{n}")
    await asyncio.sleep(0.05)  # releases are sent without waiting for the answer
    finals = [await (ua if n % 2 else ub).take_final() for n in range(46)]
    assert finals[:45] == [0] * 45 and finals[45] > 0, "45 edits a minute in all"


async def test_a_replica_without_redis_still_paces_on_its_own(redis_url: str) -> None:
    broken = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    budgets = SlackBudgets(shared=SharedBudgets(RedisStore(broken, prefix="x"), deadline=0.3))
    try:
        waits = [await budgets.posts("T1").take("C1") for _ in range(3)]
    finally:
        await broken.aclose()
    assert waits[:2] == [0, 0] and waits[2] > 0


async def test_the_workspace_posts_no_more_than_slack_allows_in_a_minute(
    two_replicas: Any,
) -> None:
    from adapters.slack._budget import WORKSPACE_POSTS_PER_MINUTE as CAP

    a, b = two_replicas
    waits = await asyncio.gather(
        *((a if n % 2 else b).posts("T1").take(f"C{n}") for n in range(CAP + 2))
    )
    assert sorted(waits)[:CAP] == [0] * CAP, "a minute's worth goes at once, in any channels"
    assert all(50 < w <= 60 for w in sorted(waits)[CAP:]), "the rest waits for the minute"
    assert CAP < 300, "under Slack's several hundred a minute"


async def test_the_fake_slack_refuses_a_fourth_post_in_a_second_with_retry_after() -> None:
    # What our pacing is measured against: Slack's one post a second per channel, burst of three.
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    from tests.fakes.slack_api import FakeSlack

    fake = FakeSlack()
    await fake.start()
    team = fake.add_team("T1")
    client = AsyncWebClient(token=team.bot_token, base_url=fake.api_url)
    try:
        for n in range(3):
            await client.chat_postMessage(channel="C1", text=f"post {n}")
        await client.chat_postMessage(channel="C2", text="another channel")
        try:
            await client.chat_postMessage(channel="C1", text="one too many")
            raise AssertionError("the fourth post in a second was accepted")
        except SlackApiError as e:
            assert e.response.status_code == 429
            assert e.response["error"] == "ratelimited"
            assert int(e.response.headers["Retry-After"]) >= 1
        await asyncio.sleep(1.05)
        await client.chat_postMessage(channel="C1", text="after a second")
    finally:
        await fake.close()
