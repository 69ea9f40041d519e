"""A per-app circuit breaker: stop calling a Dify app that keeps failing, try again later.

States::

    closed ──(``failures`` consecutive failures)──▶ open ──(``reset_seconds``)──▶ half_open
       ▲                                              ▲                              │
       └───────────── trial call succeeds ────────────┼──── trial call fails ────────┘

In ``half_open`` exactly one caller is let through as the trial; the others get
:class:`CircuitOpen` until it reports. A trial that never reports (its caller was cancelled)
does not wedge the breaker: after another ``reset_seconds`` a new trial is allowed.

What counts as a failure is the client's decision (see ``DifyClient``): 5xx, timeouts, connection
and protocol errors, ``too_many_requests``, broken streams and stream errors with status >= 500.
Any other answer from Dify, including 4xx, auth errors and ``rate_limit_error``, proves the service
is up and counts as a success: opening the breaker would not make those calls work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from app.dify.errors import CircuitOpen

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open trial. Not thread-safe (asyncio only)."""

    __slots__ = (
        "_clock",
        "_failures",
        "_on_change",
        "_open",
        "_opened_at",
        "_threshold",
        "_trial_at",
        "reset_seconds",
    )

    def __init__(
        self,
        *,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State, State], None] | None = None,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if not reset_seconds > 0:
            raise ValueError("reset_seconds must be positive")
        self._threshold = failures
        self.reset_seconds = float(reset_seconds)
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._open = False
        self._opened_at = 0.0
        self._trial_at: float | None = None

    @property
    def state(self) -> State:
        """``closed``, ``open``, or ``half_open`` once ``reset_seconds`` passed since opening."""
        if not self._open:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def check(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go ahead now."""
        if not self._open:
            return
        now = self._clock()
        waited = now - self._opened_at
        if waited < self.reset_seconds:
            raise CircuitOpen(retry_after=self.reset_seconds - waited)
        if self._trial_at is not None and now - self._trial_at < self.reset_seconds:
            raise CircuitOpen(
                "circuit breaker is half-open and a trial call is running",
                retry_after=self.reset_seconds - (now - self._trial_at),
            )
        self._trial_at = now

    def record_success(self) -> None:
        """Dify answered: close the breaker and forget earlier failures."""
        before = self.state
        self._failures = 0
        self._open = False
        self._trial_at = None
        self._changed(before, "closed")

    def record_failure(self) -> None:
        """A call failed in a way that says Dify is unwell."""
        before = self.state
        self._failures += 1
        if before == "half_open" or (before == "closed" and self._failures >= self._threshold):
            self._open = True
            self._opened_at = self._clock()
            self._trial_at = None
        self._changed(before, self.state)

    def _changed(self, before: State, after: State) -> None:
        if before != after and self._on_change is not None:
            self._on_change(before, after)

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state}, failures={self._failures}/{self._threshold})"


__all__ = ["CircuitBreaker", "State"]
