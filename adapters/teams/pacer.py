"""The tenant's request budget: every Bot Connector call of a tenant waits for a slot here.

Teams allows an app 30 requests/s per tenant in all; the core's edit budget paces edits only,
while placeholders, stream updates and split parts are posts. ``burst + rate`` bounds any
one-second window, so the defaults stay under 30 (``TEAMS_TENANT_RPS``, default 28).

With ``shared`` the bucket is the tenant's, in Redis, drawn from by every replica (one script
per take, batched; see :mod:`app.budgets`); without it, or while Redis does not answer, it is
this process's.

The calls of one process queue for their tenant, urgent ones (placeholders, an answer's first
words, errors, final text) ahead of interim edits, first come first served within each, and one
task per busy tenant serves the queue: it takes as many slots as there are waiters (or as the
bucket has) in one script, and the answer says how long until the next token. While calls
wait, it sleeps until there is a token for each of them (at most ``GATHER_SECONDS`` more, and
no more than the bucket holds) and asks again, so a busy tenant costs one bucket take per
several calls.
(Every waiter asking the bucket on its own, as before, woke them all for each token and cost
about 5.5 ms of CPU per answer in ``bench/bench_teams.py``; see docs/performance.md.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from app.state.budgets import SharedBudgets

# While calls queue, the pacer waits for several tokens and hands them out with one bucket
# script (TenantPacer._hand_out): no call waits more than this much longer, and a busy tenant
# costs one round trip per several calls instead of one per call. In bench/bench_teams.py:
# 13 % less CPU per answer, first text as soon; 0.25 s saved 15 % but delayed the first text
# (docs/performance.md).
GATHER_SECONDS = 0.15


class _Lane:
    """One tenant's waiting calls and the task that hands out its slots."""

    __slots__ = ("normal", "task", "urgent")

    def __init__(self) -> None:
        self.urgent: deque[asyncio.Future[None]] = deque()
        self.normal: deque[asyncio.Future[None]] = deque()
        self.task: asyncio.Task[None] | None = None

    def waiting(self) -> int:
        return sum(1 for queue in (self.urgent, self.normal) for fut in queue if not fut.done())

    def head(self) -> deque[asyncio.Future[None]] | None:
        """The queue whose first waiter is next (callers that gave up are dropped)."""
        for queue in (self.urgent, self.normal):
            while queue and queue[0].done():
                queue.popleft()
            if queue:
                return queue
        return None


class TenantPacer:
    """At most ``rate`` calls a second per tenant (token bucket of ``burst``), for every call
    (see the module docstring)."""

    def __init__(
        self, rate: float = 20.0, burst: float = 8.0, *, shared: SharedBudgets | None = None
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, list[float]] = {}  # tenant -> [tokens, updated]
        self._lanes: dict[str, _Lane] = {}
        self._shared = shared

    @classmethod
    def for_rps(cls, rps: float, *, shared: SharedBudgets | None = None) -> TenantPacer:
        """A pacer that never lets more than ``rps`` calls into any one-second window."""
        burst = max(1.0, rps * 0.25)
        return cls(rate=max(rps / 2, rps - burst), burst=burst, shared=shared)

    async def wait(self, tenant: str, *, urgent: bool = False) -> None:
        """Take a slot; interim edits (not ``urgent``) let waiting urgent calls go first.

        Cancelling the caller while it waits gives its place up; nothing was taken for it."""
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = _Lane()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (lane.urgent if urgent else lane.normal).append(fut)
        if lane.task is None:
            lane.task = asyncio.create_task(self._hand_out(tenant, lane), name="teams-pacer")
        await fut

    async def _hand_out(self, tenant: str, lane: _Lane) -> None:
        """Give the lane's waiters their slots in order, until nobody waits."""
        try:
            while lane.head() is not None:
                taken, wait = await self._take(tenant, lane.waiting())
                # The head may have changed while the bucket answered (an urgent call came,
                # or the head gave up): the slots go to whoever is first now. A slot nobody
                # is left for is spent unused (never overspent).
                while taken and (queue := lane.head()) is not None:
                    queue.popleft().set_result(None)
                    taken -= 1
                if wait > 0 and lane.head() is not None:
                    # Wait for a token per caller (up to GATHER_SECONDS' worth, and no more
                    # than the bucket holds): the next script then hands them all out, where
                    # one per token would cost a round trip per call while the bucket is
                    # empty. They are used as soon as taken, so the bucket's bound on any one
                    # second holds.
                    more = min(
                        lane.waiting() - 1, int(self.rate * GATHER_SECONDS), int(self.burst) - 1
                    )
                    await asyncio.sleep(wait + max(0, more) / self.rate)
        except BaseException as e:
            # Nobody may be left waiting for a slot that will never come: the waiters hear
            # what stopped the queue (cancelled at shutdown, or an unexpected error).
            for queue in (lane.urgent, lane.normal):
                while queue:
                    fut = queue.popleft()
                    if fut.done():
                        continue
                    if isinstance(e, Exception):
                        fut.set_exception(e)
                    else:
                        fut.cancel()
            raise
        finally:
            lane.task = None
            if self._lanes.get(tenant) is lane:
                del self._lanes[tenant]

    async def _take(self, tenant: str, n: int) -> tuple[int, float]:
        """Up to ``n`` slots: how many were taken, and seconds until there is one again."""
        if self._shared is not None:
            key = self._shared.key("teams", tenant, "requests")
            shared = await self._shared.take_up_to(key, n, rate=self.rate, burst=self.burst)
            if shared is not None:
                return shared
        # No shared bucket, or Redis does not answer: this process's own.
        now = time.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()  # idle tenants' buckets are full anyway
            bucket = self._buckets[tenant] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        taken = max(0, min(n, int(tokens)))
        tokens -= taken
        bucket[0], bucket[1] = tokens, now
        return taken, 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


__all__ = ["TenantPacer"]
