"""Token usage reaches Redis even when Redis is slow or away for a while: it is billing data.

An answer's usage is written at once when Redis answers within its deadline. Otherwise the write
waits in a bounded queue in memory, and one background task retries it (backing off up to 30 s)
until Redis takes it; on shutdown the queue gets a last chance, and whatever still cannot be
written is logged at error level (``usage.lost``, with the tokens), never dropped in silence.

A write is idempotent: each carries its answer's id, and the script counts an id once (a marker
key beside the counters, same Cluster slot, kept a day). A write whose reply was lost in a
timeout, and which is then retried, is therefore not counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from app.state.redis_batch import RedisBatcher

log = structlog.get_logger(__name__)

USAGE_TTL_SECONDS = 400 * 86400
# How long an answer's id is remembered, so a retried write is not counted twice.
SEEN_TTL_SECONDS = 86400
# Writes waiting for Redis, at most; each holds a few hundred bytes.
MAX_PENDING = 50_000
# Re-add a (route, workspace) to the month's usage index at most this often per process.
_INDEX_REFRESH = 600.0
_RETRY_DEADLINE = 5.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0

# KEYS: the month's usage hash, the answer's marker. ARGV: the speaker's field, tokens, TTL,
# marker TTL. Counts the tokens once per marker; returns the month's total either way.
_ADD_USAGE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  local total = redis.call('HINCRBY', KEYS[1], 'total', ARGV[2])
  redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return total
end
return tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
"""


@dataclass(frozen=True, slots=True)
class UsageWrite:
    """One answer's tokens for one month's counters (keys already built)."""

    key: str
    seen_key: str
    field: str
    tokens: int
    index: str
    member: str
    route: str
    workspace: str


Written = Callable[[UsageWrite, int], None]


class UsageWriter:
    """Writes :class:`UsageWrite` s now or, when Redis cannot take them, a little later."""

    def __init__(
        self,
        batch: RedisBatcher,
        *,
        deadline: float,
        on_written: Written,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._batch = batch
        self._deadline = deadline
        self._on_written = on_written
        self._max = max_pending
        self._clock = clock
        self.pending: deque[UsageWrite] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # (index key, member) -> when this process last added it to the month's usage index.
        self._indexed: dict[tuple[str, str], float] = {}

    async def write(self, w: UsageWrite) -> None:
        """Write now if Redis answers within the deadline, else queue the write for later."""
        if self.pending:  # Redis is known to be in trouble: no waiting at an answer's end
            self._enqueue(w, reason="earlier writes pending")
            return
        try:
            async with asyncio.timeout(self._deadline):
                total = await self._apply(w)
        except (RedisError, TimeoutError) as e:
            self._enqueue(w, reason=type(e).__name__)
            return
        self._on_written(w, total)

    async def aclose(self, timeout: float) -> int:  # noqa: ASYNC109 - a grace period
        """Stop retrying in the background; give what is queued up to ``timeout`` seconds to
        reach Redis, then log what could not (``usage.lost``). Returns the writes lost."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.pending:
                        if not await self._write_first():
                            await asyncio.sleep(_BACKOFF_FIRST)
        lost = len(self.pending)
        if lost:
            log.error(
                "usage.lost",
                reason="redis unavailable at shutdown",
                writes=lost,
                tokens=sum(w.tokens for w in self.pending),
                routes=sorted({w.route for w in self.pending}),
            )
            self.pending.clear()
        return lost

    # ------------------------------------------------------------------ internals

    def _enqueue(self, w: UsageWrite, *, reason: str) -> None:
        if self._closed or len(self.pending) >= self._max:
            log.error(
                "usage.lost",
                reason="shut down" if self._closed else "too many writes pending",
                tokens=w.tokens,
                route=w.route,
                workspace=w.workspace,
            )
            return
        if not self.pending:
            log.warning("usage.write_delayed", reason=reason)
        self.pending.append(w)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._retry(), name="usage-retry")

    async def _retry(self) -> None:
        delay = _BACKOFF_FIRST
        while self.pending:
            await asyncio.sleep(delay)
            while self.pending and await self._write_first():
                delay = _BACKOFF_FIRST
            delay = min(delay * 2, _BACKOFF_MAX)
        log.info("usage.caught_up")

    async def _write_first(self) -> bool:
        """Try the oldest queued write once; True when it is in Redis."""
        w = self.pending[0]
        try:
            async with asyncio.timeout(_RETRY_DEADLINE):
                total = await self._apply(w)
        except (RedisError, TimeoutError):
            return False
        if self.pending and self.pending[0] is w:
            self.pending.popleft()
        self._on_written(w, total)
        return True

    async def _apply(self, w: UsageWrite) -> int:
        total = await self._batch.eval(
            _ADD_USAGE,
            (w.key, w.seen_key),
            (w.field, w.tokens, USAGE_TTL_SECONDS, SEEN_TTL_SECONDS),
        )
        # A separate slot in Cluster: not part of the script above. The index only changes
        # when a new (route, workspace) shows up, so it is written once per member every few
        # minutes, not on every answer.
        now = self._clock()
        if now - self._indexed.get((w.index, w.member), -_INDEX_REFRESH) >= _INDEX_REFRESH:
            await self._batch.run(
                ("SADD", w.index, w.member), ("EXPIRE", w.index, USAGE_TTL_SECONDS)
            )
            if len(self._indexed) > 10_000:
                self._indexed.clear()
            self._indexed[(w.index, w.member)] = now
        return int(total)


__all__ = ["MAX_PENDING", "SEEN_TTL_SECONDS", "USAGE_TTL_SECONDS", "UsageWrite", "UsageWriter"]
