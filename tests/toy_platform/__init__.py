"""A toy chat platform: one package and one entry point, and nothing in ``app/`` changed for it.

People post to ``POST /toy/messages`` (``{"id", "thread", "user", "text"}``) and their chat
client reads the thread with ``GET /toy/threads/<thread>``: every edit of the answer, in order.
The adapter reaches the core only through what :class:`~app.seams.context.AdapterContext` hands it:
the narrow bridge API and its own namespace in Redis.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.pipeline.forms import HumanForm
from app.pipeline.model import (
    IncomingMessage,
    Kind,
    PlatformLimits,
    ReplyExtras,
    Speaker,
    ThreadKey,
)
from app.seams.context import AdapterContext
from app.seams.plugin import Platform

NAME = "toy"
LIMITS = PlatformLimits(
    max_message_chars=4000, min_edit_interval=0.2, workspace_edits_per_minute=6000
)


class ToyReply:
    """Writes what the core says into the thread's list of events (what the client shows)."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        self._events = events

    async def start(self, placeholder: str) -> None:
        self._events.append(("start", placeholder))

    async def update(self, text: str, *, status: str | None = None) -> None:
        self._events.append(("update", text))

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        self._events.append(("finish", text))

    async def fail(self, message: str, *, ref: str) -> None:
        self._events.append(("fail", message))

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        self._events.append(("ask", text))

    def resume_token(self) -> None:
        return None  # the toy keeps its threads in memory: nothing another replica could edit


class ToyAdapter:
    name = NAME
    limits = LIMITS

    def __init__(self, ctx: AdapterContext) -> None:
        self._bridge = ctx.bridge
        self._kv = ctx.store.for_platform(NAME)
        self.threads: dict[str, list[tuple[str, str]]] = {}

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/toy/messages", self._on_message)
        app.router.add_get("/toy/threads/{thread}", self._on_read)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def resume(self, token: Any, text: str) -> None:
        return None  # never called: ToyReply gives no resume token

    def _key(self, thread: str) -> ThreadKey:
        return ThreadKey(NAME, "toy-workspace", "toy-channel", thread)

    async def _on_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not all(isinstance(body.get(f), str) and body[f] for f in ("id", "thread", "text")):
            return web.json_response({"error": "id, thread and text are required"}, status=400)
        # The toy client retries: the core answers an event id once, the toy acks once.
        if not await self._kv.claim(f"post:{body['id']}"):
            return web.json_response({"duplicate": True})
        await self._kv.set(f"last:{body['thread']}", body["id"], ttl=60)
        msg = IncomingMessage(
            key=self._key(body["thread"]),
            event_id=body["id"],
            speaker=Speaker(id=str(body.get("user", "someone"))),
            text=body["text"],
            kind=Kind.DIRECT,
        )
        events = self.threads.setdefault(body["thread"], [])
        self._bridge.submit(msg, ToyReply(events), self.limits)
        return web.json_response({"accepted": True}, status=202)

    async def _on_read(self, request: web.Request) -> web.Response:
        thread = request.match_info["thread"]
        return web.json_response(
            {
                "events": self.threads.get(thread, []),
                "known": await self._bridge.thread_known(self._key(thread)),
                "last": await self._kv.get(f"last:{thread}"),
            }
        )


def create(ctx: AdapterContext) -> ToyAdapter:
    return ToyAdapter(ctx)


PLATFORM = Platform(name=NAME, create=create)
