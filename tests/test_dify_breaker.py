"""The circuit breaker stops hammering a sick Dify app and lets one trial through to test it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
import pytest

from app.dify import (
    CircuitBreaker,
    CircuitOpen,
    DifyBadRequest,
    DifyClient,
    DifyClientPool,
    DifyServerError,
    DifyTimeouts,
    MessageEnd,
    RetryPolicy,
    StreamError,
    make_http_client,
)
from tests.fakes.dify import FakeDify, Fault

KEY = "app-breaker"
USER = "teams:tenant:chat:root"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def no_sleep(_: float) -> None:
    return None


def state_of(breaker: CircuitBreaker) -> str:
    """The state read afresh: mypy keeps ``breaker.state`` narrowed by an earlier assert even
    across the call that changed it, and would call a later comparison impossible."""
    return breaker.state


# ------------------------------------------------------------------ unit level


def test_a_new_breaker_is_closed_and_lets_calls_through() -> None:
    b = CircuitBreaker(failures=3, reset_seconds=30)
    b.check()
    assert b.state == "closed"


def test_it_opens_after_the_given_number_of_consecutive_failures() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, reset_seconds=30, clock=clock)
    b.record_failure()
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert state_of(b) == "open"
    with pytest.raises(CircuitOpen) as info:
        b.check()
    assert info.value.retry_after == pytest.approx(30)
    assert "not available" in info.value.user_message


def test_a_success_in_between_resets_the_failure_count() -> None:
    b = CircuitBreaker(failures=2, reset_seconds=30, clock=Clock())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"


def test_after_the_reset_time_exactly_one_trial_call_is_let_through() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_seconds=10, clock=clock)
    b.record_failure()
    clock.now += 10
    assert b.state == "half_open"
    b.check()  # the trial
    with pytest.raises(CircuitOpen):
        b.check()  # everyone else waits for the trial's outcome


def test_a_successful_trial_closes_the_breaker() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(
        failures=1, reset_seconds=10, clock=clock, on_change=lambda a, z: changes.append((a, z))
    )
    b.record_failure()
    clock.now += 11
    b.check()
    b.record_success()
    assert b.state == "closed"
    b.check()
    assert changes == [("closed", "open"), ("half_open", "closed")]


def test_a_failed_trial_opens_the_breaker_for_another_full_period() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, reset_seconds=10, clock=clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    b.check()
    b.record_failure()  # a single failure is enough in half-open
    assert b.state == "open"
    clock.now += 9
    with pytest.raises(CircuitOpen):
        b.check()
    clock.now += 1
    assert state_of(b) == "half_open"


def test_a_trial_that_never_reports_back_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_seconds=5, clock=clock)
    b.record_failure()
    clock.now += 5
    b.check()  # trial starts, its caller is cancelled and never reports
    clock.now += 5
    b.check()  # a new trial is allowed


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0, reset_seconds=1)
    with pytest.raises(ValueError):
        CircuitBreaker(failures=1, reset_seconds=0)


# ------------------------------------------------------- with the client and Dify


@pytest.fixture
async def fake() -> AsyncIterator[FakeDify]:
    server = FakeDify()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client("aiohttp")
    try:
        yield client
    finally:
        await client.aclose()


def client_for(fake: FakeDify, http: httpx.AsyncClient, breaker: CircuitBreaker) -> DifyClient:
    return DifyClient(
        fake.base_url,
        KEY,
        http=http,
        timeouts=DifyTimeouts(connect=2, first_event=2, idle=2, request=2),
        retry=RetryPolicy(max_retries=0),
        breaker=breaker,
        sleep=no_sleep,
        rng=random.Random(1),  # noqa: S311 - deterministic jitter
    )


async def ask(client: DifyClient) -> list[object]:
    async with aclosing(
        client.chat_stream(query="hi", user=USER, conversation_id=None, inputs={})
    ) as s:
        return [e async for e in s]


async def test_a_failing_dify_opens_the_breaker_and_later_calls_fail_fast(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    for _ in range(3):
        app.faults.append(Fault.http(502, "bad_gateway", "Bad Gateway"))
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_seconds=30, clock=clock)
    client = client_for(fake, http, breaker)
    for _ in range(3):
        with pytest.raises(DifyServerError):
            await ask(client)
    assert breaker.state == "open"
    sent = len(fake.requests)
    with pytest.raises(CircuitOpen):
        await ask(client)
    assert len(fake.requests) == sent  # failed fast, Dify was not called

    # After the reset time the trial call goes through, succeeds and closes the breaker.
    clock.now += 30
    events = await ask(client)
    assert isinstance(events[-1], MessageEnd)
    assert state_of(breaker) == "closed"


async def test_user_mistakes_and_model_errors_do_not_open_the_breaker(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(
        KEY, user_input_form=[{"text-input": {"variable": "team", "required": True}}]
    )
    breaker = CircuitBreaker(failures=2, reset_seconds=30, clock=Clock())
    client = client_for(fake, http, breaker)
    for _ in range(3):
        with pytest.raises(DifyBadRequest):
            await ask(client)
    assert breaker.state == "closed"
    app.user_input_form = []
    for _ in range(3):
        app.faults.append(Fault.error_event(after_chunks=1, status=400))
        events = await ask(client)
        assert isinstance(events[-1], StreamError)
    assert breaker.state == "closed"


async def test_a_model_that_keeps_crashing_mid_stream_opens_the_breaker(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    breaker = CircuitBreaker(failures=2, reset_seconds=30, clock=Clock())
    client = client_for(fake, http, breaker)
    for _ in range(2):
        app.faults.append(
            Fault.error_event(
                after_chunks=0,
                code="internal_server_error",
                status=500,
                message="Internal Server Error, please contact support.",
            )
        )
        events = await ask(client)
        assert isinstance(events[-1], StreamError)
    assert breaker.state == "open"


async def test_the_pool_reports_breaker_transitions_for_metrics(fake: FakeDify) -> None:
    app = fake.add_app(KEY)
    for _ in range(2):
        app.faults.append(Fault.http(500, "internal_server_error", "Internal Server Error"))
    seen: list[tuple[str, str, str]] = []
    pool = DifyClientPool(
        retry=RetryPolicy(max_retries=0),
        breaker_failures=2,
        on_breaker_change=lambda url, a, z: seen.append((url, a, z)),
    )
    try:
        client = pool.client(fake.base_url, KEY)
        for _ in range(2):
            with pytest.raises(DifyServerError):
                await ask(client)
        with pytest.raises(CircuitOpen):
            await ask(client)
    finally:
        await pool.aclose()
    assert seen == [(fake.base_url, "closed", "open")]
