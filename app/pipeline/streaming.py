"""The edit scheduler: a stream of growing text in, as few platform edits as needed out.

Rules it keeps, whatever the token rate from Dify:

* the first text is sent as soon as it arrives (budget permitting);
* afterwards at most one edit per ``interval`` per message, and only the latest text (coalescing);
* never two edits in flight for one message (one worker task per message; the first edit may
  be sent by the caller itself, before the worker starts: :meth:`EditScheduler.show_first`);
* a :class:`~app.errors.PlatformRateLimited` pushes the next edit past ``Retry-After`` and
  widens the interval; the workspace budget is emptied for everyone;
* every edit takes a token from the workspace's :class:`EditBudget`, shared by all answers streaming
  in that workspace, so a hundred answers at once stay under the platform's per-minute limit.

The final text is not the scheduler's job: the pipeline closes the scheduler, then delivers the
final answer with :func:`deliver_final`, which has priority on the budget and retries after 429s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from app.errors import PlatformError, PlatformRateLimited

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")


class EditBudget:
    """A token bucket of edits per minute, shared by every answer in one workspace.

    Final answers take tokens with ``priority=True``: while one waits, interim edits step back.
    """

    def __init__(
        self, per_minute: float, *, burst: float | None = None, clock: Clock = time.monotonic
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, min(per_minute / 6.0, 10.0))
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()
        self._blocked_until = 0.0
        self._priority_waiting = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_take(self, *, priority: bool = False) -> float:
        """Take a token and return 0, or return how long to wait before trying again."""
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        if not priority and self._priority_waiting:
            return max(0.05, 1.0 / self.rate / 4)
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    async def acquire(
        self,
        *,
        priority: bool = False,
        wait: Callable[[float], Awaitable[bool]] | None = None,
    ) -> bool:
        """Wait for a token. ``wait(seconds)`` may return True to give up (scheduler closing)."""
        waiter = wait or _plain_sleep
        if priority:
            self._priority_waiting += 1
        try:
            while True:
                delay = self.try_take(priority=priority)
                if delay <= 0:
                    return True
                if await waiter(delay):
                    return False
        finally:
            if priority:
                self._priority_waiting -= 1

    def penalize(self, retry_after: float) -> None:
        """The platform said 429: nobody in this workspace edits before ``retry_after``."""
        self._blocked_until = max(self._blocked_until, self._clock() + retry_after)
        self._tokens = 0.0


async def _plain_sleep(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return False


class BudgetRegistry:
    """One :class:`EditBudget` per (platform, workspace), created on first use."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._budgets: dict[tuple[str, str], EditBudget] = {}
        self._clock = clock

    def get(self, platform: str, workspace: str, per_minute: float) -> EditBudget:
        key = (platform, workspace)
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = EditBudget(per_minute, clock=self._clock)
        return budget


Send = Callable[[str, str | None], Awaitable[None]]


class EditScheduler:
    """Coalesces pushed text into paced edits of one message (see the module docstring)."""

    def __init__(
        self,
        send: Send,
        *,
        interval: float,
        budget: EditBudget | None = None,
        max_interval: float = 10.0,
        clock: Clock = time.monotonic,
        on_edit: Callable[[], None] | None = None,
        on_ratelimited: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self._interval = interval
        self._max_interval = max(max_interval, interval)
        self._budget = budget
        self._clock = clock
        self._on_edit = on_edit
        self._on_ratelimited = on_ratelimited
        self._latest: tuple[str, str | None] = ("", None)
        self._sent: tuple[str, str | None] | None = None
        self._last_sent = float("-inf")
        self._not_before = 0.0
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._nap: asyncio.Future[bool] | None = None
        # Set while show_first() sends from the caller's task: no worker may start meanwhile,
        # and close() waits for it as for the worker.
        self._inline: asyncio.Future[None] | None = None
        self.edits = 0
        self.rate_limited = 0

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def _due(self) -> float:
        """When the next edit may go: an interval after the last, and not before a Retry-After."""
        return max(self._last_sent + self._interval, self._not_before)

    def push(self, text: str, status: str | None = None) -> None:
        """Make ``text`` (the whole answer so far) the next thing to show."""
        if self._closing.is_set():
            return
        self._latest = (text, status)
        self._wake.set()
        if self._worker is None and self._inline is None:
            self._worker = asyncio.create_task(self._run(), name="edit-scheduler")

    async def show_first(self, text: str, status: str | None = None) -> None:
        """Push the first words and send them from the caller's task, before it reads on.

        A worker task that :meth:`push` starts runs only after the event loop's next network
        poll, and with a fast stream that poll first takes in and parses whatever else Dify
        sent meanwhile (0.2-1 ms on the 2-vCPU machine), all before the first words go out.
        The worker takes over afterwards. Where an edit was already sent or is waiting (a
        status line, a 429's ``Retry-After``, an empty budget), this is a plain :meth:`push`.
        """
        if (
            self._worker is not None
            or self._sent is not None
            or self._closing.is_set()
            or self._clock() < self._due
            or (self._budget is not None and self._budget.try_take() > 0)
        ):
            self.push(text, status)
            return
        self._latest = (text, status)
        self._inline = inline = asyncio.get_running_loop().create_future()
        try:
            await self._attempt(self._latest)
        finally:
            self._inline = None
            inline.set_result(None)
        if self._latest != self._sent and not self._closing.is_set():
            self.push(*self._latest)  # newer text, or a 429 to wait out: the worker's job

    async def close(self) -> None:
        """Stop editing; returns once no edit is in flight any more."""
        self._closing.set()
        self._wake.set()
        nap = self._nap
        if nap is not None and not nap.done():
            nap.set_result(True)
        if self._inline is not None:
            await asyncio.shield(self._inline)
        if self._worker is not None:
            await self._worker

    async def _wait_or_close(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the scheduler closed meanwhile."""
        if seconds <= 0 or self._closing.is_set():
            return self._closing.is_set()
        # A future and a timer rather than wait_for(closing.wait()): on Python 3.11 wait_for
        # starts a task per call, and a thousand streaming answers nap often.
        loop = asyncio.get_running_loop()
        nap: asyncio.Future[bool] = loop.create_future()
        self._nap = nap
        timer = loop.call_later(seconds, _wake_up, nap)
        try:
            return await nap
        finally:
            timer.cancel()
            self._nap = None

    async def _run(self) -> None:
        # Checking _closing on every turn matters: the worker clears _wake after close() may
        # have set it (a timeout racing with close), and must not then wait for a wake-up.
        while not self._closing.is_set():
            await self._wake.wait()
            if self._closing.is_set():
                return
            if await self._wait_or_close(self._due - self._clock()):
                return
            if self._budget is not None and not await self._budget.acquire(
                wait=self._wait_or_close
            ):
                return
            self._wake.clear()
            current = self._latest
            if current == self._sent:
                continue
            await self._attempt(current)

    async def _attempt(self, current: tuple[str, str | None]) -> None:
        """Send ``current`` once (a budget token is already taken) and note the outcome."""
        try:
            await self._send(*current)
        except PlatformRateLimited as e:
            self.rate_limited += 1
            self._not_before = self._clock() + e.retry_after
            self._interval = min(self._interval * 2, self._max_interval)
            if self._budget is not None:
                self._budget.penalize(e.retry_after)
            if self._on_ratelimited:
                self._on_ratelimited()
            self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # An interim edit failing is not fatal: the final answer is delivered separately.
            log.warning("edit.failed", error=type(e).__name__, detail=str(e)[:200])
            self._not_before = self._clock() + self._interval
        else:
            self.edits += 1
            self._sent = current
            if self._on_edit:
                self._on_edit()
        self._last_sent = self._clock()


def _wake_up(nap: asyncio.Future[bool]) -> None:
    if not nap.done():
        nap.set_result(False)


async def deliver_final(
    op: Callable[[], Awaitable[T]],
    *,
    budget: EditBudget | None,
    attempts: int = 6,
    max_wait: float = 60.0,
    on_ratelimited: Callable[[], None] | None = None,
) -> T:
    """Run the final delivery with priority on the budget, retrying after 429s."""
    waited = 0.0
    for attempt in range(attempts):
        if budget is not None:
            await budget.acquire(priority=True)
        try:
            return await op()
        except PlatformRateLimited as e:
            if on_ratelimited:
                on_ratelimited()
            if attempt == attempts - 1 or waited + e.retry_after > max_wait:
                raise
            waited += e.retry_after
            if budget is not None:
                budget.penalize(e.retry_after)  # the next acquire() waits it out
            else:
                await asyncio.sleep(e.retry_after)
        except PlatformError as e:
            # A platform's passing trouble (5xx): the final answer is worth a few more tries.
            delay = min(2.0**attempt, 8.0)
            if not e.retryable or attempt == attempts - 1 or waited + delay > max_wait:
                raise
            waited += delay
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
