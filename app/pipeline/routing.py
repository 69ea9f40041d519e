"""Which route (Dify app and per-route rules) answers a thread."""

from __future__ import annotations

from collections.abc import Sequence

from app.config.settings import Route
from app.pipeline.model import ThreadKey


class Router:
    """The most specific matching route wins (channel > workspace > platform); ties by file order.

    ``replace`` swaps the whole table at once, so a config reload never shows a half-built table to
    an answer that is being routed.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes: tuple[Route, ...] = ()
        self.replace(routes)

    def replace(self, routes: Sequence[Route]) -> None:
        ordered = sorted(enumerate(routes), key=lambda ir: (-ir[1].config.match.specificity, ir[0]))
        self._routes = tuple(r for _, r in ordered)

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def by_name(self, name: str) -> Route | None:
        return next((r for r in self._routes if r.name == name), None)

    def resolve(self, thread: ThreadKey) -> Route | None:
        for r in self._routes:
            m = r.config.match
            if m.platform is not None and m.platform != thread.platform:
                continue
            if m.workspace is not None and m.workspace != thread.workspace:
                continue
            if m.channel is not None and m.channel != thread.channel:
                continue
            return r
        return None
