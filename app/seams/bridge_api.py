"""The narrow API adapters drive the core through (``AdapterContext.bridge``).

Adapters never see the concrete :class:`~app.pipeline.bridge.Bridge`, its store or its registries:
what they may ask of the core is this protocol, so the pipeline can change behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from app.config.settings import Route
    from app.dify.appcheck import AppParams
    from app.pipeline.bridge import Bridge
    from app.pipeline.forms import FormAnswer, FormResult
    from app.pipeline.human_loop import GroupDirectory
    from app.pipeline.model import IncomingMessage, PlatformLimits, Reply, ThreadKey


class BridgeApi(Protocol):
    """What an adapter may ask of the core."""

    def submit(
        self, msg: IncomingMessage, reply: Reply, limits: PlatformLimits
    ) -> asyncio.Task[None]:
        """Answer ``msg`` into ``reply`` in the background and return at once (ack first)."""

    async def stop(self, *, thread: ThreadKey) -> bool:
        """Stop the answer streaming in ``thread``; False when none is."""

    async def reset(self, *, thread: ThreadKey) -> None:
        """Start a fresh Dify conversation in ``thread``."""

    async def feedback(
        self,
        *,
        thread: ThreadKey,
        message_id: str,
        rating: Literal["like", "dislike"] | None,
        content: str | None = None,
    ) -> None:
        """Send a rating of one answer (its Dify message id) to Dify."""

    async def answer_form(
        self,
        thread: ThreadKey,
        click: FormAnswer,
        reply: Reply,
        limits: PlatformLimits,
        *,
        groups: GroupDirectory | None = None,
    ) -> FormResult:
        """A click on a Human Input form's button; on ACCEPTED the run streams into ``reply``."""

    async def thread_known(self, thread: ThreadKey) -> bool:
        """True when the bot has answered (or is answering) in ``thread``."""

    def route_for(self, thread: ThreadKey) -> Route | None:
        """The Dify app that answers in ``thread`` (None: no route matches)."""

    def route_named(self, name: str) -> Route | None:
        """The route of that name (a button names the route its answer came from)."""

    @property
    def routes(self) -> Sequence[Route]:
        """Every configured route, in order."""

    async def app_params(self, route: Route) -> AppParams | None:
        """The Dify app's parameters (opening statement, suggested questions), None if unknown."""

    def preack_nowait(
        self, platform: str, event_id: str, token: Mapping[str, str]
    ) -> asyncio.Future[None] | None:
        """Record an event the adapter will surely answer before it acks, so another replica
        can tell the user if this one dies before answering. Queued at once, nothing awaited;
        None when crash cover is off."""

    async def preack(self, platform: str, event_id: str, token: Mapping[str, str]) -> None:
        """:meth:`preack_nowait`, awaited."""


class CoreBridgeApi:
    """:class:`BridgeApi` over the pipeline's :class:`~app.pipeline.bridge.Bridge`."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        # Bound once: submit runs for every message.
        self.submit = bridge.submit
        self.stop = bridge.stop
        self.reset = bridge.reset
        self.feedback = bridge.feedback
        self.answer_form = bridge.answer_form
        self.thread_known = bridge.thread_known

    def route_for(self, thread: ThreadKey) -> Route | None:
        return self._bridge.router.resolve(thread)

    def route_named(self, name: str) -> Route | None:
        return self._bridge.router.by_name(name)

    @property
    def routes(self) -> Sequence[Route]:
        return self._bridge.router.routes

    async def app_params(self, route: Route) -> AppParams | None:
        return await self._bridge.params.get(route)

    def preack_nowait(
        self, platform: str, event_id: str, token: Mapping[str, str]
    ) -> asyncio.Future[None] | None:
        inflight = self._bridge.inflight
        return None if inflight is None else inflight.preack_nowait(platform, event_id, token)

    async def preack(self, platform: str, event_id: str, token: Mapping[str, str]) -> None:
        inflight = self._bridge.inflight
        if inflight is not None:
            await inflight.preack(platform, event_id, token)
