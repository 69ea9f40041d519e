"""Slack's per-method limits, kept by the adapter so a burst of answers never draws a 429.

``chat.update`` is Tier 3: about 50 calls per minute for the *whole workspace*. A hundred answers
streaming at once cannot all be edited progressively, so edits are rationed:

* An answer opens a visible message only while the workspace can still afford the final edit it
  will need later (a *reservation*). Otherwise it stays on the thread's status line and its
  final text arrives with one ``chat.postMessage``, which does not count against ``chat.update``.
* Interim edits use what is left after the reservations, up to ``interim_share`` of the minute.
* Final edits take priority and may use the whole minute.

``chat.postMessage`` is limited per channel (about one per second, short bursts allowed): a token
bucket per channel paces it, with a margin (``POST_RATE``, ``POST_BURST``) so that the time a post
spends between our clock and Slack's (queues, network) never turns into a 429.

Every budget is the workspace's, not this process's: with
:class:`~app.state.budgets.SharedBudgets` the counts live in Redis and all replicas draw from
them (one Lua script per take, batched). Without it (unit tests), or while Redis does not answer,
each budget falls back to counting here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from app.state.budgets import BUCKET_LEVEL, SERVER_NOW, SharedBudgets

Clock = Callable[[], float]

WINDOW = 60.0
# Slack: about 1 post per second per channel with short bursts (we take that to be 3). Ours: 10%
# slower, and one post of the burst always kept in hand, so a post that reaches Slack up to a
# second earlier than our clock said (queues, network) still finds a token there.
POST_RATE = 0.9
POST_BURST = 2.0
# And "several hundred per minute" for the whole workspace (we take 300): at most 250 in any
# sliding minute.
WORKSPACE_POSTS_PER_MINUTE = 250

# KEYS: the channel's token bucket, the workspace's minute of posts (sorted set of times).
# ARGV: channel tokens per ms, channel burst, workspace posts per minute, a unique member.
# Both are taken or neither. Returns 0 (taken) or ms until both allow a post.
_POST = (
    SERVER_NOW
    + BUCKET_LEVEL
    + """
local rate, burst, per_minute = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, ts = level(KEYS[1], rate, burst)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) / rate) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[2]) >= per_minute then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  wait = math.max(wait, 60000 - (now - tonumber(first[2])))
end
if wait > 0 then return math.max(1, wait) end
redis.call('HSET', KEYS[1], 't', tostring(tokens - 1), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('PEXPIRE', KEYS[2], 61000)
return 0
"""
)
# A reservation (an answer's right to its final chat.update) lapses unless renewed by the
# answer's edits: a replica that dies mid-answer does not hold the workspace's minute for ever.
RESERVATION_SECONDS = 600.0

# KEYS: calls in the last minute (sorted set), reservations (sorted set, score = expiry).
# ARGV: op, cap, interim cap, member (call or reservation id), lease ms, reservation to renew.
# Returns 0 when granted, else ms to wait (1 for "not now" where waiting is not the answer).
_UPDATES = (
    SERVER_NOW
    + """
local op, cap, interim_cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if op == 'release' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
if op == 'force' then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], lease + 1000)
  return 0
end
local used = redis.call('ZCARD', KEYS[1])
if op == 'final' then
  if used >= cap then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return math.max(500, 60000 - (now - tonumber(first[2])))
  end
else
  if used + redis.call('ZCARD', KEYS[2]) + 1 > interim_cap then return 1 end
  if op == 'open' then
    redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
    redis.call('PEXPIRE', KEYS[2], lease + 1000)
    return 0
  end
  if ARGV[6] ~= '' then
    redis.call('ZADD', KEYS[2], 'XX', now + lease, ARGV[6])
    redis.call('PEXPIRE', KEYS[2], lease + 1000)
  end
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], 61000)
return 0
"""
)


class UpdateBudget:
    """``chat.update`` calls of one workspace in a sliding minute, with reservations for finals.

    ``holder`` names the answer that holds a reservation (so a release drops its own)."""

    def __init__(
        self,
        per_minute: int = 45,
        *,
        interim_share: float = 0.7,
        clock: Clock = time.monotonic,
        shared: SharedBudgets | None = None,
        team: str = "",
    ) -> None:
        self.cap = per_minute
        self.interim_cap = max(1, int(per_minute * interim_share))
        self.reserved = 0
        self._calls: deque[float] = deque()
        self._clock = clock
        self._shared = shared
        self._keys = ("", "")
        if shared is not None:
            self._keys = (
                shared.key("slack", team, "update", "calls"),
                shared.key("slack", team, "update", "res"),
            )

    # ---------------------------------------------------------------- shared (Redis)

    async def _run(self, op: str, member: str, renew: str = "") -> int | None:
        if self._shared is None:
            return None
        res = await self._shared.run(
            _UPDATES,
            self._keys,
            (op, self.cap, self.interim_cap, member, int(RESERVATION_SECONDS * 1000), renew),
        )
        return None if res is None else int(res)

    def _run_nowait(self, op: str, member: str) -> None:
        assert self._shared is not None
        self._shared.run_nowait(
            _UPDATES,
            self._keys,
            (op, self.cap, self.interim_cap, member, int(RESERVATION_SECONDS * 1000), ""),
        )

    # ---------------------------------------------------------------- the budget

    async def try_open(self, holder: str = "") -> bool:
        """Reserve the final edit of a message about to become visible; False: not now."""
        res = await self._run("open", holder)
        if res is not None:
            return res == 0
        if self._used(self._clock()) + self.reserved + 1 > self.interim_cap:
            return False
        self.reserved += 1
        return True

    def force_open(self, holder: str = "") -> None:
        """Reserve even over the share (a placeholder message is needed anyway)."""
        if self._shared is not None:
            self._run_nowait("force", holder)
            return
        self.reserved += 1

    def release(self, holder: str = "") -> None:
        if self._shared is not None:
            self._run_nowait("release", holder)
            return
        self.reserved = max(0, self.reserved - 1)

    async def try_interim(self, holder: str = "") -> bool:
        """Take one interim edit if the reservations leave room for it (and renew ``holder``'s
        reservation: an answer still editing is alive)."""
        if self._shared is not None:
            res = await self._run("interim", self._shared.unique(), holder)
            if res is not None:
                return res == 0
        now = self._clock()
        if self._used(now) + self.reserved + 1 > self.interim_cap:
            return False
        self._calls.append(now)
        return True

    async def take_final(self) -> float:
        """Take one final edit: 0 when granted, else seconds to wait."""
        if self._shared is not None:
            res = await self._run("final", self._shared.unique())
            if res is not None:
                return res / 1000.0
        now = self._clock()
        if self._used(now) >= self.cap:
            return self._wait(now)
        self._calls.append(now)
        return 0.0

    def _used(self, now: float) -> int:
        while self._calls and now - self._calls[0] >= WINDOW:
            self._calls.popleft()
        return len(self._calls)

    def _wait(self, now: float) -> float:
        return max(0.5, WINDOW - (now - self._calls[0])) if self._calls else 0.5


class MethodWindow:
    """At most ``per_minute`` calls in any sliding minute (a Slack tier, per workspace)."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Clock = time.monotonic,
        shared: SharedBudgets | None = None,
        key: str = "",
    ) -> None:
        self.per_minute = per_minute
        self._calls: deque[float] = deque()
        self._clock = clock
        self._shared = shared
        self._key = key

    async def try_take(self) -> bool:
        if self._shared is not None:
            wait = await self._shared.window(self._key, calls=self.per_minute)
            if wait is not None:
                return wait == 0
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

    def __init__(
        self,
        rate: float = POST_RATE,
        burst: float = POST_BURST,
        *,
        clock: Clock = time.monotonic,
        shared: SharedBudgets | None = None,
        team: str = "",
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._shared = shared
        self._team = team

    async def take(self, channel: str) -> float:
        """Take a token for ``channel`` (and the workspace): 0 when granted, else seconds until
        one is free."""
        if self._shared is not None:
            s = self._shared
            res = await s.run(
                _POST,
                (s.key("slack", self._team, "post", channel), s.key("slack", self._team, "posts")),
                (self.rate / 1000.0, self.burst, WORKSPACE_POSTS_PER_MINUTE, s.unique()),
            )
            if res is not None:
                return int(res) / 1000.0
        return self.take_here(channel)

    def take_here(self, channel: str) -> float:
        """:meth:`take` from this process's own bucket."""
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
    """Budgets per workspace, shared by every answer of every replica (see the module docstring)."""

    def __init__(
        self,
        *,
        updates_per_minute: int = 45,
        clock: Clock = time.monotonic,
        shared: SharedBudgets | None = None,
    ) -> None:
        self._per_minute = updates_per_minute
        self._clock = clock
        self._shared = shared
        self._updates: dict[str, UpdateBudget] = {}
        self._posts: dict[str, ChannelPacer] = {}
        self._windows: dict[tuple[str, str], MethodWindow] = {}

    def updates(self, team: str) -> UpdateBudget:
        b = self._updates.get(team)
        if b is None:
            b = self._updates[team] = UpdateBudget(
                self._per_minute, clock=self._clock, shared=self._shared, team=team
            )
        return b

    def window(self, team: str, name: str, per_minute: int) -> MethodWindow:
        w = self._windows.get((team, name))
        if w is None:
            key = self._shared.key("slack", team, "window", name) if self._shared else ""
            w = self._windows[(team, name)] = MethodWindow(
                per_minute, clock=self._clock, shared=self._shared, key=key
            )
        return w

    def posts(self, team: str) -> ChannelPacer:
        p = self._posts.get(team)
        if p is None:
            p = self._posts[team] = ChannelPacer(clock=self._clock, shared=self._shared, team=team)
        return p

    async def wait_post(self, team: str, channel: str, *, max_wait: float = 10.0) -> None:
        """Wait (at most ``max_wait``) for a post slot in ``channel``: for the bot's own notes
        (a slash command's echo, a refusal) that are not part of an answer's budget."""
        pacer, waited = self.posts(team), 0.0
        while (wait := await pacer.take(channel)) > 0 and waited < max_wait:
            waited += wait
            await asyncio.sleep(wait)
