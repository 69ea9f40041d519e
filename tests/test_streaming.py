"""The edit scheduler turns a token stream into few, paced, coalesced edits."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import PlatformRateLimited
from app.pipeline.streaming import BudgetRegistry, EditBudget, EditScheduler, deliver_final


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self, *, fail_first: int = 0, retry_after: float = 0.05) -> None:
        self.sent: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_first = fail_first
        self.retry_after = retry_after
        self.calls = 0

    async def __call__(self, text: str, status: str | None) -> None:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if self.calls <= self.fail_first:
                raise PlatformRateLimited(self.retry_after, method="chat.update")
            self.sent.append(text)
        finally:
            self.in_flight -= 1


async def test_first_text_is_shown_at_once() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=5.0)
    sched.push("Hello")
    await asyncio.sleep(0.05)
    assert rec.sent == ["Hello"]
    await sched.close()


async def test_the_first_words_go_out_before_the_caller_reads_on() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=5.0)
    await sched.show_first("Hello")
    # Sent from the caller's own task: no worker, no loop turn in between.
    assert rec.sent == ["Hello"]
    sched.push("Hello, world")  # later text waits for the interval, as always
    await asyncio.sleep(0.02)
    assert rec.sent == ["Hello"]
    await sched.close()
    assert sched.edits == 1


async def test_a_first_edit_refused_with_429_is_retried_after_retry_after() -> None:
    rec = Recorder(fail_first=1, retry_after=0.05)
    sched = EditScheduler(rec, interval=0.01)
    await sched.show_first("partial")
    assert rec.sent == [] and sched.rate_limited == 1
    await asyncio.sleep(0.15)
    assert rec.sent == ["partial"]
    await sched.close()


async def test_the_first_words_wait_for_an_empty_budget_like_any_edit() -> None:
    budget = EditBudget(60, burst=1)
    assert budget.try_take() == 0  # someone else in the workspace took the only token
    rec = Recorder()
    sched = EditScheduler(rec, interval=0.01, budget=budget)
    await sched.show_first("Hello")
    assert rec.sent == []  # not sent inline: the worker waits for the next token
    await asyncio.sleep(1.2)  # one token per second
    assert rec.sent == ["Hello"]
    await sched.close()


async def test_text_pushed_while_the_first_edit_is_in_flight_never_overlaps_it() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=0.0)

    async def push_meanwhile() -> None:
        await asyncio.sleep(0.001)  # while show_first's edit is in flight (5 ms)
        sched.push("Hello, world")

    await asyncio.gather(sched.show_first("Hello"), push_meanwhile())
    await asyncio.sleep(0.05)
    await sched.close()
    assert rec.sent == ["Hello", "Hello, world"]
    assert rec.max_in_flight == 1


async def test_close_waits_for_a_first_edit_in_flight() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=0.0)
    first = asyncio.create_task(sched.show_first("Hello"))
    await asyncio.sleep(0.001)
    assert rec.in_flight == 1
    await sched.close()
    assert rec.in_flight == 0 and rec.sent == ["Hello"]
    await first


async def test_a_fast_stream_is_coalesced_into_few_edits_with_only_the_latest_text() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=0.1)
    text = ""
    for i in range(100):
        text += f"w{i} "
        sched.push(text)
        await asyncio.sleep(0.004)  # ~0.4 s of streaming
    await asyncio.sleep(0.15)
    await sched.close()
    # 0.55 s at one edit per 0.1 s: at most ~7 edits instead of 100.
    assert 2 <= len(rec.sent) <= 8
    assert rec.sent[-1] == text
    # Every edit showed a longer text than the one before: nothing stale is sent.
    assert all(len(a) < len(b) for a, b in zip(rec.sent, rec.sent[1:], strict=False))


async def test_never_two_edits_in_flight_for_one_message() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=0.0)
    for i in range(50):
        sched.push("x" * i)
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    await sched.close()
    assert rec.max_in_flight == 1


async def test_close_waits_for_the_edit_in_flight() -> None:
    rec = Recorder()
    sched = EditScheduler(rec, interval=0.0)
    sched.push("a")
    await asyncio.sleep(0.001)
    await sched.close()
    assert rec.in_flight == 0
    sched.push("ignored after close")
    await asyncio.sleep(0.01)
    assert "ignored after close" not in rec.sent


async def test_retry_after_slows_the_scheduler_down_and_the_text_still_lands() -> None:
    rec = Recorder(fail_first=1, retry_after=0.1)
    sched = EditScheduler(rec, interval=0.02)
    sched.push("partial")
    await asyncio.sleep(0.03)
    assert rec.sent == []  # the first try was refused with 429
    assert sched.interval > 0.02  # and the interval widened
    await asyncio.sleep(0.15)
    assert rec.sent == ["partial"]
    assert sched.rate_limited == 1
    await sched.close()


def test_budget_is_a_token_bucket_shared_per_workspace() -> None:
    clock = FakeClock()
    registry = BudgetRegistry(clock=clock)
    a = registry.get("slack", "T1", 60)
    assert registry.get("slack", "T1", 60) is a
    assert registry.get("slack", "T2", 60) is not a
    taken = 0
    while a.try_take() == 0:
        taken += 1
    assert taken == a.capacity == 10
    wait = a.try_take()
    assert 0.9 < wait <= 1.0  # one edit per second at 60/min
    clock.now += 1.0
    assert a.try_take() == 0


def test_a_429_empties_the_budget_for_everyone_until_retry_after() -> None:
    clock = FakeClock()
    b = EditBudget(600, clock=clock)
    b.penalize(3.0)
    assert b.try_take() == 3.0
    clock.now += 3.0
    # refill is counted from the last update, so tokens are back after the block
    assert b.try_take() == 0


def test_final_answers_go_before_interim_edits() -> None:
    clock = FakeClock()
    b = EditBudget(60, burst=1, clock=clock)
    b._priority_waiting = 1  # a final answer is waiting
    assert b.try_take() > 0  # interim edit steps back
    assert b.try_take(priority=True) == 0


async def test_many_answers_in_one_workspace_stay_within_the_budget() -> None:
    # 20 answers stream at once; the workspace allows 600 edits/min = 10/s, burst 10.
    budget = EditBudget(600)
    recs = [Recorder() for _ in range(20)]
    scheds = [EditScheduler(r, interval=0.0, budget=budget) for r in recs]
    for step in range(10):
        for s in scheds:
            s.push(f"text {step}")
        await asyncio.sleep(0.05)
    for s in scheds:
        await s.close()
    total = sum(len(r.sent) for r in recs)
    # 0.5 s elapsed: at most burst (10) + 0.5 s * 10/s (+1 rounding) edits in total.
    assert total <= 16
    assert total >= 10


async def test_final_delivery_retries_after_429_and_lands() -> None:
    calls: list[int] = []

    async def finish() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise PlatformRateLimited(0.01)
        return "done"

    assert await deliver_final(finish, budget=EditBudget(6000)) == "done"
    assert len(calls) == 3


async def test_close_never_hangs_when_it_races_with_pacing_and_budget() -> None:
    # Regression: the worker cleared its wake-up flag after close() had set it and then waited
    # forever. Hundreds of schedulers closing mid-stream must all finish.
    budget = EditBudget(60_000)

    async def run_one(i: int) -> None:
        rec = Recorder()
        sched = EditScheduler(rec, interval=0.001 * (i % 7), budget=budget)
        for step in range(20):
            sched.push(f"{i}-{step}")
            await asyncio.sleep(0.0005 * (i % 3))
        await sched.close()

    await asyncio.wait_for(asyncio.gather(*(run_one(i) for i in range(300))), timeout=20)


async def test_final_delivery_retries_a_platform_hiccup_but_not_a_hard_refusal() -> None:
    from app.errors import PlatformError

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise PlatformError("502 from the platform", code="http_502", retryable=True)
        return "landed"

    assert await deliver_final(flaky, budget=None) == "landed"
    assert len(calls) == 2

    async def refused() -> str:
        raise PlatformError("channel_not_found", code="channel_not_found")

    with pytest.raises(PlatformError):
        await deliver_final(refused, budget=None)
