"""Slack's per-method limits, kept by the adapter so a burst of answers never draws a 429.

``chat.update`` is Tier 3: about 50 calls per minute for the *whole workspace*. A hundred answers
streaming at once cannot all be edited progressively, so edits are rationed:

* An answer opens a visible message only while the workspace can still afford the final edit it
  will need later (a *reservation*). Otherwise it stays on the thread's status line and its
  final text arrives with one ``chat.postMessage``, which does not count against ``chat.update``.
* Interim edits use what is left after the reservations, up to ``interim_share`` of the minute.
* Final edits take priority and may use the whole minute.

``chat.postMessage`` is limited per channel (about one per second, short bursts allowed): a token
bucket per channel paces it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]

WINDOW = 60.0


class UpdateBudget:
    """``chat.update`` calls of one workspace in a sliding minute, with reservations for finals."""

    def __init__(
        self, per_minute: int = 45, *, interim_share: float = 0.7, clock: Clock = time.monotonic
    ) -> None:
        self.cap = per_minute
        self.interim_cap = max(1, int(per_minute * interim_share))
        self.reserved = 0
        self._calls: deque[float] = deque()
        self._clock = clock

    def _used(self, now: float) -> int:
        while self._calls and now - self._calls[0] >= WINDOW:
            self._calls.popleft()
        return len(self._calls)

    def _wait(self, now: float) -> float:
        return max(0.5, WINDOW - (now - self._calls[0])) if self._calls else 0.5

    def try_open(self) -> bool:
        """Reserve the final edit of a message about to become visible; False: not now."""
        if self._used(self._clock()) + self.reserved + 1 > self.interim_cap:
            return False
        self.reserved += 1
        return True

    def force_open(self) -> None:
        """Reserve even over the share (a placeholder message is needed anyway)."""
        self.reserved += 1

    def release(self) -> None:
        self.reserved = max(0, self.reserved - 1)

    def try_interim(self) -> bool:
        """Take one interim edit if the reservations leave room for it."""
        now = self._clock()
        if self._used(now) + self.reserved + 1 > self.interim_cap:
            return False
        self._calls.append(now)
        return True

    def take_final(self) -> float:
        """Take one final edit: 0 when granted, else seconds to wait."""
        now = self._clock()
        if self._used(now) >= self.cap:
            return self._wait(now)
        self._calls.append(now)
        return 0.0


class MethodWindow:
    """At most ``per_minute`` calls in any sliding minute (a Slack tier, per workspace)."""

    def __init__(self, per_minute: int, *, clock: Clock = time.monotonic) -> None:
        self.per_minute = per_minute
        self._calls: deque[float] = deque()
        self._clock = clock

    def try_take(self) -> bool:
        now = self._clock()
        while self._calls and now - self._calls[0] >= WINDOW:
            self._calls.popleft()
        if len(self._calls) >= self.per_minute:
            return False
        self._calls.append(now)
        return True


# Native streaming (chat.startStream / stopStream are Tier 2, appendStream Tier 4): one stream
# start per slot, so the stop that ends it fits as well; appends skipped when over the tier just
# arrive with the next one (they carry deltas).
STREAMS_PER_MINUTE = 18
APPENDS_PER_MINUTE = 90


class ChannelPacer:
    """``chat.postMessage`` per channel: a token bucket (``rate`` per second, ``burst``)."""

    def __init__(self, rate: float = 1.0, burst: float = 3.0, *, clock: Clock = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, channel: str) -> float:
        """Take a token for ``channel``: 0 when granted, else seconds until one is free."""
        now = self._clock()
        tokens, last = self._buckets.get(channel, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[channel] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget idle channels
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            return 0.0
        self._buckets[channel] = (tokens, now)
        return (1.0 - tokens) / self.rate


class SlackBudgets:
    """Budgets per workspace, shared by every answer this process streams."""

    def __init__(self, *, updates_per_minute: int = 45, clock: Clock = time.monotonic) -> None:
        self._per_minute = updates_per_minute
        self._clock = clock
        self._updates: dict[str, UpdateBudget] = {}
        self._posts: dict[str, ChannelPacer] = {}
        self._windows: dict[tuple[str, str], MethodWindow] = {}

    def updates(self, team: str) -> UpdateBudget:
        b = self._updates.get(team)
        if b is None:
            b = self._updates[team] = UpdateBudget(self._per_minute, clock=self._clock)
        return b

    def window(self, team: str, name: str, per_minute: int) -> MethodWindow:
        w = self._windows.get((team, name))
        if w is None:
            w = self._windows[(team, name)] = MethodWindow(per_minute, clock=self._clock)
        return w

    def posts(self, team: str) -> ChannelPacer:
        p = self._posts.get(team)
        if p is None:
            p = self._posts[team] = ChannelPacer(clock=self._clock)
        return p
