"""Abuse limits: per-user and per-workspace rate limits, and per-route monthly token quotas.

Rate limits are token buckets in Redis, so every replica draws from the same bucket. Both buckets
of one question (the speaker's and the workspace's) are checked and drawn by one Lua script in one
round trip: a question refused by either bucket takes nothing from the other, so one user asking
too fast never drains the workspace's allowance. Both keys carry the workspace's hash tag and so
share a Redis Cluster slot.

The script gets the time from the caller (ARGV), not from Redis ``TIME``: Redis 6.2 replicates
scripts verbatim unless effects replication is turned on, so a script that writes must be
deterministic. Replicas' clocks may disagree a little; the script never lets time run backwards
for a bucket.

Token usage (Dify's ``message_end`` ``usage.total_tokens``) is counted per route, workspace and
user in one hash per route+workspace per calendar month (UTC)::

    <prefix>:usage:{<tag>}:<YYYY-MM>   fields: total, u:<speaker id> ...
    <prefix>:usage:index:<YYYY-MM>     set of JSON [route, platform, workspace], for listing

Keys live about 400 days, so ``dify-bridge usage`` can show last year's months too. Each answer
also leaves ``<prefix>:usage-seen:{<tag>}:<answer>`` for a day, so a retried write counts once;
writes Redis cannot take at once wait in memory (:mod:`app.state.usage_writer`).
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from app import texts
from app.config.settings import Route, Settings
from app.pipeline.model import IncomingMessage
from app.state.store import RedisStore
from app.state.usage_writer import MAX_PENDING, UsageWrite, UsageWriter

log = structlog.get_logger(__name__)

# One Dify answer never uses anywhere near this; a larger figure is garbage, not usage.
_MAX_TOKENS_PER_ANSWER = 10_000_000
_MAX_ID_CHARS = 256
# Limits must never hold an answer up: a Redis slower than this lets the question through
# (and a usage write waits in memory for a later try).
_REDIS_DEADLINE = 2.0
_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

# KEYS: user bucket, workspace bucket. ARGV: now_ms, user cap, user tokens/ms, ws cap, ws tokens/ms.
# A cap of 0 means that bucket is unlimited. Returns {0, 0} allowed, {1, wait_ms} user refused,
# {2, wait_ms} workspace refused. Nothing is written unless the question is allowed.
_TAKE = """
local now = tonumber(ARGV[1])
local function level(key, cap, rate)
  local b = redis.call('HMGET', key, 't', 'ts')
  local t = tonumber(b[1])
  local ts = tonumber(b[2])
  if t == nil or ts == nil then return cap, now end
  if now > ts then
    t = math.min(cap, t + (now - ts) * rate)
    ts = now
  end
  return t, ts
end
local function wait(t, rate) return math.ceil((1 - t) / rate) end
local function save(key, t, ts, cap, rate)
  redis.call('HSET', key, 't', tostring(t), 'ts', tostring(ts))
  redis.call('PEXPIRE', key, math.ceil(cap / rate) + 60000)
end
local ucap, urate = tonumber(ARGV[2]), tonumber(ARGV[3])
local wcap, wrate = tonumber(ARGV[4]), tonumber(ARGV[5])
local ut, uts, wt, wts
if ucap > 0 then
  ut, uts = level(KEYS[1], ucap, urate)
  if ut < 1 then return {1, wait(ut, urate)} end
end
if wcap > 0 then
  wt, wts = level(KEYS[2], wcap, wrate)
  if wt < 1 then return {2, wait(wt, wrate)} end
end
if ucap > 0 then save(KEYS[1], ut - 1, uts, ucap, urate) end
if wcap > 0 then save(KEYS[2], wt - 1, wts, wcap, wrate) end
return {0, 0}
"""


@dataclass(frozen=True)
class Refusal:
    """Why a question was not answered. ``scope`` is ``user``, ``workspace`` or ``quota``
    (the metrics label); ``message`` is the friendly text for the chat."""

    scope: str
    message: str


@dataclass(frozen=True)
class UsageRow:
    """Tokens one user spent through one route in one workspace (``platform:workspace``)."""

    route: str
    workspace: str
    user: str
    tokens: int


def month_of(ts: float) -> str:
    """The calendar month (UTC) of an epoch time, as ``YYYY-MM``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def parse_month(month: str) -> str:
    """Validate ``YYYY-MM``; raise :class:`ValueError` saying what is expected."""
    if not isinstance(month, str) or not _MONTH_RE.match(month):
        raise ValueError(f"month must look like 2026-11 (YYYY-MM), got {month!r}")
    return month


def next_month_start(ts: float) -> datetime:
    """Midnight UTC on the first day of the month after ``ts``: when a quota resets."""
    d = datetime.fromtimestamp(ts, UTC)
    year, mon = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return datetime(year, mon, 1, tzinfo=UTC)


def _tag(*parts: str) -> str:
    # Hashed: raw ids may be long or contain '{' / '}', which would break the Cluster hash tag.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _clean_id(value: str) -> str:
    return (value or "unknown")[:_MAX_ID_CHARS]


class AbuseLimiter:
    """Rate limits and monthly quotas shared by every replica through Redis.

    ``clock`` returns epoch seconds (tests move it to refill buckets or reach the next month).
    When Redis fails the limiter lets questions through: the rest of the pipeline reports Redis
    trouble better than a refusal would.
    """

    def __init__(
        self,
        store: RedisStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        max_pending_usage: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._redis = store.redis
        self._settings = settings
        self._clock = clock
        # (route, "platform:workspace") -> tokens this month, as last seen; feeds /metrics.
        self._seen: dict[tuple[str, str], int] = {}
        self._seen_month = ""
        self._quotas: dict[str, int] = {}
        self._writer = UsageWriter(
            store.batch,
            deadline=_REDIS_DEADLINE,
            on_written=self._written,
            max_pending=max_pending_usage,
        )

    # ------------------------------------------------------------------ keys

    def _bucket_keys(self, msg: IncomingMessage) -> list[str]:
        tag = _tag(msg.key.platform, msg.key.workspace)
        user = _tag(_clean_id(msg.speaker.id))
        return [
            self._store.global_key("rl", f"{{{tag}}}", "u", user),
            self._store.global_key("rl", f"{{{tag}}}", "ws"),
        ]

    def _usage_key(self, route: str, platform: str, workspace: str, month: str) -> str:
        return self._store.global_key("usage", f"{{{_tag(route, platform, workspace)}}}", month)

    def _index_key(self, month: str) -> str:
        return self._store.global_key("usage", "index", month)

    # ------------------------------------------------------------------ checks

    async def check(self, msg: IncomingMessage, route: Route) -> Refusal | None:
        """Refuse the question if the workspace's monthly quota for ``route`` is used up, or the
        speaker or the workspace asks faster than its rate; otherwise draw from both buckets."""
        now = self._clock()
        try:
            async with asyncio.timeout(_REDIS_DEADLINE):
                refusal = await self._check_quota(msg, route, now)
                if refusal is None:
                    refusal = await self._check_rate(msg, now)
        except (RedisError, TimeoutError) as e:
            log.warning("limits.unavailable", error=type(e).__name__)
            return None
        if refusal is not None:
            log.info("limits.refused", scope=refusal.scope)
        return refusal

    async def _check_quota(self, msg: IncomingMessage, route: Route, now: float) -> Refusal | None:
        quota = route.config.monthly_token_quota
        self._quotas[route.name] = quota
        if quota <= 0:
            return None
        month = month_of(now)
        key = self._usage_key(route.name, msg.key.platform, msg.key.workspace, month)
        raw = await self._store.batch.call("HGET", key, "total")
        used = _int(raw)
        self._remember(month, route.name, f"{msg.key.platform}:{msg.key.workspace}", used)
        if used < quota:
            return None
        reset = next_month_start(now)
        return Refusal(
            "quota",
            texts.QUOTA_USED.format(day=reset.day, month=calendar.month_name[reset.month]),
        )

    async def _check_rate(self, msg: IncomingMessage, now: float) -> Refusal | None:
        user_rate = self._settings.user_rate_per_minute
        ws_rate = self._settings.workspace_rate_per_minute
        if user_rate <= 0 and ws_rate <= 0:
            return None
        args: list[Any] = [int(now * 1000)]
        for rate in (user_rate, ws_rate):
            # Capacity: one minute's worth (at least one question); refill: rate per minute.
            args += [max(1.0, rate), rate / 60_000.0] if rate > 0 else [0, 0]
        res = await self._store.batch.eval(_TAKE, self._bucket_keys(msg), args)
        code, wait_ms = int(res[0]), int(res[1])
        if code == 0:
            return None
        when = texts.wait_time(max(1, math.ceil(wait_ms / 1000)))
        if code == 1:
            return Refusal("user", texts.USER_TOO_FAST.format(when=when))
        return Refusal(
            "workspace",
            texts.WORKSPACE_TOO_FAST.format(when=when),
        )

    # ------------------------------------------------------------------ usage

    async def record_usage(self, msg: IncomingMessage, route: Route, total_tokens: int) -> None:
        """Add one answer's tokens to this month's count for the route, workspace and speaker.

        Billing data: a Redis that cannot take the write now gets it later
        (:mod:`app.state.usage_writer`), and the answer's event id keeps a retry from counting
        twice.
        """
        if (
            isinstance(total_tokens, bool)
            or not isinstance(total_tokens, int)
            or not 0 < total_tokens <= _MAX_TOKENS_PER_ANSWER
        ):
            log.warning("usage.ignored", reason="tokens out of range")
            return
        month = month_of(self._clock())
        platform, workspace = msg.key.platform, msg.key.workspace
        tag = _tag(route.name, platform, workspace)
        self._quotas[route.name] = route.config.monthly_token_quota
        await self._writer.write(
            UsageWrite(
                key=self._usage_key(route.name, platform, workspace, month),
                seen_key=self._store.global_key(
                    "usage-seen", f"{{{tag}}}", _tag(platform, msg.event_id)
                ),
                field="u:" + _clean_id(msg.speaker.id),
                tokens=total_tokens,
                index=self._index_key(month),
                member=json.dumps([route.name, platform, workspace]),
                route=route.name,
                workspace=f"{platform}:{workspace}",
            )
        )

    def _written(self, w: UsageWrite, total: int) -> None:
        month = w.key.rsplit(":", 1)[1]
        self._remember(month, w.route, w.workspace, total)

    @property
    def pending_usage(self) -> int:
        """Usage writes waiting for Redis (a gauge on /metrics)."""
        return len(self._writer.pending)

    async def aclose(self, timeout: float = 5.0) -> int:  # noqa: ASYNC109 - a grace period
        """At shutdown: write the usage still waiting for Redis (up to ``timeout`` seconds);
        what cannot be written is logged as ``usage.lost``. Returns the writes lost."""
        return await self._writer.aclose(timeout)

    async def usage(self, *, month: str, route: str | None = None) -> list[UsageRow]:
        """Token totals per route, workspace and user for ``month`` (``YYYY-MM``), optionally of
        one route; sorted by route, workspace, then most tokens first."""
        parse_month(month)
        members = await self._redis.smembers(self._index_key(month))
        rows: list[UsageRow] = []
        for raw in members:
            try:
                r_name, platform, workspace = json.loads(raw)
            except (ValueError, TypeError):
                continue  # not ours
            if route is not None and r_name != route:
                continue
            data: dict[Any, Any] = await self._redis.hgetall(
                self._usage_key(r_name, platform, workspace, month)
            )
            for field, value in data.items():
                name = field.decode() if isinstance(field, bytes) else str(field)
                if name.startswith("u:"):
                    rows.append(UsageRow(r_name, f"{platform}:{workspace}", name[2:], _int(value)))
        rows.sort(key=lambda r: (r.route, r.workspace, -r.tokens, r.user))
        return rows

    # ------------------------------------------------------------------ metrics

    def _remember(self, month: str, route: str, workspace: str, tokens: int) -> None:
        if month != self._seen_month:
            self._seen.clear()
            self._seen_month = month
        self._seen[(route, workspace)] = tokens

    async def refresh_metrics(self, routes: list[Route] | None = None) -> None:
        """Reload this month's usage of every workspace from Redis for :class:`QuotaCollector`
        (run it now and then; between runs the figures follow this replica's own answers)."""
        for r in routes or ():
            self._quotas[r.name] = r.config.monthly_token_quota
        month = month_of(self._clock())
        try:
            rows = await self.usage(month=month)
        except RedisError as e:
            log.warning("usage.refresh_failed", error=type(e).__name__)
            return
        totals: dict[tuple[str, str], int] = {}
        for row in rows:
            group = (row.route, row.workspace)
            totals[group] = totals.get(group, 0) + row.tokens
        self._seen = totals
        self._seen_month = month

    def metric_samples(self) -> dict[str, tuple[int, float]]:
        """Per route: (tokens this month over all workspaces, highest share of the quota any one
        workspace has used; 0 when the route has no quota)."""
        if self._seen_month != month_of(self._clock()):
            return {}
        out: dict[str, tuple[int, float]] = {}
        for (route, _ws), tokens in self._seen.items():
            total, ratio = out.get(route, (0, 0.0))
            quota = self._quotas.get(route, 0)
            share = tokens / quota if quota > 0 else 0.0
            out[route] = (total + tokens, max(ratio, share))
        return out


class QuotaCollector(Collector):
    """Prometheus collector for the monthly token figures; register it on the metrics registry:
    ``metrics.registry.register(QuotaCollector(limiter))``. Labels are route names only."""

    def __init__(self, limiter: AbuseLimiter) -> None:
        self._limiter = limiter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "bridge_month_tokens",
            "Dify tokens used this calendar month (UTC), all workspaces",
            labels=["route"],
        )
        share = GaugeMetricFamily(
            "bridge_month_quota_used_ratio",
            "Highest share of the monthly token quota used by one workspace (0 = no quota)",
            labels=["route"],
        )
        for route, (tokens, ratio) in sorted(self._limiter.metric_samples().items()):
            used.add_metric([route], float(tokens))
            share.add_metric([route], ratio)
        pending = GaugeMetricFamily(
            "bridge_usage_writes_pending",
            "Token usage writes waiting in memory for Redis (billing data; written when Redis "
            "answers, logged as usage.lost if still waiting at shutdown)",
        )
        pending.add_metric([], float(self._limiter.pending_usage))
        yield used
        yield share
        yield pending


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


__all__ = [
    "AbuseLimiter",
    "QuotaCollector",
    "Refusal",
    "UsageRow",
    "month_of",
    "next_month_start",
    "parse_month",
]
