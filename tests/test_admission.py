"""The start gate: a burst of answers starts a bounded number at a time."""

from __future__ import annotations

import asyncio

import pytest

from app.pipeline.admission import StartGate


async def test_only_the_limit_enters_and_the_next_enters_when_one_leaves() -> None:
    gate = StartGate(limit=2, hold=30)
    first = await gate.enter()
    await gate.enter()
    third = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0.05)
    assert not third.done()  # two answers are starting: the third waits

    first()
    first()  # leaving twice gives back one place, not two
    leave_third = await asyncio.wait_for(third, 1)
    fourth = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0.05)
    assert not fourth.done()
    leave_third()
    (await asyncio.wait_for(fourth, 1))()


async def test_an_answer_slow_to_its_first_words_gives_its_place_away() -> None:
    # A Dify app that thinks for seconds must not stall every question behind it.
    gate = StartGate(limit=1, hold=0.1)
    await gate.enter()  # never leaves by itself
    leave = await asyncio.wait_for(gate.enter(), 1)
    leave()


async def test_places_are_given_in_arrival_order() -> None:
    gate = StartGate(limit=1, hold=30)
    leave = await gate.enter()
    order: list[int] = []

    async def waiter(n: int) -> None:
        (await gate.enter())()
        order.append(n)

    tasks = [asyncio.ensure_future(waiter(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    leave()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == [0, 1, 2, 3, 4]


def test_a_gate_needs_at_least_one_place_and_a_positive_hold() -> None:
    with pytest.raises(ValueError):
        StartGate(limit=0)
    with pytest.raises(ValueError):
        StartGate(limit=1, hold=0)
