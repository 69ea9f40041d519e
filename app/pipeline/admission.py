"""Admission: how many answers may be in their start phase at once.

An answer's start (de-duplication, routing, redaction, the thread lock, opening the Dify stream,
the first words) is a few milliseconds of CPU packed into a few loop turns. A burst (a hundred
mentions posted at once, a thousand questions after an outage) would run every answer's start
in the same turns, and nothing else (timers, acks, the edits of answers already streaming) would
run until they were all done. The gate lets a bounded number through at a time; the others wait
their turn in arrival order.

A place is held until the answer's first words are shown, or for ``hold`` seconds at most: a
Dify app that takes long to its first token, or a thread whose earlier answer is still
running, gives its place to the next answer instead of stalling the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StartGate:
    """At most ``limit`` answers between their event and their first words (or ``hold`` s)."""

    def __init__(self, limit: int = 32, hold: float = 1.0) -> None:
        if limit < 1 or hold <= 0:
            raise ValueError("limit must be at least 1 and hold positive")
        self._sem = asyncio.Semaphore(limit)
        self._hold = hold

    async def enter(self) -> Callable[[], None]:
        """Wait for a place; returns ``leave``, which gives it back (idempotent)."""
        await self._sem.acquire()
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                timer.cancel()
                self._sem.release()

        timer = asyncio.get_running_loop().call_later(self._hold, leave)
        return leave


def no_gate() -> None:
    """``leave`` for an answer that never entered a gate."""


__all__ = ["StartGate", "no_gate"]
