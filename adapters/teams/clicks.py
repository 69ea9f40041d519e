"""Card buttons Teams delivers as messages: New topic, Stop, and the Human Input form buttons.

A card's ``Action.Submit`` arrives as a ``message`` activity without text or mention, carrying the
button's data in ``value``. The click's effect is decided before the 200; what the user reads
afterwards is posted in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import structlog
from redis.exceptions import RedisError

from adapters.teams import activities as acts
from adapters.teams import compose
from adapters.teams.reply import EditReply, Runtime, StreamReply
from app.errors import PlatformError
from app.pipeline.forms import FormAnswer, FormResult, Outcome, Responder
from app.pipeline.model import PlatformLimits
from app.seams.context import AdapterContext
from app.server.tasks import spawn
from app.state.platform_store import PlatformStore
from app.texts import RESET_DONE

log = structlog.get_logger(__name__)

RESET_FAILED = "Sorry, I could not start a new conversation just now. Please try again."
NOTHING_TO_STOP = "There is no answer to stop any more."


class CardClicks:
    """What a click on one of our card buttons does."""

    def __init__(self, ctx: AdapterContext, kv: PlatformStore, limits: PlatformLimits) -> None:
        self.ctx = ctx
        self._kv = kv
        self.limits = limits
        # Replies to clicks still being sent: stop() lets them finish before the connector's
        # session closes, instead of leaving them to fail against a closed session.
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for the replies to clicks, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def handle(self, inb: acts.Inbound, rt: Runtime) -> bool:
        """Act on the message if it is a click on one of our buttons; False when it is not."""
        form_click = compose.parse_form_click(inb.value)
        if form_click is not None:
            # A button of a Dify Human Input form card (Action.Submit with the inputs).
            await self._on_form_click(inb, rt, *form_click)
            return True
        if compose.is_reset_click(inb.value):
            # A card button click: Teams sends it as a message without text or mention.
            await self._on_reset_click(inb, rt)
            return True
        if compose.is_stop_click(inb.value):
            await self._on_stop_click(inb, rt)
            return True
        return False

    # ------------------------------------------------------------------ New topic button
    async def _on_reset_click(self, inb: acts.Inbound, rt: Runtime) -> None:
        """Forget the thread's Dify conversation (``Bridge.reset``), then say so in the thread.

        The reset is done before the 200, so a question sent right after the click already
        starts the new conversation; the confirmation is posted in the background."""
        key = acts.thread_key(inb)
        route = self.ctx.bridge.route_for(key)
        if route is None or not route.config.dify.mode.is_chat:
            log.info("teams.reset_click_ignored", why="no chat route for this thread")
            return
        try:
            if not await self._kv.claim(acts.event_id(inb)):
                log.info("teams.reset_click_duplicate")
                return
            await self.ctx.bridge.reset(thread=key)
            text = RESET_DONE
        except RedisError as e:
            log.warning("teams.reset_failed", error=type(e).__name__)
            text = RESET_FAILED
        # Answer under the card that was clicked (in channels: in its reply chain).
        place = replace(acts.place(inb), reply_to_id=inb.reply_to_id or inb.id)
        self._spawn(self._say(EditReply(rt, place, key), text), f"teams-reset-{key.log_id}")

    # ------------------------------------------------------------------ Human Input forms
    async def _on_form_click(
        self, inb: acts.Inbound, rt: Runtime, form_key: str, action: str, values: dict[str, str]
    ) -> None:
        """Answer the form in the background (the 200 goes out at once); a redelivered click
        is dropped by its activity id."""
        try:
            if not await self._kv.claim(acts.event_id(inb)):
                log.info("teams.form_click_duplicate")
                return
        except RedisError as e:
            log.warning("teams.form_click_dedup_failed", error=type(e).__name__)
        self._spawn(
            self._answer_form(inb, rt, form_key, action, values),
            f"teams-form-{acts.short(inb.conversation_id)}",
        )

    async def _answer_form(
        self, inb: acts.Inbound, rt: Runtime, form_key: str, action: str, values: dict[str, str]
    ) -> None:
        key = acts.thread_key(inb)
        place = acts.place(inb)
        # The rest of the answer: in 1:1 chats streamed, elsewhere edits, like any answer.
        reply = StreamReply(rt, place, key) if place.personal else EditReply(rt, place, key)
        note = EditReply(rt, replace(place, reply_to_id=inb.reply_to_id or inb.id), key)
        click = FormAnswer(
            form_key,
            action,
            values,
            Responder(id=inb.aad_object_id or inb.from_id, name=inb.from_name or "Someone"),
        )
        try:
            result = await self.ctx.bridge.answer_form(key, click, reply, self.limits)
        except Exception as e:  # the clicker always hears back
            log.warning("teams.form_failed", error=type(e).__name__)
            await self._say(note, "I couldn't send your answer. Please try again in a minute.")
            return
        log.info("teams.form_answered", outcome=result.outcome.value)
        if result.closed and result.form is not None and inb.reply_to_id:
            try:
                await note.show_card(inb.reply_to_id, compose.closed_form_part(result.form, result))
            except PlatformError as e:
                log.info("teams.form_card_update_failed", code=e.code)
        if result.outcome is not Outcome.ACCEPTED:
            await self._say(note, _for_clicker(inb.from_name, result))

    # ------------------------------------------------------------------ Stop button
    async def _on_stop_click(self, inb: acts.Inbound, rt: Runtime) -> None:
        """The Stop button under an answer being written (group chats, channels): stop the
        thread's running answer; it then ends with what was written and a "stopped" note."""
        key = acts.thread_key(inb)
        try:
            stopped = await self.ctx.bridge.stop(thread=key)
        except Exception as e:  # Redis or Dify down: say there is nothing stopped, never crash
            log.warning("teams.stop_failed", error=type(e).__name__)
            stopped = False
        if stopped:
            return
        place = replace(acts.place(inb), reply_to_id=inb.reply_to_id or inb.id)
        self._spawn(
            self._say(EditReply(rt, place, key), NOTHING_TO_STOP), f"teams-stop-{key.log_id}"
        )

    async def _say(self, reply: EditReply, text: str) -> None:
        try:
            await reply.say(text)
        except PlatformError as e:
            log.warning("teams.reset_reply_failed", code=e.code)


def _for_clicker(name: str, result: FormResult) -> str:
    """Teams has no message only the clicker sees: name them in the thread."""
    text = result.message
    if result.outcome is Outcome.ALREADY_DECIDED:
        text += " Your choice was not sent."
    return f"{name}: {text}" if name else text
