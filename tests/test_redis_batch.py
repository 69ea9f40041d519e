"""Auto-pipelining: commands of many answers share round trips, on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.state.redis_batch import RedisBatcher
from app.state.redis_conn import client_from_url


@pytest_asyncio.fixture(loop_scope="session")
async def batch(redis_url: str) -> AsyncIterator[RedisBatcher]:
    client: Redis = client_from_url(redis_url)
    b = RedisBatcher(client)
    yield b
    await b.aclose()
    await client.aclose()


def key(name: str) -> str:
    return f"tb{uuid.uuid4().hex[:10]}:{name}"


async def test_fifty_answers_writing_at_once_share_one_round_trip(batch: RedisBatcher) -> None:
    keys = [key(str(i)) for i in range(50)]
    before = batch.batches_sent

    async def one(i: int) -> list[object]:
        return await batch.run(("SET", keys[i], f"v{i}", "EX", 60), ("GET", keys[i]))

    replies = await asyncio.gather(*(one(i) for i in range(50)))

    assert batch.batches_sent - before == 1
    assert replies == [[True, f"v{i}".encode()] for i in range(50)]


async def test_a_lone_command_goes_out_at_once_with_its_usual_reply(batch: RedisBatcher) -> None:
    k = key("lone")
    assert await batch.call("SET", k, "1", "NX", "EX", 60) is True
    # The reply is what redis-py gives for the command on its own (SET NX on a taken key: None).
    assert await batch.call("SET", k, "2", "NX", "EX", 60) is None
    assert await batch.call("HGETALL", key("missing")) == {}


async def test_an_error_reaches_only_the_caller_whose_command_failed(batch: RedisBatcher) -> None:
    k = key("str")
    await batch.call("SET", k, "text", "EX", 60)
    ok_key = key("ok")

    results = await asyncio.gather(
        batch.run(("SET", ok_key, "fine", "EX", 60)),
        batch.run(("HGET", k, "field")),  # WRONGTYPE: the key holds a string
        batch.call("GET", ok_key),
        return_exceptions=True,
    )

    assert results[0] == [True]
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert results[2] == b"fine"


async def test_a_lua_script_in_a_batch_runs_whole(batch: RedisBatcher) -> None:
    k = key("hash")
    script = """
    redis.call('HSET', KEYS[1], 'a', ARGV[1], 'b', ARGV[2])
    redis.call('EXPIRE', KEYS[1], 60)
    return redis.call('HLEN', KEYS[1])
    """
    n, _ = await asyncio.gather(batch.eval(script, [k], ["1", "2"]), batch.call("PING"))
    assert n == 2
    assert await batch.call("HGETALL", k) == {b"a": b"1", b"b": b"2"}


async def test_a_caller_that_gives_up_does_not_disturb_the_others(batch: RedisBatcher) -> None:
    k = key("cancel")
    quitter = asyncio.ensure_future(batch.call("SET", key("q"), "1", "EX", 60))
    stayer = asyncio.ensure_future(batch.call("SET", k, "kept", "EX", 60))
    await asyncio.sleep(0)  # both queued in this turn's batch
    quitter.cancel()

    assert await stayer is True
    assert quitter.cancelled()
    assert await batch.call("GET", k) == b"kept"


async def test_a_large_burst_is_split_into_bounded_pipelines(redis_url: str) -> None:
    client: Redis = client_from_url(redis_url)
    small = RedisBatcher(client, max_batch=10)
    try:
        k = key("n")
        replies = await asyncio.gather(*(small.call("INCR", k) for _ in range(35)))
        await small.call("EXPIRE", k, 60)
        assert sorted(replies) == list(range(1, 36))
        assert small.batches_sent >= 4  # 35 commands, at most 10 per pipeline (+ the EXPIRE)
    finally:
        await small.aclose()
        await client.aclose()


async def test_an_unreachable_redis_fails_every_caller_of_the_batch_instead_of_hanging() -> None:
    # A port nobody listens on, no retries: the failure must reach each caller as a Redis error.
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    b = RedisBatcher(client)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(b.call("GET", "x") for _ in range(3)), return_exceptions=True), 10
        )
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await b.aclose()
        await client.aclose()
