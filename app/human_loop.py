"""Human-in-the-loop: a run paused on Dify Human Input forms, answered from the thread.

``paused``: the turn ended at ``workflow_paused``; each form is stored in Redis
(:mod:`app.form_store`) and shown with the answer so far (``Reply.ask``).
``answer``: a click (any replica) is checked (the form is known, still open, not expired; the
clicker may answer; the fields are valid and pass the route's redaction), claimed (the first
click wins), posted to ``POST /form/human_input/{token}`` with the run's own Dify user, and the
run is followed again (``GET /workflow/{id}/events``) into a new reply in the same thread, like
any other answer: edits, final text, sources, buttons; or the next form when it pauses again.
Every other outcome is a :class:`~app.forms.FormResult` in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from redis.exceptions import RedisError

from app.answer_extras import chat_extras, stream_error
from app.answer_fold import Answer, fold, workflow_answer
from app.dify.client import DifyClient
from app.dify.errors import DifyError
from app.dify.events import DifyEvent, WorkflowFinished
from app.errors import UserFacingError
from app.failures import new_ref, safe_fail
from app.form_store import FormStore, PendingForm
from app.forms import (
    FormAnswer,
    FormResult,
    HumanForm,
    Outcome,
    Responder,
    check_values,
    describe_choice,
    form_from_event,
)
from app.inflight import INTERRUPTED
from app.model import (
    IncomingMessage,
    Kind,
    PlatformLimits,
    Reply,
    ReplyExtras,
    Speaker,
    ThreadKey,
)
from app.redact import Restorer
from app.settings import AppMode, Route
from app.store import LockTimeout
from app.streaming import EditScheduler, deliver_final
from app.tasks import spawn

if TYPE_CHECKING:
    from app.pipeline import Bridge

log = structlog.get_logger(__name__)

UNKNOWN_FORM = (
    "I no longer know this form (it may be too old, or it was changed). If the run still "
    "waits, please answer it in Dify."
)
NOT_ALLOWED_ASKER = "Only the person who asked the question can answer this form."
NOT_ALLOWED_LISTED = "You are not one of the people this channel lets answer this form."
EXPIRED = "This form expired, so it can no longer be answered."
ELSEWHERE = "This form was already answered elsewhere (for example in Dify), so your choice " \
    "was not sent."
NOT_SAVED = (
    "This form could not be saved on our side (storage unavailable), so it cannot be answered "
    "here: please answer it in Dify."
)
BUSY = "The form was answered, but an earlier answer in this thread is still running. " \
    "The rest will not appear here; please check the result in Dify."
STORAGE_DOWN = "The assistant's storage is not reachable right now. Please try again in a minute."
INTERNAL = "Something went wrong on our side while continuing after the form."


@dataclass(slots=True)
class _Events:
    """A re-attached run: the events of the first read (Dify's ping once subscribed) and the
    rest of the stream."""

    first: list[DifyEvent]
    batches: AsyncGenerator[list[DifyEvent], None]


class GroupDirectory(Protocol):
    """Group membership for ``human_input.allowed`` entries that name a group (adapters)."""

    async def member_of(self, group: str, user_id: str) -> bool: ...


class HumanLoop:
    """The Human Input half of the pipeline; the :class:`~app.pipeline.Bridge` owns one."""

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
                    await self.store.save(PendingForm(
                        form=form, thread=thread, route=route.name, run_id=run_id,
                        token=ev.form_token, user=user, asker=asker,
                        conversation_id=answer.conversation_id or "",
                        message_id=answer.message_id or "",
                        before=before + len(answer.text),
                    ))
                except RedisError as e:
                    log.warning("forms.save_failed", error=type(e).__name__)
                    form = _blocked(form, NOT_SAVED)
            forms.append(form)
            self._bridge.metrics.forms.labels(thread.platform, "shown").inc()
            log.info("forms.shown", form=form.form_id, answerable=form.answerable,
                     fields=len(form.fields), actions=len(form.actions))
        # No conversation id: a half-answer offers no "New topic" or feedback buttons.
        extras = ReplyExtras(notices=list(notices), route=route.name)
        platform = thread.platform

        async def ask() -> None:
            await reply.ask(text, forms, extras)

        await deliver_final(
            ask, budget=budget,
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
            return FormResult(Outcome.UNAVAILABLE, STORAGE_DOWN)
        if p is None or p.thread != thread:
            log.info("forms.unknown", known=p is not None)
            return FormResult(Outcome.UNKNOWN, UNKNOWN_FORM)
        form = p.form
        action = form.action(click.action_id)
        if action is None:
            return FormResult(Outcome.UNKNOWN, UNKNOWN_FORM, form)
        closed = self._closed(p)
        if closed is not None:
            return closed
        route = self._bridge.router.by_name(p.route) or self._bridge.router.resolve(thread)
        if route is None:
            return FormResult(Outcome.UNAVAILABLE,
                              "No Dify app is configured for this channel any more.", form)
        refusal = await _may_answer(route, p, click.by, groups)
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
            return FormResult(Outcome.UNAVAILABLE, STORAGE_DOWN, form)
        if prepared.blocked:
            return FormResult(Outcome.INVALID, self._bridge.redaction.block_message(prepared), form)
        sent = {k: prepared.extra.get(k, v) for k, v in inputs.items()}
        if form.expired():
            await self._close(form.key, "expired")
            return FormResult(Outcome.EXPIRED, EXPIRED, form)
        by = click.by
        try:
            claim = await self.store.claim(form.key, by_id=by.id, by_name=by.shown,
                                           action=action.id, action_title=action.title)
        except RedisError as e:
            log.warning("forms.claim_failed", error=type(e).__name__)
            return FormResult(Outcome.UNAVAILABLE, STORAGE_DOWN, form)
        if not claim.ok:
            return self._closed(PendingForm(
                form=form, thread=thread, route=p.route, run_id=p.run_id, token=p.token,
                user=p.user, asker=p.asker, status=claim.status, by_name=claim.by_name,
                action_title=claim.action_title,
            )) or FormResult(Outcome.UNKNOWN, UNKNOWN_FORM, form)
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
                return FormResult(Outcome.UNKNOWN, UNKNOWN_FORM, form)
            said = e.user_message if isinstance(e, DifyError) else INTERNAL
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
            return FormResult(Outcome.UNKNOWN, UNKNOWN_FORM, form)
        if any(isinstance(ev, WorkflowFinished) and ev.status == "paused" for ev in first):
            # A Dify that counts a paused run as finished answered our early attach with its
            # stored state only: listen again now that the run goes on.
            batches, first = await _reattach(client, p, batches)
        await self._close(form.key, "decided", by_name=by.shown, action_title=action.title)
        log.info("forms.submitted", form=form.form_id, action=action.id)
        result = FormResult(Outcome.ACCEPTED, describe_choice(form, by.shown, action.title, inputs),
                            form, by.shown, action.title, dict(inputs))
        self._bridge.track(spawn(
            self._continue(p, route, reply, limits, prepared.restorer, _Events(first, batches)),
            name=f"form-resume-{thread.log_id}",
        ))
        return result

    def _closed(self, p: PendingForm) -> FormResult | None:
        form = p.form
        if p.status in ("submitting", "decided"):
            who = p.by_name or "someone"
            what = f" (“{p.action_title}”)" if p.action_title else ""
            return FormResult(Outcome.ALREADY_DECIDED, f"Already decided by {who}{what}.", form,
                              p.by_name, p.action_title)
        if p.status == "expired":
            return FormResult(Outcome.EXPIRED, EXPIRED, form)
        if p.status == "elsewhere":
            return FormResult(Outcome.DECIDED_ELSEWHERE, ELSEWHERE, form)
        if p.status == "missing":
            return FormResult(Outcome.UNKNOWN, UNKNOWN_FORM, form)
        return None

    async def _refused(self, p: PendingForm, by: Responder, e: DifyError) -> FormResult:
        form = p.form
        log.info("forms.submit_failed", status=e.status, code=e.code, form=form.form_id)
        if e.status == 412 and "expired" in e.code:
            await self._close(form.key, "expired")
            return FormResult(Outcome.EXPIRED, EXPIRED, form)
        if e.status == 412:
            await self._close(form.key, "elsewhere")
            return FormResult(Outcome.DECIDED_ELSEWHERE, ELSEWHERE, form)
        if e.status == 404:
            await self._close(form.key, "elsewhere")
            return FormResult(Outcome.UNKNOWN, UNKNOWN_FORM, form)
        await self._release(form.key, by.id)
        if e.status == 400:
            # Dify names the field or action it refused ("Missing required inputs: comment").
            detail = e.message.strip() or "the answer was refused"
            return FormResult(Outcome.INVALID,
                              f"Dify did not accept this answer: {detail[:300]}", form)
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
        events: _Events,
    ) -> None:
        ref = new_ref()
        structlog.contextvars.bind_contextvars(
            platform=p.thread.platform, thread=p.thread.log_id, ref=ref, route=route.name
        )
        # Recorded like any answer, so a replica dying mid-stream leaves no frozen placeholder.
        origin = IncomingMessage(key=p.thread, event_id=f"form:{p.form.key}",
                                 speaker=Speaker(id=p.asker), text="", kind=Kind.THREAD_REPLY)
        try:
            async with self._bridge.recorded(origin, reply) as record:
                await reply.start(limits.placeholder)
                await record.refresh()  # now with the placeholder's id
                async with self._bridge.store.lock(p.thread, order=time.time(),
                                                   mark_known=True, settle=0.0):
                    await self._follow(p, route, reply, limits, restorer, ref, events)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(safe_fail(reply, INTERRUPTED, ref)), 5)
            raise
        except LockTimeout:
            await safe_fail(reply, BUSY, ref)
        except RedisError as e:
            log.error("store.unavailable", step="form_resume", error=type(e).__name__)
            await safe_fail(reply, STORAGE_DOWN, ref)
        except UserFacingError as e:
            await safe_fail(reply, e.user_message, ref)
        except Exception as e:
            log.error("forms.resume_crashed", error=type(e).__name__, exc_info=e)
            await safe_fail(reply, INTERNAL, ref)
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
        events: _Events,
    ) -> None:
        bridge = self._bridge
        platform = p.thread.platform
        client = bridge.client_for(route)
        budget = bridge.budgets.get(platform, p.thread.workspace,
                                    limits.workspace_edits_per_minute)

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
                    writes.append(asyncio.create_task(store.save_stream_ids(
                        p.thread, route=route.name, user=p.user, task_id=ev.task_id)))
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
            await _fail_with(reply, _final(partial, restorer), e.user_message, ref)
            bridge.metrics.answers.labels(platform, "failed").inc()
            log.warning("forms.resume_failed", error=type(e).__name__, code=e.code)
            return
        await scheduler.close()
        if ans.error is not None:
            err = stream_error(ans.error)
            await _fail_with(reply, _final(ans.text, restorer), err.user_message, ref)
            bridge.metrics.answers.labels(platform, "failed").inc()
            return
        if ans.workflow_status == "paused" and ans.forms:
            await self.paused(
                thread=p.thread, route=route, reply=reply, answer=ans,
                text=_final(ans.text, restorer), notices=ans.notices, user=p.user,
                asker=p.asker, budget=budget, before=p.before,
            )
            return
        text = ans.text
        mode = route.config.dify.mode
        if not text.strip() and mode.is_chat and ans.conversation_id and ans.message_id:
            # Attached after the run had finished (Dify relays live events only): the stored
            # message holds the whole answer, the part before the form included.
            text = await _stored_answer(client, ans, p)
        if mode is AppMode.WORKFLOW:
            text = workflow_answer(text, ans.outputs, route.config.dify.output_variable)
        text = _final(text, restorer)
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
            extras.notices.append("Stopped. This is what had arrived so far.")
        elif mode.is_chat and ans.message_id:
            extras.suggested, _ = await chat_extras(
                client, user=p.user, message_id=ans.message_id,
                conversation_id=ans.conversation_id,
                want_suggested=route.config.suggested_questions, want_name=False,
            )
        if not text.strip() and not extras.files:
            text = "(The run continued without further answer text.)"

        async def finish() -> None:
            await reply.finish(text, extras)

        await deliver_final(finish, budget=budget,
                            on_ratelimited=bridge.metrics.ratelimited.labels(platform).inc)
        bridge.metrics.latency.observe(time.monotonic() - started)
        bridge.metrics.answers.labels(platform, "ok").inc()
        log.info("forms.resumed_answer_finished", chars=len(text))


async def _reattach(
    client: DifyClient, p: PendingForm, old: AsyncGenerator[list[DifyEvent], None]
) -> tuple[AsyncGenerator[list[DifyEvent], None], list[DifyEvent]]:
    """Listen to the run again after the submit, a few times while Dify still calls it paused;
    give up with an empty stream (the stored answer is read at the end)."""
    await old.aclose()
    for attempt in range(4):
        if attempt:
            await asyncio.sleep(0.5 * attempt)
        try:
            batches = client.run_events(p.run_id, user=p.user).batches()
            first = await anext(batches)
        except DifyError as e:
            log.warning("forms.reattach_failed", error=type(e).__name__)
            break
        if not any(isinstance(ev, WorkflowFinished) and ev.status == "paused" for ev in first):
            return batches, first
        await batches.aclose()
    return _no_events(), []


async def _no_events() -> AsyncGenerator[list[DifyEvent], None]:
    """A stream that ended at once (the continuation then reads the stored answer)."""
    return
    yield []  # pragma: no cover - makes this an async generator


async def _stored_answer(client: DifyClient, ans: Answer, p: PendingForm) -> str:
    assert ans.conversation_id and ans.message_id
    try:
        whole = await client.recover_answer(
            conversation_id=ans.conversation_id, message_id=ans.message_id, user=p.user
        )
    except DifyError as e:
        log.warning("forms.stored_answer_unavailable", error=type(e).__name__)
        return ""
    return (whole or "")[p.before:]


async def _may_answer(
    route: Route, p: PendingForm, by: Responder, groups: GroupDirectory | None
) -> str:
    """"" when ``by`` may answer, else why not (plain words)."""
    cfg = route.config.human_input
    if cfg.answer_by == "anyone":
        return ""
    if cfg.answer_by == "asker" and by.id == p.asker:
        return ""
    names = {by.id, *(by.groups)}
    if by.email:
        names.add(by.email.lower())
    for entry in cfg.allowed:
        if entry in names or entry.lower() in names:
            return ""
    if groups is not None:
        for entry in cfg.allowed:
            try:
                if await groups.member_of(entry, by.id):
                    return ""
            except Exception as e:  # a directory lookup failing refuses, it never lets in
                log.warning("forms.group_lookup_failed", error=type(e).__name__)
    return NOT_ALLOWED_ASKER if cfg.answer_by == "asker" else NOT_ALLOWED_LISTED


def _blocked(form: HumanForm, why: str) -> HumanForm:
    from dataclasses import replace

    return replace(form, blocked=why)


def _final(text: str, restorer: Restorer | None) -> str:
    return restorer.final(text) if restorer else text


async def _fail_with(reply: Reply, partial: str, message: str, ref: str) -> None:
    await safe_fail(reply, f"{partial}\n\n⚠️ {message}" if partial.strip() else message, ref)


__all__ = ["GroupDirectory", "HumanLoop"]
