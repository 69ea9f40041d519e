"""The Redis store: conversations, de-duplication and the fair per-thread lock, on a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.pipeline.model import ThreadKey
from app.state.redis_conn import client_from_url
from app.state.store import LockTimeout, RedisStore


@pytest_asyncio.fixture(loop_scope="session")
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    client: Redis = client_from_url(redis_url)
    prefix = "t" + uuid.uuid4().hex[:10]
    s = RedisStore(client, prefix=prefix, conversation_ttl=60, dedup_ttl=60, lock_ttl=1.0)
    yield s
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def thread(n: str = "1") -> ThreadKey:
    return ThreadKey("slack", "T1", "C1", f"1700000000.{n}")


async def test_a_thread_remembers_its_dify_conversation(store: RedisStore) -> None:
    t = thread()
    assert await store.get_conversation(t) is None
    await store.save_conversation(t, conversation_id="conv-1", user=t.dify_user(), route="default")
    rec = await store.get_conversation(t)
    assert rec is not None
    assert rec.conversation_id == "conv-1"
    assert rec.user == "slack:T1:C1:1700000000.1"
    assert rec.route == "default"
    ttl = await store.redis.ttl(store.k(t, "conv"))
    assert 0 < ttl <= 60
    await store.forget(t)
    assert await store.get_conversation(t) is None


async def test_all_keys_of_a_thread_share_one_cluster_hash_tag(store: RedisStore) -> None:
    t = thread()
    keys = [store.k(t, w) for w in ("conv", "lockq", "lockl", "task", "pseudo")]
    tags = {k[k.index("{") + 1 : k.index("}")] for k in keys}
    assert tags == {t.hashed}
    # Slot computed by the redis-py cluster helper is the same for all of them.
    from redis.crc import key_slot

    assert len({key_slot(k.encode()) for k in keys}) == 1


async def test_a_retried_event_is_claimed_only_once(store: RedisStore) -> None:
    assert await store.claim("slack:Ev1") is True
    assert await store.claim("slack:Ev1") is False
    # A different event id but the same channel+ts (app_mention + message) is a duplicate too.
    assert await store.claim("slack:Ev2", "slack:T1:C1:1.1") is True
    assert await store.claim("slack:Ev3", "slack:T1:C1:1.1") is False


async def test_thread_lock_serves_waiters_in_message_order(store: RedisStore) -> None:
    t = thread("lock")
    order: list[int] = []
    now = time.time()

    async def answer(i: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with store.lock(t, order=now + i):
            order.append(i)
            await asyncio.sleep(0.05)

    # Message 2 reaches the lock before message 1 is even queued, but 0 holds it meanwhile.
    await asyncio.gather(answer(0, 0), answer(2, 0.01), answer(1, 0.02))
    assert order == [0, 1, 2]


async def test_a_crashed_holder_does_not_block_the_thread_forever(store: RedisStore) -> None:
    t = thread("crash")
    dead = store.lock(t, order=1.0)
    await dead.acquire()
    # Simulate a killed replica: its keep-alive stops, its lease is never extended again.
    assert dead._keeper is not None
    dead._keeper.cancel()
    got = asyncio.Event()

    async def next_message() -> None:
        async with store.lock(t, order=2.0):
            got.set()

    task = asyncio.create_task(next_message())
    await asyncio.wait_for(got.wait(), timeout=3.0)  # lease ttl is 1 s in this fixture
    await task


async def test_lock_lease_is_extended_while_an_answer_streams(store: RedisStore) -> None:
    t = thread("long")
    async with store.lock(t, order=1.0):
        await asyncio.sleep(1.5)  # longer than the 1 s lease
        waiter = store.lock(t, order=2.0, wait_timeout=0.3)
        try:
            await waiter.acquire()
            acquired = True
        except Exception:
            acquired = False
        assert acquired is False  # the holder's lease is still alive


async def test_known_threads_are_remembered(store: RedisStore) -> None:
    t = thread("known")
    assert await store.is_known(t) is False
    # The pipeline marks a thread known with its first attempt to take the thread's lock.
    lock = store.lock(t, order=time.time(), mark_known=True, settle=0.0)
    await lock.acquire()
    await lock.release()
    assert await store.is_known(t) is True


async def test_an_earlier_message_arriving_late_waits_for_the_answer_already_running(
    store: RedisStore,
) -> None:
    # Regression: the queue is ordered by message time, but a lock that is already held must
    # stay held: a late message with an earlier timestamp queues behind it.
    t = thread("late")
    running = store.lock(t, order=time.time() - 10)  # old enough to take the lock at once
    await running.acquire()
    late = store.lock(t, order=time.time() - 20, wait_timeout=0.3)
    with pytest.raises(LockTimeout):
        await late.acquire()
    await running.release()


async def test_a_very_recent_message_lets_an_earlier_one_go_first(store: RedisStore) -> None:
    t = thread("settle")
    order: list[str] = []
    now = time.time()

    async def answer(name: str, ts: float, delay: float) -> None:
        await asyncio.sleep(delay)
        async with store.lock(t, order=ts):
            order.append(name)

    # The second message reaches the lock first, but the first is only 0.1 s behind it.
    await asyncio.gather(answer("second", now + 0.01, 0), answer("first", now, 0.1))
    assert order == ["first", "second"]


async def test_a_threads_first_message_takes_the_free_lock_without_settling(
    store: RedisStore,
) -> None:
    # With a long settle time, a young message waits for earlier ones that may be on their way;
    # a thread's first message has none, so it does not wait at all.
    waiting = store.lock(thread("young"), order=time.time(), settle=30.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting.acquire(), 1.0)
    first = store.lock(thread("root"), order=time.time(), settle=0.0)
    await asyncio.wait_for(first.acquire(), 5.0)
    await first.release()


async def test_a_retry_racing_its_original_never_makes_both_give_up(store: RedisStore) -> None:
    # Regression (found by the soak): both deliveries of one event claim at the same moment on
    # two replicas; each must not take one of the two keys and then both drop the message.
    for i in range(50):
        keys = (f"slack:EvRace{i}", f"slack:T1:C1:race-{i}")
        results = await asyncio.gather(store.claim(*keys), store.claim(*keys))
        assert sorted(results) == [False, True], i
