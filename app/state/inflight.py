"""Answers in progress, recorded in Redis so that no replica's death leaves a frozen placeholder.

Design (chosen over a Redis Stream work queue because the platform has already been acked and the
placeholder already posted when an answer starts; what must survive a crash is the *promise to tell
the user*, not the work):

* As soon as a replica owns an event (its de-duplication claim succeeded), the pipeline
  records it: ``{prefix}:inflight`` is a sorted set
  of answer ids scored by lease expiry, ``{prefix}:inflight:{id}`` a hash with the platform and the
  reply handle's resume token (ids only: channel, message ts / activity id, service URL).
* While the answer streams, its replica extends the lease every ``ttl/3`` seconds. When the answer
  finishes or fails, the record is deleted.
* Every replica runs a janitor: leases that expired belong to a replica that died (SIGKILL, OOM,
  node loss). The first janitor to ``ZREM`` an id owns it (atomic), and asks that platform's adapter
  to replace the placeholder with :data:`INTERRUPTED`. The user asks again; nothing is left hanging.
* On SIGTERM, answers still streaming after the grace period are cancelled; each tells its user the
  same message itself before the process exits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import texts
from app.state.redis_batch import RedisBatcher

log = structlog.get_logger(__name__)

INTERRUPTED = texts.INTERRUPTED

Resumer = Callable[[Mapping[str, str], str], Awaitable[None]]

# Pre-ack records, every one queued in a loop turn in one script (a burst of mentions then costs
# one command, not one each, while its acks are still being written). KEYS[1] is the index, then
# one hash per record; ARGV[1] the hashes' TTL, then id, platform, token, lease expiry per record.
# A record that exists is never overwritten.
_PREACK = """
for i = 2, #KEYS do
  local a = (i - 2) * 4 + 2
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'platform', ARGV[a + 1], 'token', ARGV[a + 2], 'preack', '1')
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    redis.call('ZADD', KEYS[1], 'NX', ARGV[a + 3], ARGV[a])
  end
end
return 1
"""

_DROP_PREACK = """
if redis.call('HGET', KEYS[1], 'preack') == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# Record (or adopt the pre-ack record of) an answer in progress, in one step.
_BEGIN = """
redis.call('HSET', KEYS[1], 'platform', ARGV[2], 'token', ARGV[3], 'started', ARGV[4])
redis.call('HDEL', KEYS[1], 'preack')
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
"""

_END = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""


class InflightRegistry:
    """Lease records for answers in progress, and the janitor that closes orphaned ones."""

    def __init__(
        self, redis: Redis, *, prefix: str, ttl: float = 30.0, batch: RedisBatcher | None = None
    ) -> None:
        self.redis = redis
        # Per-answer writes share the store's auto-pipelining (one round trip per loop turn).
        self.batch = batch or RedisBatcher(redis)
        self.ttl = ttl
        # One hash tag for every in-flight key: the scripts below stay in one Cluster slot.
        self.index = f"{prefix}:{{inflight}}"
        self._prefix = prefix
        self._resumers: dict[str, Resumer] = {}
        self._preacks: list[tuple[tuple[str, str, str, float], asyncio.Future[None]]] = []

    def register_resumer(self, platform: str, resumer: Resumer) -> None:
        """``resumer(token, text)`` edits a placeholder from its resume token (adapters)."""
        self._resumers[platform] = resumer

    def _key(self, answer_id: str) -> str:
        return f"{self.index}:{answer_id}"

    @staticmethod
    def id_for(platform: str, event_id: str) -> str:
        """The answer id of one platform event: the same on every replica and every retry."""
        return hashlib.sha256(f"{platform}:{event_id}".encode()).hexdigest()[:20]

    async def preack(self, platform: str, event_id: str, token: Mapping[str, str]) -> None:
        """Record an event the adapter will answer, before it acks (a crash after the ack then
        still leaves someone to tell the user). Never overwrites a record that exists."""
        await self.preack_nowait(platform, event_id, token)

    def preack_nowait(
        self, platform: str, event_id: str, token: Mapping[str, str]
    ) -> asyncio.Future[None]:
        """:meth:`preack` queued on the spot (no task, nothing awaited): for an HTTP handler
        that acks right after. Every record queued in one loop turn goes out as one script."""
        loop = asyncio.get_running_loop()
        answer_id = self.id_for(platform, event_id)
        fut: asyncio.Future[None] = loop.create_future()
        self._preacks.append(
            ((answer_id, platform, json.dumps(dict(token)), time.time() + self.ttl), fut)
        )
        if len(self._preacks) == 1:
            loop.call_soon(self._send_preacks)
        return fut

    def _send_preacks(self) -> None:
        queued, self._preacks = self._preacks, []
        keys = [self._key(record[0]) for record, _ in queued]
        args = [arg for record, _ in queued for arg in record]
        sent = self.batch.submit(
            ("EVAL", _PREACK, 1 + len(keys), self.index, *keys, int(self.ttl * 20), *args)
        )

        def settle(done: asyncio.Future[list[Any]]) -> None:
            err = None if done.cancelled() else done.exception()
            for _, fut in queued:
                if fut.done():
                    continue
                if done.cancelled():
                    fut.cancel()
                elif err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(None)

        sent.add_done_callback(settle)

    async def drop_preack(self, answer_id: str) -> None:
        """Forget a pre-ack record nobody adopted (a duplicate delivery, a refused message)."""
        await self.batch.eval(_DROP_PREACK, (self._key(answer_id), self.index), (answer_id,))

    async def begin(
        self, platform: str, token: Mapping[str, str], *, answer_id: str | None = None
    ) -> str:
        """Record (or adopt the pre-ack record of) an answer in progress."""
        answer_id = answer_id or hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:20]
        now = time.time()
        await self.batch.eval(
            _BEGIN,
            (self._key(answer_id), self.index),
            (
                answer_id,
                platform,
                json.dumps(dict(token)),
                repr(now),
                now + self.ttl,
                int(self.ttl * 20),
            ),
        )
        return answer_id

    async def update_token(self, answer_id: str, token: Mapping[str, str]) -> None:
        """Store a newer resume token (e.g. once the placeholder message exists)."""
        await self.batch.call("HSET", self._key(answer_id), "token", json.dumps(dict(token)))

    async def extend(self, answer_id: str) -> None:
        # XX: only while the record exists (a janitor may have claimed it during a long stall).
        await self.batch.call("ZADD", self.index, "XX", time.time() + self.ttl, answer_id)

    async def end(self, answer_id: str) -> None:
        await self.batch.eval(_END, (self._key(answer_id), self.index), (answer_id,))

    async def expire_now(self, answer_id: str) -> None:
        """Hand an answer over at once (shutdown without time to tell the user ourselves)."""
        await self.redis.zadd(self.index, {answer_id: 0}, xx=True)

    async def keep_alive(self, answer_id: str) -> None:
        """Extend the lease until cancelled (runs beside the answer)."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.extend(answer_id)
            except RedisError as e:
                log.warning("inflight.extend_failed", error=type(e).__name__)

    async def sweep(self, *, limit: int = 20) -> int:
        """Close answers whose replica died. Returns how many placeholders were replaced."""
        now = time.time()
        ids: list[Any] = await self.redis.zrangebyscore(self.index, "-inf", now, start=0, num=limit)
        done = 0
        for raw in ids:
            answer_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if not await self.redis.zrem(self.index, answer_id):
                continue  # another replica claimed it first
            data: dict[Any, Any] = await self.redis.hgetall(self._key(answer_id))
            await self.redis.delete(self._key(answer_id))
            record = {_s(k): _s(v) for k, v in data.items()}
            resumer = self._resumers.get(record.get("platform", ""))
            if resumer is None:
                log.warning("inflight.orphan_without_adapter", platform=record.get("platform"))
                continue
            try:
                token = json.loads(record.get("token") or "{}")
                await resumer(token, INTERRUPTED)
                done += 1
                log.warning("inflight.closed_orphan", platform=record.get("platform"))
            except Exception as e:
                log.error("inflight.close_failed", error=type(e).__name__, detail=str(e)[:200])
        return done

    async def janitor(self, every: float = 5.0) -> None:
        while True:
            try:
                await self.sweep()
            except RedisError as e:
                log.warning("inflight.sweep_failed", error=type(e).__name__)
            await asyncio.sleep(every)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
