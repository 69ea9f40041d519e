"""What keeps the service from working right now, as adapters and the core report it.

``/readyz`` is 503 while any condition is down and lists each one's reason, so a probe, a load
balancer and an admin reading the body all see the same truth. Adapters report through
``AdapterContext.health``: ``down`` when a platform cannot work (wrong token, unreachable, a lost
Socket Mode connection), ``up`` when it works again. The reporter logs each failure with the
setting to look at and the fix; a recovery is logged here, once.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Condition:
    """Why one component cannot work: what happened, which setting to check, what to do."""

    component: str
    reason: str
    setting: str = ""
    fix: str = ""

    def text(self) -> str:
        where = f" (check {self.setting})" if self.setting else ""
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.component}: {self.reason}{where}{fix}"


class Health:
    """The set of conditions that are down now; empty means every component works."""

    def __init__(self) -> None:
        self._down: dict[str, Condition] = {}
        self._pending: set[str] = set()

    def pending(self, component: str) -> None:
        """Not known yet (a first connection still under way): not ready, nothing to log."""
        if component not in self._down:
            self._pending.add(component)

    def down(self, component: str, reason: str, *, setting: str = "", fix: str = "") -> None:
        cond = Condition(component, reason, setting, fix)
        self._pending.discard(component)
        if self._down.get(component) == cond:
            return
        # The caller logs the failure itself (one line per failed attempt, with its details).
        self._down[component] = cond

    def up(self, component: str) -> None:
        self._pending.discard(component)
        if self._down.pop(component, None) is not None:
            log.info("health.recovered", component=component)

    def is_down(self, component: str) -> bool:
        return component in self._down

    @property
    def ok(self) -> bool:
        return not self._down and not self._pending

    def reasons(self) -> list[str]:
        out = [c.text() for c in self._down.values()]
        out += [f"{name}: starting (first connection not made yet)" for name in self._pending]
        return sorted(out)


class Backoff:
    """Exponential delays with jitter, for reconnect loops: 1, 2, 4 … ``cap`` seconds."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        delay: float = min(self.cap, self.first * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        # Up to 20 % jitter so replicas do not reconnect in lockstep.
        return delay * (0.8 + 0.4 * random.random())  # noqa: S311 - not for security

    async def sleep(self) -> float:
        delay = self.next()
        await asyncio.sleep(delay)
        return delay
