"""Human-in-the-loop: a run paused on Dify Human Input forms, answered from the thread.

``paused``: the turn ended at ``workflow_paused``; each form is stored in Redis
(:mod:`app.state.form_store`) and shown with the answer so far (``Reply.ask``); that and the
run followed again are :mod:`app.pipeline.human_loop_run`.
``answer``: a click (any replica) is checked (the form is known, still open, not expired; the
clicker may answer; the fields are valid and pass the route's redaction), claimed (the first
click wins), posted to ``POST /form/human_input/{token}`` with the run's own Dify user, and the
run is followed again (``GET /workflow/{id}/events``) into a new reply in the same thread, like
any other answer: edits, final text, sources, buttons; or the next form when it pauses again.
Every other outcome is a :class:`~app.pipeline.forms.FormResult` in plain words.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from app import texts
from app.dify.errors import DifyError
from app.dify.events import WorkflowFinished
from app.pipeline.forms import (
    FormAnswer,
    FormResult,
    Outcome,
    Responder,
    check_values,
    describe_choice,
)
from app.pipeline.human_loop_access import GroupDirectory, may_answer
from app.pipeline.human_loop_resume import RunEvents, reattach
from app.pipeline.human_loop_run import HumanLoopRun
from app.pipeline.model import PlatformLimits, Reply, ThreadKey
from app.server.tasks import spawn
from app.state.form_store import FormStore, PendingForm

if TYPE_CHECKING:
    from app.pipeline.bridge import Bridge

log = structlog.get_logger(__name__)


class HumanLoop(HumanLoopRun):
    """The Human Input half of the pipeline; the :class:`~app.pipeline.bridge.Bridge` owns one.
    The paused run and its continuation are :class:`HumanLoopRun`."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self.store = FormStore(bridge.store.redis, bridge.store.prefix)

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
                replace(
                    p,
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


__all__ = ["GroupDirectory", "HumanLoop"]
