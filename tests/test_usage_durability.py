"""Token usage is billing data: a Redis that is slow or away delays the count, never loses it
silently, and a retried write never counts twice. Real Redis servers, stopped and started."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from structlog.testing import capture_logs

from app.state.limits import AbuseLimiter, UsageRow
from app.state.store import RedisStore
from tests.test_limits import Clock, msg, route, settings
from tests.test_redis_faults import RestartableRedis

MONTH = "2026-11"


@pytest.fixture
def own_redis() -> Iterator[RestartableRedis]:
    r = RestartableRedis()
    r.start()
    yield r
    r.stop()
    shutil.rmtree(r.dir, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def own_store(own_redis: RestartableRedis) -> AsyncIterator[RedisStore]:
    client: Redis = Redis.from_url(own_redis.url, socket_connect_timeout=0.3, socket_timeout=1.0)
    yield RedisStore(client, prefix="u" + uuid.uuid4().hex[:8])
    await client.aclose()


def limiter(store: RedisStore, **kw: int) -> AbuseLimiter:
    return AbuseLimiter(store, settings(), clock=Clock(datetime(2026, 11, 23, tzinfo=UTC)), **kw)


async def _until_written(lim: AbuseLimiter, timeout: float) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while lim.pending_usage:  # noqa: ASYNC110 - the writer's queue has no event to await
            await asyncio.sleep(0.05)


async def test_usage_recorded_while_redis_is_down_is_counted_once_redis_is_back(
    own_redis: RestartableRedis, own_store: RedisStore
) -> None:
    lim = limiter(own_store)
    own_redis.stop()
    started = time.monotonic()
    await lim.record_usage(msg("alice"), route("helpdesk"), 120)
    await lim.record_usage(msg("bob"), route("helpdesk"), 30)
    assert time.monotonic() - started < 4  # the answer's end is not held up for long
    assert lim.pending_usage == 2  # waiting in memory, not dropped
    own_redis.start()
    await _until_written(lim, timeout=15)
    assert await lim.usage(month=MONTH) == [
        UsageRow("helpdesk", "slack:T1", "alice", 120),
        UsageRow("helpdesk", "slack:T1", "bob", 30),
    ]
    assert await lim.aclose(timeout=1) == 0


async def test_a_retried_write_of_the_same_answer_is_counted_once(own_store: RedisStore) -> None:
    lim = limiter(own_store)
    answer = msg("alice")
    # The first write landed but its reply was lost; the retry sends the same answer again.
    await lim.record_usage(answer, route("helpdesk"), 500)
    await lim.record_usage(answer, route("helpdesk"), 500)
    await lim.record_usage(msg("alice"), route("helpdesk"), 1)  # another answer counts
    assert await lim.usage(month=MONTH) == [UsageRow("helpdesk", "slack:T1", "alice", 501)]
    await lim.aclose(timeout=1)


async def test_usage_still_waiting_at_shutdown_is_written_then(
    own_redis: RestartableRedis, own_store: RedisStore
) -> None:
    lim = limiter(own_store)
    own_redis.stop()
    await lim.record_usage(msg("carol"), route("hr", quota=1000), 77)
    own_redis.start()
    # Shutdown comes before the background retry: the flush writes it.
    assert await lim.aclose(timeout=10) == 0
    assert await lim.usage(month=MONTH) == [UsageRow("hr", "slack:T1", "carol", 77)]


async def test_usage_that_cannot_be_written_by_shutdown_is_logged_as_lost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    dead: Redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        lim = limiter(RedisStore(dead, prefix="x"))
        await lim.record_usage(msg("dave"), route("helpdesk"), 42)
        with capture_logs() as logs:
            assert await lim.aclose(timeout=0.5) == 1
        lost = [e for e in logs if e["event"] == "usage.lost"]
        assert lost and lost[0]["log_level"] == "error"
        assert lost[0]["tokens"] == 42 and lost[0]["routes"] == ["helpdesk"]
    finally:
        await dead.aclose()


async def test_the_waiting_writes_are_bounded_and_an_overflow_is_logged() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead: Redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        lim = limiter(RedisStore(dead, prefix="x"), max_pending_usage=2)
        with capture_logs() as logs:
            for i in range(3):
                await lim.record_usage(msg(f"user{i}"), route("helpdesk"), 10 + i)
        assert lim.pending_usage == 2
        (lost,) = [e for e in logs if e["event"] == "usage.lost"]
        assert lost["log_level"] == "error" and lost["tokens"] == 12
        await lim.aclose(timeout=0.2)
    finally:
        await dead.aclose()
