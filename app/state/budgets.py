"""Platform rate budgets shared by every replica through Redis.

A platform's limits are per workspace, channel or tenant, not per process: three replicas that each
keep their own count spend three times the allowance. So the adapters' budgets (posts
per channel, edits per workspace minute, requests per tenant second) are kept here, in Redis:

* every take is **one Lua script**, so it is atomic across replicas and costs one round trip, and
  it goes through the store's :class:`~app.state.redis_batch.RedisBatcher`, so the takes of many
  answers in one event-loop turn share one pipeline;
* only Redis 6.2 commands; the script reads the server's clock (``TIME``, with
  ``redis.replicate_commands()`` so a script that writes after reading the time is allowed on 6.2):
  replicas whose clocks disagree still share one timeline;
* each script touches keys of one hash tag only (the platform and workspace or tenant), so it is
  valid on Redis Cluster;
* nothing here runs before an HTTP ack: budgets are taken when a message is about to be sent.

When Redis does not answer within ``deadline`` a take returns ``None`` and the caller falls back
to its own per-process budget: pacing goes on, only without the other replicas' share.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from app.state.store import RedisStore

log = structlog.get_logger(__name__)

# The server's clock in milliseconds, in every script. replicate_commands() is what allows a write
# after TIME on Redis 6.2 (effects replication); Redis 7 always does so and keeps it as a no-op.
SERVER_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# A token bucket's level now: ``level(key, rate, burst) -> tokens, ts`` (a missing or broken
# bucket is full). Every bucket script refills the same way through it.
BUCKET_LEVEL = """
local function level(key, rate, burst)
  local b = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if tokens == nil or ts == nil then return burst, now end
  if now > ts then return math.min(burst, tokens + (now - ts) * rate), now end
  return tokens, ts
end
"""

# KEYS: token buckets. ARGV: tokens per ms and burst of each, in KEYS' order. A token is taken
# from every bucket or from none. Returns 0 (taken) or ms until all have one (nothing written).
BUCKET = (
    SERVER_NOW
    + BUCKET_LEVEL
    + """
local levels, wait = {}, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tokens, ts = level(key, rate, burst)
  if tokens < 1 then wait = math.max(wait, math.ceil((1 - tokens) / rate)) end
  levels[i] = {tokens, ts, rate, burst}
end
if wait > 0 then return math.max(1, wait) end
for i, key in ipairs(KEYS) do
  local l = levels[i]
  redis.call('HSET', key, 't', tostring(l[1] - 1), 'ts', tostring(l[2]))
  redis.call('PEXPIRE', key, math.ceil(l[4] / l[3]) + 1000)
end
return 0
"""
)

# KEYS: one token bucket. ARGV: tokens per ms, burst, most tokens wanted. Takes what there is,
# up to that many; returns {tokens taken, ms until the bucket has a token again (0: it has)}.
# A caller serving a queue learns both at once: one round trip per slot, never a poll.
BUCKET_UP_TO = (
    SERVER_NOW
    + BUCKET_LEVEL
    + """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, ts = level(KEYS[1], rate, burst)
local taken = math.max(0, math.min(want, math.floor(tokens)))
if taken > 0 then
  tokens = tokens - taken
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
end
if tokens >= 1 then return {taken, 0} end
return {taken, math.max(1, math.ceil((1 - tokens) / rate))}
"""
)

# KEYS: the window (sorted set of call times). ARGV: window ms, calls allowed, a unique member.
# Returns 0 (counted) or ms until the oldest call leaves the window.
WINDOW = (
    SERVER_NOW
    + """
local span, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, span - (now - tonumber(first[2])))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], span + 1000)
return 0
"""
)


def tag(*parts: str) -> str:
    """A Cluster hash tag for one platform scope (hashed: ids may hold ``{`` or ``}``)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class SharedBudgets:
    """Runs budget scripts for the adapters (see the module docstring)."""

    def __init__(self, store: RedisStore, *, deadline: float = 0.5) -> None:
        self._store = store
        self._deadline = deadline
        self._ids = itertools.count()
        self._me = os.urandom(6).hex()  # members stay unique across replicas and instances
        self._warned = False

    def key(self, platform: str, scope: str, *parts: str) -> str:
        """``<prefix>:budget:{<tag of platform+scope>}:<parts>``: one slot per workspace/tenant."""
        return self._store.global_key("budget", f"{{{tag(platform, scope)}}}", *parts)

    def unique(self) -> str:
        """A member id no other call of any replica uses."""
        return f"{self._me}:{next(self._ids)}"

    async def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any | None:
        """The script's result, or None when Redis failed or was too slow (logged once a while)."""
        try:
            async with asyncio.timeout(self._deadline):
                result = await self._store.batch.eval(script, keys, args)
        except (RedisError, TimeoutError) as e:
            if not self._warned:
                self._warned = True
                log.warning(
                    "budget.redis_unavailable",
                    error=type(e).__name__,
                    detail="pacing with this replica's own budgets until Redis answers",
                )
            return None
        if self._warned:
            self._warned = False
            log.info("budget.redis_back")
        return result

    def run_nowait(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a script whose answer nobody waits for (a release); failures are logged."""
        fut = self._store.batch.submit(("EVAL", script, len(keys), *keys, *args))
        fut.add_done_callback(_log_failure)

    async def take(self, key: str, *, rate: float, burst: float) -> float | None:
        """A token from the bucket ``key`` (``rate`` per second, up to ``burst``): 0 when
        granted, else seconds until one is free; None when Redis cannot tell."""
        return await self.take_all(((key, rate, burst),))

    async def take_all(self, buckets: Sequence[tuple[str, float, float]]) -> float | None:
        """A token from each of ``buckets`` (key, rate per second, burst; keys of one hash tag),
        or from none: 0 when granted, else seconds until all have one; None as in :meth:`take`."""
        args: list[float] = []
        for _, rate, burst in buckets:
            args += [rate / 1000.0, burst]
        res = await self.run(BUCKET, [b[0] for b in buckets], args)
        return None if res is None else int(res) / 1000.0

    async def take_up_to(
        self, key: str, n: int, *, rate: float, burst: float
    ) -> tuple[int, float] | None:
        """Up to ``n`` tokens from the bucket ``key`` (``rate`` per second, up to ``burst``):
        how many were taken and the seconds until it has one again (0: it has); None when
        Redis cannot tell."""
        res = await self.run(BUCKET_UP_TO, (key,), (rate / 1000.0, burst, n))
        if res is None:
            return None
        return int(res[0]), int(res[1]) / 1000.0

    async def window(self, key: str, *, calls: int, seconds: float = 60.0) -> float | None:
        """Count one call in the sliding window ``key`` (``calls`` per ``seconds``): 0 when
        counted, else seconds until there is room; None when Redis cannot tell."""
        res = await self.run(WINDOW, (key,), (int(seconds * 1000), calls, self.unique()))
        return None if res is None else int(res) / 1000.0


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        return
    err = fut.exception()
    if err is not None:
        log.info("budget.release_failed", error=type(err).__name__)


__all__ = [
    "BUCKET",
    "BUCKET_LEVEL",
    "BUCKET_UP_TO",
    "SERVER_NOW",
    "WINDOW",
    "SharedBudgets",
    "tag",
]
