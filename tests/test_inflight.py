"""No frozen placeholders: answers in progress are recorded, and orphans are closed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.state.inflight import INTERRUPTED, InflightRegistry
from app.state.redis_conn import client_from_url


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = client_from_url(redis_url)
    yield client
    await client.aclose()


class Platform:
    """Stands in for a platform adapter's resume(): records which placeholders it replaced."""

    def __init__(self) -> None:
        self.replaced: list[tuple[dict[str, str], str]] = []

    async def resume(self, token: Mapping[str, str], text: str) -> None:
        self.replaced.append((dict(token), text))


async def test_an_answer_whose_replica_died_is_closed_by_another_replica(redis: Redis) -> None:
    prefix = "t" + uuid.uuid4().hex[:8]
    dead = InflightRegistry(redis, prefix=prefix, ttl=0.3)
    alive = InflightRegistry(redis, prefix=prefix, ttl=0.3)
    slack = Platform()
    alive.register_resumer("slack", slack.resume)
    await dead.begin("slack", {"channel": "C1", "ts": "1.2"})  # ...and then it is SIGKILLed
    assert await alive.sweep() == 0  # lease still valid
    await asyncio.sleep(0.4)
    assert await alive.sweep() == 1
    assert slack.replaced == [({"channel": "C1", "ts": "1.2"}, INTERRUPTED)]
    assert await alive.sweep() == 0  # closed once, never twice


async def test_two_janitors_never_close_the_same_answer_twice(redis: Redis) -> None:
    prefix = "t" + uuid.uuid4().hex[:8]
    regs = [InflightRegistry(redis, prefix=prefix, ttl=0.1) for _ in range(3)]
    platform = Platform()
    for r in regs:
        r.register_resumer("teams", platform.resume)
    for i in range(10):
        await regs[0].begin("teams", {"activity": str(i)})
    await asyncio.sleep(0.2)
    counts = await asyncio.gather(*(r.sweep() for r in regs))
    assert sum(counts) == 10
    assert sorted(t["activity"] for t, _ in platform.replaced) == [str(i) for i in range(10)]


async def test_a_burst_of_mentions_is_recorded_before_its_acks_in_one_redis_command(
    redis: Redis,
) -> None:
    prefix = "t" + uuid.uuid4().hex[:8]
    reg = InflightRegistry(redis, prefix=prefix, ttl=0.3)
    platform = Platform()
    reg.register_resumer("slack", platform.resume)
    # An answer already running for one of the events: its record is not overwritten.
    running = await reg.begin(
        "slack", {"channel": "C1", "ts": "running"}, answer_id=reg.id_for("slack", "Ev3")
    )
    sent_before = reg.batch.batches_sent
    futures = [
        reg.preack_nowait("slack", f"Ev{i}", {"channel": "C1", "ts": f"1.{i}"}) for i in range(50)
    ]
    await asyncio.gather(*futures)
    assert reg.batch.batches_sent == sent_before + 1  # fifty records, one command
    for i in range(50):
        assert await redis.zscore(reg.index, reg.id_for("slack", f"Ev{i}")) is not None
    assert await redis.hget(f"{reg.index}:{running}", "preack") is None
    # Nobody adopted them (the replica died after its acks): every user hears so, once.
    await asyncio.sleep(0.4)
    assert await reg.sweep(limit=100) == 50
    assert sorted(t["ts"] for t, _ in platform.replaced) == sorted(
        ["running"] + [f"1.{i}" for i in range(50) if i != 3]
    )


async def test_a_failed_preack_write_is_reported_to_every_caller() -> None:
    client = client_from_url("redis://127.0.0.1:1/0")  # nothing listens there
    reg = InflightRegistry(client, prefix="t" + uuid.uuid4().hex[:8])
    futures = [reg.preack_nowait("slack", f"Ev{i}", {"ts": str(i)}) for i in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    await client.aclose()
    assert all(isinstance(r, RedisError) for r in results), results


async def test_a_live_answer_keeps_its_lease_and_is_removed_when_done(redis: Redis) -> None:
    prefix = "t" + uuid.uuid4().hex[:8]
    reg = InflightRegistry(redis, prefix=prefix, ttl=0.3)
    platform = Platform()
    reg.register_resumer("slack", platform.resume)
    answer = await reg.begin("slack", {"ts": "9"})
    keeper = asyncio.create_task(reg.keep_alive(answer))
    await asyncio.sleep(0.6)
    assert await reg.sweep() == 0  # extended meanwhile
    keeper.cancel()
    await reg.end(answer)
    await asyncio.sleep(0.4)
    assert await reg.sweep() == 0 and platform.replaced == []


class ResumableReply(MemoryReply):
    def resume_token(self) -> dict[str, str]:
        return {"message": "m-1"}


async def test_shutdown_interrupts_answers_still_streaming_after_the_grace(
    make_service: Any, dify_app: Any
) -> None:
    dify_app.answer = "slow " * 400
    dify_app.chunk_size = 5
    dify_app.chunk_delay = 0.02
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = ResumableReply()
    msg = IncomingMessage(
        key=ThreadKey("console", "w", "c", uuid.uuid4().hex),
        event_id=uuid.uuid4().hex,
        speaker=Speaker("u"),
        text="long answer please",
        kind=Kind.DIRECT,
    )
    svc.bridge.submit(msg, reply, CONSOLE_LIMITS)
    await dify_app.wait_running()
    index = svc.bridge.inflight.index
    assert await svc.store.redis.zcard(index) == 1  # recorded while streaming
    interrupted = await svc.bridge.drain(timeout=0.2)
    assert interrupted == 1
    assert reply.error == INTERRUPTED
    assert await svc.store.redis.zcard(index) == 0  # the record went with it
