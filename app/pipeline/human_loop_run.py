"""The run behind a Human Input form: paused, and followed again once a form is answered.

``paused``: each form the run paused on is stored in Redis (:mod:`app.state.form_store`) and
shown with the answer so far (``Reply.ask``). After an accepted click, the run is followed
(``GET /workflow/{id}/events``) into a new reply in the same thread, like any other answer: edits,
final text, sources, buttons; or the next form when it pauses again.
:class:`~app.pipeline.human_loop.HumanLoop` inherits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from redis.exceptions import RedisError

from app import texts
from app.config.settings import AppMode, Route
from app.dify.errors import DifyError
from app.errors import UserFacingError
from app.pipeline.answer_extras import chat_extras, stream_error
from app.pipeline.answer_fold import Answer, fold, workflow_answer
from app.pipeline.failures import new_ref, safe_fail
from app.pipeline.forms import HumanForm, form_from_event
from app.pipeline.human_loop_access import blocked
from app.pipeline.human_loop_resume import RunEvents, fail_with, final_text, stored_answer
from app.pipeline.model import (
    IncomingMessage,
    Kind,
    PlatformLimits,
    Reply,
    ReplyExtras,
    Speaker,
    ThreadKey,
)
from app.pipeline.streaming import EditScheduler, deliver_final
from app.redact import Restorer
from app.state.form_store import FormStore, PendingForm
from app.state.inflight import INTERRUPTED
from app.state.store import LockTimeout

if TYPE_CHECKING:
    from app.pipeline.bridge import Bridge

log = structlog.get_logger("app.pipeline.human_loop")


class HumanLoopRun:
    """The run half of :class:`~app.pipeline.human_loop.HumanLoop`: what it needs of the loop is
    declared here."""

    _bridge: Bridge
    store: FormStore

    # ------------------------------------------------------------------ a run paused

    async def paused(
        self,
        *,
        thread: ThreadKey,
        route: Route,
        reply: Reply,
        answer: Answer,
        text: str,
        notices: Sequence[str],
        user: str,
        asker: str,
        budget: Any,
        before: int = 0,
    ) -> None:
        """Store and show the forms the run paused on. ``text``: the answer so far (restored);
        ``before``: how much of the Dify message precedes this part (the stored message of a
        resumed chatflow run holds the whole answer)."""
        forms: list[HumanForm] = []
        for ev in answer.forms:
            form = form_from_event(ev)
            run_id = ev.workflow_run_id or ""
            if form.answerable and ev.form_token and run_id:
                try:
                    await self.store.save(
                        PendingForm(
                            form=form,
                            thread=thread,
                            route=route.name,
                            run_id=run_id,
                            token=ev.form_token,
                            user=user,
                            asker=asker,
                            conversation_id=answer.conversation_id or "",
                            message_id=answer.message_id or "",
                            before=before + len(answer.text),
                        )
                    )
                except RedisError as e:
                    log.warning("forms.save_failed", error=type(e).__name__)
                    form = blocked(form, texts.FORM_NOT_SAVED)
            forms.append(form)
            self._bridge.metrics.forms.labels(thread.platform, "shown").inc()
            log.info(
                "forms.shown",
                form=form.form_id,
                answerable=form.answerable,
                fields=len(form.fields),
                actions=len(form.actions),
            )
        # No conversation id: a half-answer offers no "New topic" or feedback buttons.
        extras = ReplyExtras(notices=list(notices), route=route.name)
        platform = thread.platform

        async def ask() -> None:
            await reply.ask(text, forms, extras)

        await deliver_final(
            ask,
            budget=budget,
            on_ratelimited=self._bridge.metrics.ratelimited.labels(platform).inc,
        )

    # ------------------------------------------------------------------ the run goes on

    async def _continue(
        self,
        p: PendingForm,
        route: Route,
        reply: Reply,
        limits: PlatformLimits,
        restorer: Restorer | None,
        events: RunEvents,
    ) -> None:
        ref = new_ref()
        structlog.contextvars.bind_contextvars(
            platform=p.thread.platform, thread=p.thread.log_id, ref=ref, route=route.name
        )
        # Recorded like any answer, so a replica dying mid-stream leaves no frozen placeholder.
        origin = IncomingMessage(
            key=p.thread,
            event_id=f"form:{p.form.key}",
            speaker=Speaker(id=p.asker),
            text="",
            kind=Kind.THREAD_REPLY,
        )
        try:
            async with self._bridge.recorded(origin, reply) as record:
                await reply.start(limits.placeholder)
                await record.refresh()  # now with the placeholder's id
                async with self._bridge.store.lock(
                    p.thread, order=time.time(), mark_known=True, settle=0.0
                ):
                    await self._follow(p, route, reply, limits, restorer, ref, events)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(safe_fail(reply, INTERRUPTED, ref)), 5)
            raise
        except LockTimeout:
            await safe_fail(reply, texts.FORM_RUN_BUSY, ref)
        except RedisError as e:
            log.error("store.unavailable", step="form_resume", error=type(e).__name__)
            await safe_fail(reply, texts.FORM_STORAGE_DOWN, ref)
        except UserFacingError as e:
            await safe_fail(reply, e.user_message, ref)
        except Exception as e:
            log.error("forms.resume_crashed", error=type(e).__name__, exc_info=e)
            await safe_fail(reply, texts.FORM_INTERNAL, ref)
        finally:
            await events.batches.aclose()
            structlog.contextvars.unbind_contextvars("platform", "thread", "ref", "route")

    async def _follow(
        self,
        p: PendingForm,
        route: Route,
        reply: Reply,
        limits: PlatformLimits,
        restorer: Restorer | None,
        ref: str,
        events: RunEvents,
    ) -> None:
        bridge = self._bridge
        platform = p.thread.platform
        client = bridge.client_for(route)
        budget = bridge.budgets.get(platform, p.thread.workspace, limits.workspace_edits_per_minute)

        async def send(text: str, status: str | None) -> None:
            await reply.update(text, status=status)

        scheduler = EditScheduler(
            send,
            interval=max(route.config.edit_interval, limits.min_edit_interval),
            budget=budget,
            on_edit=bridge.metrics.edits.labels(platform).inc,
            on_ratelimited=bridge.metrics.ratelimited.labels(platform).inc,
        )
        ans = Answer(
            thinking_status=route.config.thinking_status,
            conversation_id=p.conversation_id or None,
            message_id=p.message_id or None,
        )
        started = time.monotonic()

        def shown(text: str) -> str:
            return restorer.partial(text) if restorer else text

        store = bridge.store
        writes: list[asyncio.Task[None]] = []

        def take(batch: list[Any]) -> None:
            changed = False
            for ev in batch:
                if ans.task_id is None and ev.task_id and ev.event != "ping":
                    # The resumed run's task, for the Stop button (any replica).
                    ans.task_id = ev.task_id
                    writes.append(
                        asyncio.create_task(
                            store.save_stream_ids(
                                p.thread, route=route.name, user=p.user, task_id=ev.task_id
                            )
                        )
                    )
                fold(ev, ans)
                changed = changed or ans.changed
            if changed and (ans.text or ans.status):
                scheduler.push(shown(ans.text), ans.status)

        try:
            try:
                take(events.first)
                async for batch in events.batches:
                    take(batch)
            finally:
                for w in await asyncio.gather(*writes, return_exceptions=True):
                    if isinstance(w, BaseException):
                        log.warning("store.write_failed", error=type(w).__name__)
                try:
                    stop_request = await store.end_stream(p.thread)
                except RedisError as e:
                    log.warning("store.write_failed", step="end_stream", error=type(e).__name__)
                    stop_request = None
        except DifyError as e:
            await scheduler.close()
            partial = (e.progress.partial_text if e.progress else "") or ans.text
            await fail_with(reply, final_text(partial, restorer), e.user_message, ref)
            bridge.metrics.answers.labels(platform, "failed").inc()
            log.warning("forms.resume_failed", error=type(e).__name__, code=e.code)
            return
        await scheduler.close()
        if ans.error is not None:
            err = stream_error(ans.error)
            await fail_with(reply, final_text(ans.text, restorer), err.user_message, ref)
            bridge.metrics.answers.labels(platform, "failed").inc()
            return
        if ans.workflow_status == "paused" and ans.forms:
            await self.paused(
                thread=p.thread,
                route=route,
                reply=reply,
                answer=ans,
                text=final_text(ans.text, restorer),
                notices=ans.notices,
                user=p.user,
                asker=p.asker,
                budget=budget,
                before=p.before,
            )
            return
        text = ans.text
        mode = route.config.dify.mode
        if not text.strip() and mode.is_chat and ans.conversation_id and ans.message_id:
            # Attached after the run had finished (Dify relays live events only): the stored
            # message holds the whole answer, the part before the form included.
            text = await stored_answer(client, ans, p)
        if mode is AppMode.WORKFLOW:
            text = workflow_answer(text, ans.outputs, route.config.dify.output_variable)
        text = final_text(text, restorer)
        extras = ReplyExtras(
            dify_message_id=ans.message_id if mode.is_chat else None,
            conversation_id=ans.conversation_id,
            sources=ans.sources if route.config.show_sources else [],
            files=ans.files,
            notices=list(ans.notices),
            route=route.name,
        )
        if ans.workflow_status == "stopped" or (stop_request and stop_request == ans.task_id):
            extras.stopped = True
            extras.notices.append(texts.STOPPED)
        elif mode.is_chat and ans.message_id:
            extras.suggested, _ = await chat_extras(
                client,
                user=p.user,
                message_id=ans.message_id,
                conversation_id=ans.conversation_id,
                want_suggested=await bridge.params.offers_follow_ups(route),
                want_name=False,
            )
        if not text.strip() and not extras.files:
            text = texts.FORM_RUN_NO_TEXT

        async def finish() -> None:
            await reply.finish(text, extras)

        await deliver_final(
            finish, budget=budget, on_ratelimited=bridge.metrics.ratelimited.labels(platform).inc
        )
        bridge.metrics.latency.observe(time.monotonic() - started)
        bridge.metrics.answers.labels(platform, "ok").inc()
        log.info("forms.resumed_answer_finished", chars=len(text))
