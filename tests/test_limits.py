"""Abuse limits against the real Redis: shared token buckets, monthly quotas, usage counters,
and one story through the whole pipeline with the fake Dify on the wire."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis
from redis.crc import key_slot

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.config.settings import Route, RouteConfig, Settings, load_settings
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.state.limits import AbuseLimiter, QuotaCollector, UsageRow
from app.state.store import RedisStore


class Clock:
    """A hand-moved clock (epoch seconds) shared by limiters that play different replicas."""

    def __init__(self, when: datetime | None = None) -> None:
        self.now = (when or datetime(2026, 11, 23, 9, 0, tzinfo=UTC)).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def store(redis: Redis, prefix: str) -> AsyncIterator[RedisStore]:
    yield RedisStore(redis, prefix=prefix)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await redis.delete(*keys)


def settings(user: float = 0, workspace: float = 0) -> Settings:
    return load_settings(
        env={"USER_RATE_PER_MINUTE": str(user), "WORKSPACE_RATE_PER_MINUTE": str(workspace)}
    )


def route(name: str = "helpdesk", quota: int = 0) -> Route:
    return Route(RouteConfig(name=name, monthly_token_quota=quota), "http://dify.invalid", "app-x")


def msg(user: str = "U1", workspace: str = "T1", platform: str = "slack") -> IncomingMessage:
    return IncomingMessage(
        key=ThreadKey(platform, workspace, "C1", "1700000000.000100"),
        event_id=f"ev-{uuid.uuid4().hex}",
        speaker=Speaker(id=user, name="Someone"),
        text="a question",
        kind=Kind.MENTION,
    )


async def allowed(limiter: AbuseLimiter, m: IncomingMessage, r: Route | None = None) -> bool:
    return await limiter.check(m, r or route()) is None


# ---------------------------------------------------------------------- rate limits


async def test_a_user_who_asks_too_fast_is_refused_until_the_bucket_refills(
    store: RedisStore,
) -> None:
    clock = Clock()
    limiter = AbuseLimiter(store, settings(user=3), clock=clock)
    assert [await allowed(limiter, msg()) for _ in range(3)] == [True, True, True]
    refusal = await limiter.check(msg(), route())
    assert refusal is not None
    assert refusal.scope == "user"
    # 3 a minute: the next question is possible 20 s after the bucket ran dry.
    assert refusal.message == (
        "You're asking faster than I can answer: please wait about 20 seconds."
    )
    clock.advance(19)
    assert not await allowed(limiter, msg())
    clock.advance(1)
    assert await allowed(limiter, msg())
    assert not await allowed(limiter, msg())
    clock.advance(3600)  # a long pause refills only up to one minute's worth
    assert [await allowed(limiter, msg()) for _ in range(4)] == [True, True, True, False]


async def test_another_user_in_the_same_workspace_is_not_slowed_by_the_first(
    store: RedisStore,
) -> None:
    limiter = AbuseLimiter(store, settings(user=1), clock=Clock())
    assert await allowed(limiter, msg("alice"))
    assert not await allowed(limiter, msg("alice"))
    assert await allowed(limiter, msg("bob"))
    # The same user id in another workspace or on another platform is someone else.
    assert await allowed(limiter, msg("alice", workspace="T2"))
    assert await allowed(limiter, msg("alice", platform="teams"))


async def test_a_busy_workspace_refuses_everyone_with_its_own_message(
    store: RedisStore,
) -> None:
    clock = Clock()
    limiter = AbuseLimiter(store, settings(workspace=2), clock=clock)
    assert await allowed(limiter, msg("alice"))
    assert await allowed(limiter, msg("bob"))
    refusal = await limiter.check(msg("carol"), route())
    assert refusal is not None
    assert refusal.scope == "workspace"
    assert "This workspace is asking the assistant more questions" in refusal.message
    assert "about 30 seconds" in refusal.message
    assert await allowed(limiter, msg("carol", workspace="T2"))  # other workspaces carry on
    clock.advance(30)
    assert await allowed(limiter, msg("carol"))


async def test_one_user_hammering_the_bot_does_not_use_up_the_workspace_allowance(
    store: RedisStore,
) -> None:
    limiter = AbuseLimiter(store, settings(user=1, workspace=3), clock=Clock())
    results = [await allowed(limiter, msg("spammer")) for _ in range(10)]
    assert results.count(True) == 1
    # Refused questions took nothing from the workspace bucket: two more people still get in.
    assert await allowed(limiter, msg("bob"))
    assert await allowed(limiter, msg("carol"))
    refusal = await limiter.check(msg("dave"), route())
    assert refusal is not None and refusal.scope == "workspace"


async def test_two_replicas_share_one_bucket(redis_url: str, store: RedisStore) -> None:
    other_client: Redis = Redis.from_url(redis_url)
    try:
        clock = Clock()
        replica_a = AbuseLimiter(store, settings(user=4), clock=clock)
        replica_b = AbuseLimiter(
            RedisStore(other_client, prefix=store.prefix), settings(user=4), clock=clock
        )
        turns = [replica_a, replica_b] * 3
        assert [await allowed(r, msg()) for r in turns] == [True] * 4 + [False] * 2
        clock.advance(15)  # one question's worth for both of them
        assert await allowed(replica_b, msg())
        assert not await allowed(replica_a, msg())
    finally:
        await other_client.aclose()


async def test_a_burst_across_replicas_lets_exactly_the_bucket_size_through(
    redis_url: str, store: RedisStore
) -> None:
    clients: list[Redis] = [Redis.from_url(redis_url) for _ in range(3)]
    try:
        clock = Clock()
        replicas = [
            AbuseLimiter(RedisStore(c, prefix=store.prefix), settings(workspace=5), clock=clock)
            for c in clients
        ]
        results = await asyncio.gather(
            *(allowed(replicas[i % 3], msg(f"user{i}")) for i in range(30))
        )
        assert results.count(True) == 5
    finally:
        for c in clients:
            await c.aclose()


async def test_a_replica_whose_clock_lags_does_not_refill_the_bucket(
    store: RedisStore,
) -> None:
    ahead, behind = Clock(), Clock()
    behind.advance(-120)
    fast = AbuseLimiter(store, settings(user=1), clock=ahead)
    slow = AbuseLimiter(store, settings(user=1), clock=behind)
    assert await allowed(fast, msg())
    assert not await allowed(slow, msg())
    assert not await allowed(fast, msg())


async def test_zero_rates_mean_unlimited(store: RedisStore) -> None:
    limiter = AbuseLimiter(store, settings(user=0, workspace=0), clock=Clock())
    assert all([await allowed(limiter, msg()) for _ in range(50)])
    assert [k async for k in store.redis.scan_iter(match=f"{store.prefix}:rl:*")] == []


async def test_a_bucket_and_its_workspace_bucket_share_one_cluster_slot(
    store: RedisStore,
) -> None:
    limiter = AbuseLimiter(store, settings(user=5, workspace=5), clock=Clock())
    assert await allowed(limiter, msg("alice", workspace="T{weird}id"))
    assert await allowed(limiter, msg("bob", workspace="T{weird}id"))
    keys = [k async for k in store.redis.scan_iter(match=f"{store.prefix}:rl:*")]
    assert len(keys) == 3  # two users, one workspace
    assert len({key_slot(k) for k in keys}) == 1
    # Raw ids never appear in keys (they may be long or contain braces).
    assert not any(b"weird" in k or b"alice" in k for k in keys)
    # Idle buckets clean themselves up.
    ttls = [await store.redis.pttl(k) for k in keys]
    assert all(60_000 < t <= 120_000 for t in ttls)  # a full refill plus a minute


async def test_questions_are_let_through_when_redis_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    dead: Redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        limiter = AbuseLimiter(RedisStore(dead, prefix="x"), settings(user=1), clock=Clock())
        started = time.monotonic()
        assert await limiter.check(msg(), route(quota=10)) is None
        await limiter.record_usage(msg(), route(quota=10), 5)  # queued for later, not raised
        assert time.monotonic() - started < 5
        assert limiter.pending_usage == 1
        assert await limiter.aclose(timeout=0.2) == 1  # still down at shutdown: logged as lost
    finally:
        await dead.aclose()


# ---------------------------------------------------------------------- quotas and usage


async def test_the_monthly_quota_refuses_once_used_up_and_resets_next_month(
    store: RedisStore,
) -> None:
    clock = Clock(datetime(2026, 11, 30, 22, 0, tzinfo=UTC))
    limiter = AbuseLimiter(store, settings(), clock=clock)
    helpdesk = route("helpdesk", quota=1000)
    assert await allowed(limiter, msg("alice"), helpdesk)
    await limiter.record_usage(msg("alice"), helpdesk, 600)
    assert await allowed(limiter, msg("bob"), helpdesk)
    await limiter.record_usage(msg("bob"), helpdesk, 400)
    refusal = await limiter.check(msg("carol"), helpdesk)
    assert refusal is not None
    assert refusal.scope == "quota"
    assert refusal.message == (
        "This workspace has used its monthly assistant quota for this channel; "
        "it resets on 1 December."
    )
    # Other workspaces and routes without a quota are not affected.
    assert await allowed(limiter, msg("carol", workspace="T2"), helpdesk)
    assert await allowed(limiter, msg("carol"), route("general"))
    clock.now = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC).timestamp()
    assert await allowed(limiter, msg("carol"), helpdesk)


async def test_the_december_quota_resets_on_the_first_of_january(store: RedisStore) -> None:
    clock = Clock(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    limiter = AbuseLimiter(store, settings(), clock=clock)
    tiny = route("tiny", quota=1)
    await limiter.record_usage(msg(), tiny, 1)
    refusal = await limiter.check(msg(), tiny)
    assert refusal is not None and refusal.message.endswith("it resets on 1 January.")


async def test_usage_is_counted_per_route_workspace_and_user(store: RedisStore) -> None:
    clock = Clock(datetime(2026, 10, 15, tzinfo=UTC))
    limiter = AbuseLimiter(store, settings(), clock=clock)
    await limiter.record_usage(msg("alice"), route("helpdesk"), 120)
    await limiter.record_usage(msg("alice"), route("helpdesk"), 30)
    await limiter.record_usage(msg("bob"), route("helpdesk"), 500)
    await limiter.record_usage(msg("alice", workspace="T2"), route("helpdesk"), 7)
    await limiter.record_usage(msg("alice", platform="teams"), route("hr"), 42)
    clock.now = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    await limiter.record_usage(msg("alice"), route("helpdesk"), 1)  # next month

    assert await limiter.usage(month="2026-10") == [
        UsageRow("helpdesk", "slack:T1", "bob", 500),
        UsageRow("helpdesk", "slack:T1", "alice", 150),
        UsageRow("helpdesk", "slack:T2", "alice", 7),
        UsageRow("hr", "teams:T1", "alice", 42),
    ]
    assert await limiter.usage(month="2026-10", route="hr") == [
        UsageRow("hr", "teams:T1", "alice", 42)
    ]
    assert await limiter.usage(month="2026-11") == [UsageRow("helpdesk", "slack:T1", "alice", 1)]
    assert await limiter.usage(month="2026-09") == []
    # Counters outlive a year's reports (~400 days) but not forever.
    keys = [k async for k in store.redis.scan_iter(match=f"{store.prefix}:usage:*")]
    ttls = [await store.redis.ttl(k) for k in keys]
    assert all(399 * 86400 < t <= 400 * 86400 for t in ttls)


async def test_a_month_that_is_not_yyyy_mm_is_refused(store: RedisStore) -> None:
    limiter = AbuseLimiter(store, settings())
    for bad in ("2026-13", "2026-1", "Nov 2026", "2026-11-01"):
        try:
            await limiter.usage(month=bad)
        except ValueError as e:
            assert "YYYY-MM" in str(e)
        else:
            raise AssertionError(f"{bad!r} was accepted")


async def test_nonsense_token_counts_are_not_recorded(store: RedisStore) -> None:
    clock = Clock()
    limiter = AbuseLimiter(store, settings(), clock=clock)
    bad: list[Any] = [0, -5, "12", 3.5, True, 10**12]
    for value in bad:
        await limiter.record_usage(msg(), route(), value)
    assert await limiter.usage(month="2026-11") == []


async def test_quota_figures_are_exposed_for_metrics(store: RedisStore) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    clock = Clock()
    limiter = AbuseLimiter(store, settings(), clock=clock)
    await limiter.record_usage(msg("alice"), route("helpdesk", quota=1000), 250)
    await limiter.record_usage(msg("bob", workspace="T2"), route("helpdesk", quota=1000), 100)
    await limiter.record_usage(msg("carol"), route("hr"), 40)

    # A fresh replica learns the month's figures from Redis.
    fresh = AbuseLimiter(store, settings(), clock=clock)
    await fresh.refresh_metrics([route("helpdesk", quota=1000), route("hr")])
    registry = CollectorRegistry()
    registry.register(QuotaCollector(fresh))
    text = generate_latest(registry).decode()
    assert 'bridge_month_tokens{route="helpdesk"} 350.0' in text
    assert 'bridge_month_tokens{route="hr"} 40.0' in text
    assert 'bridge_month_quota_used_ratio{route="helpdesk"} 0.25' in text
    assert 'bridge_month_quota_used_ratio{route="hr"} 0.0' in text
    assert "alice" not in text  # route labels only


# ---------------------------------------------------------------------- through the pipeline


def _chat_calls(fake: Any, app: Any) -> list[Any]:
    return [r for r in fake.requests_to("/chat-messages") if r.api_key == app.api_key]


def _console_msg(user: str, text: str) -> IncomingMessage:
    thread = ThreadKey("console", "W1", "C1", f"{time.time():.6f}-{uuid.uuid4().hex[:6]}")
    return IncomingMessage(
        key=thread,
        event_id=f"ev-{uuid.uuid4().hex}",
        speaker=Speaker(id=user, name=user),
        text=text,
        kind=Kind.MENTION,
    )


async def _ask(service: Any, m: IncomingMessage) -> MemoryReply:
    reply = MemoryReply()
    await service.bridge.handle(m, reply, CONSOLE_LIMITS)
    return reply


async def test_a_user_who_asks_too_fast_hears_so_and_dify_is_not_called(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "USER_RATE_PER_MINUTE": "1"})
    first = await _ask(svc, _console_msg("eager", "what is our VPN address?"))
    second = await _ask(svc, _console_msg("eager", "and the backup one?"))
    other = await _ask(svc, _console_msg("patient", "hello"))

    assert first.error is None and first.final == "You said: what is our VPN address?"
    assert second.final is None
    assert second.error is not None
    assert second.error.startswith("You're asking faster than I can answer: please wait about")
    assert other.final == "You said: hello"
    assert [c.json["query"] for c in _chat_calls(fake_dify, dify_app)] == [
        "what is our VPN address?",
        "hello",
    ]
    assert 'bridge_abuse_limited_total{scope="user"} 1.0' in svc.metrics.render().decode()


async def test_a_used_up_monthly_quota_stops_answers_and_usage_shows_who_spent_it(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    yaml = "routes:\n  - name: metered\n    monthly_token_quota: 5\n"
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=yaml)
    first = await _ask(svc, _console_msg("alice", "summarise the handbook please"))
    second = await _ask(svc, _console_msg("bob", "one more"))

    assert first.final == "You said: summarise the handbook please"
    assert second.error is not None and "monthly assistant quota" in second.error
    assert len(_chat_calls(fake_dify, dify_app)) == 1
    limiter = svc.bridge.limiter
    month = datetime.now(UTC).strftime("%Y-%m")
    rows = await limiter.usage(month=month, route="metered")
    assert [(r.workspace, r.user) for r in rows] == [("console:W1", "alice")]
    assert rows[0].tokens >= 5
