"""Human-in-the-loop: a run paused on Dify Human Input forms, answered from the thread.

``paused``: the turn ended at ``workflow_paused``; each form is stored in Redis
(:mod:`app.state.form_store`) and shown with the answer so far (``Reply.ask``).
``answer``: a click (any replica) is checked (the form is known, still open, not expired; the
clicker may answer; the fields are valid and pass the route's redaction), claimed (the first
click wins), posted to ``POST /form/human_input/{token}`` with the run's own Dify user, and the
run is followed again (``GET /workflow/{id}/events``) into a new reply in the same thread, like
any other answer: edits, final text, sources, buttons; or the next form when it pauses again.
Every other outcome is a :class:`~app.pipeline.forms.FormResult` in plain words.
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
from app.dify.events import WorkflowFinished
from app.errors import UserFacingError
from app.pipeline.answer_extras import chat_extras, stream_error
from app.pipeline.answer_fold import Answer, fold, workflow_answer
from app.pipeline.failures import new_ref, safe_fail
from app.pipeline.forms import (
    FormAnswer,
    FormResult,
    HumanForm,
    Outcome,
    Responder,
    check_values,
    describe_choice,
    form_from_event,
)
from app.pipeline.human_loop_access import GroupDirectory, blocked, may_answer
from app.pipeline.human_loop_resume import (
    RunEvents,
    fail_with,
    final_text,
    reattach,
    stored_answer,
)
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
from app.server.tasks import spawn
from app.state.form_store import FormStore, PendingForm
from app.state.inflight import INTERRUPTED
from app.state.store import LockTimeout

if TYPE_CHECKING:
    from app.pipeline.bridge import Bridge

log = structlog.get_logger(__name__)


class HumanLoop:
    """The Human Input half of the pipeline; the :class:`~app.pipeline.bridge.Bridge` owns one."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self.store = FormStore(bridge.store.redis, bridge.store.prefix)

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

    # ------------------------------------------------------------------ a click

    async def answer(
        self,
        thread: ThreadKey,
        click: FormAnswer,
        reply: Reply,
        limits: PlatformLimits,
        *,
        groups: GroupDirectory | None = None,
    ) -> FormResult:
        """Answer a form from the thread; on ACCEPTED the rest of the run streams into
        ``reply`` in the background."""
        result = await self._answer(thread, click, reply, limits, groups)
        self._bridge.metrics.forms.labels(thread.platform, result.outcome.value).inc()
        log.info("forms.click", outcome=result.outcome.value)
        return result

    async def _answer(
        self,
        thread: ThreadKey,
        click: FormAnswer,
        reply: Reply,
        limits: PlatformLimits,
        groups: GroupDirectory | None,
    ) -> FormResult:
        try:
            p = await self.store.get(click.key)
        except RedisError as e:
            log.warning("forms.read_failed", error=type(e).__name__)
            return FormResult(Outcome.UNAVAILABLE, texts.FORM_STORAGE_DOWN)
        if p is None or p.thread != thread:
            log.info("forms.unknown", known=p is not None)
            return FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN)
        form = p.form
        action = form.action(click.action_id)
        if action is None:
            return FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN, form)
        closed = self._closed(p)
        if closed is not None:
            return closed
        route = self._bridge.router.by_name(p.route) or self._bridge.router.resolve(thread)
        if route is None:
            return FormResult(Outcome.UNAVAILABLE, texts.NO_ROUTE_ANY_MORE, form)
        refusal = await may_answer(route, p, click.by, groups)
        if refusal:
            log.info("forms.not_allowed", form=form.form_id)
            return FormResult(Outcome.NOT_ALLOWED, refusal, form)
        inputs, problem = check_values(form, click.values)
        if problem:
            return FormResult(Outcome.INVALID, problem, form)
        try:
            prepared = await self._bridge.redaction.prepare(
                route.config.redaction, "", thread, extra=inputs
            )
        except RedisError as e:  # the pseudonym vault lives in Redis
            log.warning("forms.redaction_unavailable", error=type(e).__name__)
            return FormResult(Outcome.UNAVAILABLE, texts.FORM_STORAGE_DOWN, form)
        if prepared.blocked:
            return FormResult(Outcome.INVALID, self._bridge.redaction.block_message(prepared), form)
        sent = {k: prepared.extra.get(k, v) for k, v in inputs.items()}
        if form.expired():
            await self._close(form.key, "expired")
            return FormResult(Outcome.EXPIRED, texts.FORM_EXPIRED, form)
        by = click.by
        try:
            claim = await self.store.claim(
                form.key, by_id=by.id, by_name=by.shown, action=action.id, action_title=action.title
            )
        except RedisError as e:
            log.warning("forms.claim_failed", error=type(e).__name__)
            return FormResult(Outcome.UNAVAILABLE, texts.FORM_STORAGE_DOWN, form)
        if not claim.ok:
            return self._closed(
                PendingForm(
                    form=form,
                    thread=thread,
                    route=p.route,
                    run_id=p.run_id,
                    token=p.token,
                    user=p.user,
                    asker=p.asker,
                    status=claim.status,
                    by_name=claim.by_name,
                    action_title=claim.action_title,
                )
            ) or FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN, form)
        client = self._bridge.client_for(route)
        # Listen before answering: Dify relays a resumed run's events only to those already
        # subscribed, and its worker may resume the run before our submit call returns.
        try:
            batches = client.run_events(p.run_id, user=p.user).batches()
            first = await anext(batches)
        except (DifyError, ValueError) as e:
            await self._release(form.key, by.id)
            log.warning("forms.attach_failed", error=type(e).__name__)
            if isinstance(e, DifyError) and e.status == 404:
                return FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN, form)
            said = e.user_message if isinstance(e, DifyError) else texts.FORM_INTERNAL
            return FormResult(Outcome.UNAVAILABLE, said, form)
        try:
            await client.submit_form(p.token, inputs=sent, action=action.id, user=p.user)
        except DifyError as e:
            await batches.aclose()
            return await self._refused(p, by, e)
        except ValueError as e:  # a token or value our client refuses to send
            await batches.aclose()
            await self._release(form.key, by.id)
            log.warning("forms.submit_refused_locally", error=str(e)[:200])
            return FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN, form)
        if any(isinstance(ev, WorkflowFinished) and ev.status == "paused" for ev in first):
            # A Dify that counts a paused run as finished answered our early attach with its
            # stored state only: listen again now that the run goes on.
            batches, first = await reattach(client, p, batches)
        await self._close(form.key, "decided", by_name=by.shown, action_title=action.title)
        log.info("forms.submitted", form=form.form_id, action=action.id)
        result = FormResult(
            Outcome.ACCEPTED,
            describe_choice(form, by.shown, action.title, inputs),
            form,
            by.shown,
            action.title,
            dict(inputs),
        )
        self._bridge.track(
            spawn(
                self._continue(
                    p, route, reply, limits, prepared.restorer, RunEvents(first, batches)
                ),
                name=f"form-resume-{thread.log_id}",
            )
        )
        return result

    def _closed(self, p: PendingForm) -> FormResult | None:
        form = p.form
        if p.status in ("submitting", "decided"):
            return FormResult(
                Outcome.ALREADY_DECIDED,
                texts.already_decided(p.by_name, p.action_title),
                form,
                p.by_name,
                p.action_title,
            )
        if p.status == "expired":
            return FormResult(Outcome.EXPIRED, texts.FORM_EXPIRED, form)
        if p.status == "elsewhere":
            return FormResult(Outcome.DECIDED_ELSEWHERE, texts.FORM_ELSEWHERE, form)
        if p.status == "missing":
            return FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN, form)
        return None

    async def _refused(self, p: PendingForm, by: Responder, e: DifyError) -> FormResult:
        form = p.form
        log.info("forms.submit_failed", status=e.status, code=e.code, form=form.form_id)
        if e.status == 412 and "expired" in e.code:
            await self._close(form.key, "expired")
            return FormResult(Outcome.EXPIRED, texts.FORM_EXPIRED, form)
        if e.status == 412:
            await self._close(form.key, "elsewhere")
            return FormResult(Outcome.DECIDED_ELSEWHERE, texts.FORM_ELSEWHERE, form)
        if e.status == 404:
            await self._close(form.key, "elsewhere")
            return FormResult(Outcome.UNKNOWN, texts.FORM_UNKNOWN, form)
        await self._release(form.key, by.id)
        if e.status == 400:
            # Dify names the field or action it refused ("Missing required inputs: comment").
            detail = e.message.strip() or texts.FORM_REFUSED_DETAIL
            return FormResult(Outcome.INVALID, texts.FORM_REFUSED.format(detail=detail[:300]), form)
        return FormResult(Outcome.UNAVAILABLE, e.user_message, form)

    async def _close(self, key: str, status: str, **kw: str) -> None:
        try:
            await self.store.close(key, status, **kw)
        except RedisError as e:
            log.warning("forms.close_failed", error=type(e).__name__)

    async def _release(self, key: str, by_id: str) -> None:
        try:
            await self.store.release(key, by_id)
        except RedisError as e:  # the claim goes stale by itself (STALE_CLAIM)
            log.warning("forms.release_failed", error=type(e).__name__)

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
                want_suggested=route.config.suggested_questions,
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


__all__ = ["GroupDirectory", "HumanLoop"]
