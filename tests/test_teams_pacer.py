"""The tenant's request budget: calls queue in order, urgent ones first, and replicas share it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis

from adapters.teams.pacer import GATHER_SECONDS, TenantPacer
from app.state.budgets import SharedBudgets
from app.state.store import RedisStore


@pytest_asyncio.fixture(loop_scope="session")
async def two_stores(redis_url: str) -> Any:
    """Two replicas' stores (each its own connection) on one Redis, under a fresh prefix."""
    prefix = "t" + uuid.uuid4().hex[:10]
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    yield [RedisStore(c, prefix=prefix) for c in clients]
    for c in clients:
        await c.aclose()


async def test_waiting_calls_go_in_order_with_urgent_ones_first() -> None:
    pacer = TenantPacer(rate=50.0, burst=1.0)
    order: list[str] = []

    async def call(name: str, urgent: bool) -> None:
        await pacer.wait("T1", urgent=urgent)
        order.append(name)

    await pacer.wait("T1")  # the burst is spent: everyone below waits
    tasks = [
        asyncio.create_task(call(n, u))
        for n, u in (("edit1", False), ("edit2", False), ("final", True), ("edit3", False))
    ]
    await asyncio.gather(*tasks)
    assert order == ["final", "edit1", "edit2", "edit3"]


async def test_a_caller_that_gives_up_loses_its_place_and_takes_no_slot() -> None:
    pacer = TenantPacer(rate=20.0, burst=1.0)
    await pacer.wait("T1")
    gone = asyncio.create_task(pacer.wait("T1"))
    await asyncio.sleep(0.01)
    gone.cancel()
    started = time.monotonic()
    await pacer.wait("T1")
    # One slot's time (50 ms), not two: the cancelled caller took nothing.
    assert time.monotonic() - started < 0.09
    assert not pacer._lanes, "an idle tenant keeps no queue"


async def test_replicas_together_stay_inside_the_tenant_rate(two_stores: Any) -> None:
    rate, burst = 20.0, 2.0
    pacers = [TenantPacer(rate, burst, shared=SharedBudgets(s)) for s in two_stores]
    started = time.monotonic()
    await asyncio.gather(*(pacers[n % 2].wait("T9", urgent=n % 3 == 0) for n in range(12)))
    elapsed = time.monotonic() - started
    # 12 calls: the burst of 2, then 10 more at 20/s shared by both replicas (~0.5 s).
    assert elapsed >= (12 - burst) / rate - 0.05
    assert elapsed < 1.5
    # Another tenant has its own bucket.
    other = time.monotonic()
    await pacers[0].wait("T10")
    assert time.monotonic() - other < 0.1


async def test_a_busy_tenant_takes_its_slots_several_at_a_time_and_keeps_its_rate(
    two_stores: Any,
) -> None:
    store = two_stores[0]
    rate, burst = 20.0, 6.0
    pacer = TenantPacer(rate, burst, shared=SharedBudgets(store))
    await asyncio.gather(*(pacer.wait("T11") for _ in range(6)))  # the burst is spent
    scripts = store.batch.batches_sent
    started = time.monotonic()
    await asyncio.gather(*(pacer.wait("T11") for _ in range(12)))
    elapsed = time.monotonic() - started
    # One script per call before: each token was taken alone as it came.
    assert store.batch.batches_sent - scripts <= 5
    # Tokens are used as they are taken: still at most 20 a second.
    assert elapsed >= 12 / rate - 0.05
    # Gathering tokens costs a call at most GATHER_SECONDS more than the rate alone.
    assert elapsed < 12 / rate + GATHER_SECONDS + 0.4


async def test_a_small_bucket_is_not_left_full_while_calls_wait() -> None:
    # A bucket of one token cannot hold a second: waiting for more would waste the rate.
    pacer = TenantPacer(rate=20.0, burst=1.0)
    await pacer.wait("T12")
    started = time.monotonic()
    await asyncio.gather(*(pacer.wait("T12") for _ in range(6)))
    assert time.monotonic() - started < 6 / 20.0 + 0.15
