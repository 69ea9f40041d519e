"""The thumbs up/down under answers: Teams' ``message/submitAction`` invoke, passed on to Dify.

Teams names the rated message by its activity id; Dify wants its own message id. The reply
handle remembers the pair when it posts an answer (:meth:`Feedback.remember`), and the invoke
looks it up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, cast

import structlog
from aiohttp import web

from adapters.teams import activities as acts
from app.pipeline.model import ThreadKey
from app.seams.context import AdapterContext
from app.state.platform_store import PlatformStore

log = structlog.get_logger(__name__)

FEEDBACK_TIMEOUT = 10.0
FEEDBACK_LATEST = "fb:latest"  # the thread's newest answer (feedback without replyToId)
FEEDBACK_UNPLACED = (
    "Thanks! I could not tell which answer this feedback is for, so it was not recorded."
)


class Feedback:
    """Ratings of answers: the invoke Teams sends on a click, and the ids it needs."""

    def __init__(self, ctx: AdapterContext, kv: PlatformStore) -> None:
        self.ctx = ctx
        self._kv = kv

    async def on_invoke(self, inb: acts.Inbound) -> web.StreamResponse:
        value = inb.value if isinstance(inb.value, dict) else {}
        if inb.name != "message/submitAction" or value.get("actionName") != "feedback":
            log.debug("teams.invoke_ignored", name=inb.name or "")
            return web.Response(status=200)
        raw_action = value.get("actionValue")
        action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
        reaction = action.get("reaction")
        if reaction not in ("like", "dislike"):
            log.info("teams.feedback_unreadable")
            return _invoke_message(FEEDBACK_UNPLACED)
        comment = _feedback_text(action.get("feedback"))
        key = acts.thread_key(inb)
        try:
            placed = await asyncio.wait_for(
                self._send_feedback(key, inb.reply_to_id, reaction, comment), FEEDBACK_TIMEOUT
            )
        except Exception as e:
            # The click still succeeds in Teams; the log says why Dify did not get it.
            log.warning("teams.feedback_failed", error=type(e).__name__)
            placed = True
        if not placed:
            return _invoke_message(FEEDBACK_UNPLACED)
        # Teams wants 200 with an empty body, or it shows an error to the user.
        return web.Response(status=200)

    async def _send_feedback(
        self, key: ThreadKey, activity_id: str | None, reaction: str, comment: str | None
    ) -> bool:
        """Send the rating to Dify; False when the rated answer is unknown.

        Real Teams names the rated message (``replyToId``); the Agents Playground does not, and
        then the thread's latest answer is the one rated."""
        field = f"fb:{activity_id}" if activity_id else FEEDBACK_LATEST
        message_id = await self._kv.get(field, thread=key)
        if message_id is None:
            log.info("teams.feedback_unknown_message", named=bool(activity_id))
            return False
        await self.ctx.bridge.feedback(
            thread=key,
            message_id=message_id,
            rating=cast(Literal["like", "dislike"], reaction),
            content=comment,
        )
        return True

    async def remember(self, key: ThreadKey, activity_id: str, dify_id: str) -> None:
        ttl = int(self.ctx.settings.conversation_ttl_days * 86400)
        await self._kv.set_many(
            {f"fb:{activity_id}": dify_id, FEEDBACK_LATEST: dify_id}, ttl=ttl, thread=key
        )

    def enabled(self, route_name: str | None) -> bool:
        route = self.ctx.bridge.route_named(route_name) if route_name else None
        return route.config.feedback_buttons if route is not None else True


def _invoke_message(text: str) -> web.Response:
    """A polite invoke response: 200 (never a 4xx, which Teams shows as an error) with a
    message Teams may show the user."""
    return web.json_response(
        {"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text}
    )


def _feedback_text(raw: Any) -> str | None:
    """Teams sends the comment as a JSON string ``{"feedbackText": "..."}``."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:2000]
    text = data.get("feedbackText") if isinstance(data, dict) else None
    return text[:2000] if isinstance(text, str) and text.strip() else None
