"""The bridge pipeline: the only orchestrator between adapters, Dify and Redis.

dedup -> route -> limits -> preflight (voice, files, inputs, redaction: app/pipeline/preflight.py)
-> answer cache -> placeholder -> thread lock -> conversation lookup -> the answer run
(app/pipeline/answer_run.py: Dify stream, edit scheduler; app/pipeline/answer_finish.py: the
final answer).

Every failure ends in ``reply.fail`` with plain words and a reference id that is also logged, so a
user is never left looking at a placeholder.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import structlog
from redis.exceptions import RedisError

from app import texts
from app.config.settings import Route, Settings
from app.dify.appcheck import ParamsCache
from app.dify.client import DifyClient
from app.dify.pool import DifyClientPool
from app.errors import UserFacingError
from app.pipeline.admission import StartGate, no_gate
from app.pipeline.answer_run import AnswerRun, Turn
from app.pipeline.failures import new_ref, safe_fail
from app.pipeline.forms import FormAnswer, FormResult
from app.pipeline.human_loop import GroupDirectory, HumanLoop
from app.pipeline.inputs import is_reset, too_long
from app.pipeline.model import (
    IncomingMessage,
    Kind,
    PlatformLimits,
    Reply,
    ReplyExtras,
    ThreadKey,
)
from app.pipeline.preflight import Preflight
from app.pipeline.routing import Router
from app.pipeline.streaming import BudgetRegistry, deliver_final
from app.redact import RedactionService
from app.server.metrics import Metrics
from app.server.tasks import spawn
from app.server.tracing import span
from app.state.answer_cache import AnswerCache
from app.state.answer_cache import plan as plan_cache
from app.state.inflight import INTERRUPTED, InflightRegistry
from app.state.store import LockTimeout, RedisStore
from app.texts import (
    BUSY_THREAD,
    INTERNAL,
    RESET_DONE,
    STORAGE_DOWN,
)

log = structlog.get_logger(__name__)


class Bridge(AnswerRun):
    """Turns incoming messages into streamed Dify answers. Adapters call :meth:`submit`."""

    def __init__(
        self,
        *,
        settings: Settings,
        router: Router,
        store: RedisStore,
        dify: DifyClientPool,
        redaction: RedactionService,
        metrics: Metrics,
        budgets: BudgetRegistry | None = None,
        limiter: Any = None,
        inflight: InflightRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.store = store
        self.dify = dify
        self.redaction = redaction
        self.metrics = metrics
        self.budgets = budgets or BudgetRegistry()
        self.limiter = limiter
        self.inflight = inflight
        self._active: set[asyncio.Task[Any]] = set()
        self._accepting = True
        # A burst of answers starts a bounded number at a time (see app/pipeline/admission.py).
        self.starts = StartGate()
        self.params = ParamsCache(dify)
        self.answer_cache = AnswerCache(store.redis, store.prefix)
        self.forms = HumanLoop(self)
        self.preflight = Preflight(
            params=self.params,
            redaction=redaction,
            metrics=metrics,
            client_for=self.client_for,
            max_chars=settings.max_message_chars,
        )

    # ------------------------------------------------------------------ public seam for adapters

    def submit(
        self, msg: IncomingMessage, reply: Reply, limits: PlatformLimits
    ) -> asyncio.Task[None]:
        """Answer ``msg`` in the background and return at once (adapters ack first)."""
        task = spawn(self.handle(msg, reply, limits), name=f"answer-{msg.key.log_id}")
        self._active.add(task)
        task.add_done_callback(self._active.discard)
        return task

    def track(self, task: asyncio.Task[None]) -> None:
        """Count a background answer (a run resumed after a form) as active: drain waits."""
        self._active.add(task)
        task.add_done_callback(self._active.discard)

    def recorded(self, msg: IncomingMessage, reply: Reply) -> Any:
        """The in-flight record of an answer that starts without a platform message (a run
        resumed after a form): another replica closes it if this one dies."""
        return self._recorded(msg, reply)

    async def answer_form(
        self,
        thread: ThreadKey,
        click: FormAnswer,
        reply: Reply,
        limits: PlatformLimits,
        *,
        groups: GroupDirectory | None = None,
    ) -> FormResult:
        """A click on a Human Input form's button (see app/pipeline/human_loop.py): on ACCEPTED the
        rest of the run streams into ``reply``; otherwise ``reply`` is left untouched."""
        # A click being answered is an answer in flight: shutdown's drain waits for it (and for
        # the resumed run it starts) before the adapters close their connections.
        task = asyncio.current_task()
        if task is None or task in self._active:
            return await self.forms.answer(thread, click, reply, limits, groups=groups)
        self._active.add(task)
        try:
            return await self.forms.answer(thread, click, reply, limits, groups=groups)
        finally:
            self._active.discard(task)

    @property
    def active_count(self) -> int:
        return len(self._active)

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - a grace period, not a call timeout
        """Wait up to ``timeout`` for streaming answers, then interrupt the rest (each tells its
        user to ask again). Returns how many had to be interrupted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Answers may start while others finish (a form click's resumed run): wait until none
        # is left, not only for those running when the drain began.
        while self._active and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._active), timeout=left)
        still = set(self._active)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=10)
        return len(still)

    async def thread_known(self, thread: ThreadKey) -> bool:
        """True when the bot has answered (or is answering) in this thread."""
        return await self.store.is_known(thread)

    def client_for(self, route: Route) -> DifyClient:
        return self.dify.client(route.base_url, route.api_key)

    async def feedback(
        self,
        *,
        thread: ThreadKey,
        message_id: str,
        rating: Literal["like", "dislike"] | None,
        content: str | None = None,
    ) -> None:
        """Send a thumbs up/down on one answer to Dify."""
        route = self.router.resolve(thread)
        if route is None:
            raise UserFacingError(texts.NO_ROUTE_ANY_MORE)
        await self.client_for(route).feedback(
            message_id, user=thread.dify_user(), rating=rating, content=content
        )
        log.info("feedback.sent", thread=thread.log_id, rating=rating)

    async def stop(self, *, thread: ThreadKey) -> bool:
        """Stop the answer streaming in ``thread`` (any replica may receive the button click)."""
        info = await self.store.running_task(thread)
        if not info.get("task_id"):
            return False
        route = self.router.by_name(info.get("route", "")) or self.router.resolve(thread)
        if route is None:
            return False
        await self.store.request_stop(thread, info["task_id"])
        await self.client_for(route).stop(
            info["task_id"], user=thread.dify_user(), mode=route.config.dify.mode.value
        )
        log.info("answer.stop_requested", thread=thread.log_id)
        return True

    async def reset(self, *, thread: ThreadKey) -> None:
        """Start a fresh Dify conversation in ``thread`` (the reset words or a reset button).

        Only the mapping is forgotten: an answer streaming now finishes in the old conversation,
        and the next question starts a new one."""
        await self.store.forget(thread)
        log.info("conversation.reset", thread=thread.log_id)

    # ------------------------------------------------------------------ the pipeline

    async def handle(self, msg: IncomingMessage, reply: Reply, limits: PlatformLimits) -> None:
        ref = new_ref()
        platform = msg.key.platform
        structlog.contextvars.bind_contextvars(
            platform=platform, event_id=msg.event_id, thread=msg.key.log_id, ref=ref
        )
        self.metrics.events.labels(platform).inc()
        leave = no_gate
        try:
            leave = await self.starts.enter()
            if not self._accepting:
                await reply.fail(texts.RESTARTING, ref=ref)
                await self._drop_preack(msg)
                return
            try:
                fresh = await self.store.claim(f"{platform}:{msg.event_id}", *msg.dedup_keys)
            except RedisError as e:
                log.error("store.unavailable", step="dedup", error=type(e).__name__)
                self.metrics.errors.labels("redis").inc()
                await reply.fail(STORAGE_DOWN, ref=ref)
                return
            if not fresh:
                self.metrics.duplicates.labels(platform).inc()
                log.info("message.duplicate")
                # This delivery's pre-ack record, unless the original already adopted it.
                await self._drop_preack(msg)
                return
            log.info("message.received", kind=msg.kind.value, chars=len(msg.text))
            # Recorded from the moment we own the event: a replica dying after the claim (which
            # makes the platform's retry a duplicate elsewhere) still leaves someone to tell
            # the user.
            with span("bridge.answer", platform=platform, thread=msg.key.log_id, ref=ref):
                async with self._recorded(msg, reply) as record:
                    await self._answer(msg, reply, limits, ref, record, leave)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: say so rather than leave a frozen placeholder.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(safe_fail(reply, INTERRUPTED, ref)), 5)
            raise
        except UserFacingError as e:  # e.g. an attachment the platform would not hand over
            log.info("answer.refused", kind=e.kind)
            await safe_fail(reply, e.user_message, ref)
        except Exception as e:  # the last net: the user always hears back
            log.error("answer.crashed", error=type(e).__name__, exc_info=e)
            self.metrics.errors.labels("internal").inc()
            await safe_fail(reply, INTERNAL, ref)
        finally:
            leave()
            structlog.contextvars.unbind_contextvars("platform", "event_id", "thread", "ref")

    async def _answer(
        self,
        msg: IncomingMessage,
        reply: Reply,
        limits: PlatformLimits,
        ref: str,
        record: _Record,
        leave_gate: Callable[[], None],
    ) -> None:
        route = self.router.resolve(msg.key)
        if route is None:
            log.warning("route.none", hint="add a route for this channel to the bridge config")
            await reply.fail(
                texts.NO_ROUTE,
                ref=ref,
            )
            return
        structlog.contextvars.bind_contextvars(route=route.name)
        if len(msg.text) > self.settings.max_message_chars:
            await reply.fail(too_long(len(msg.text), self.settings.max_message_chars), ref=ref)
            return
        if self.limiter is not None:
            refusal = await self.limiter.check(msg, route)
            if refusal:
                self.metrics.rate_limited_users.labels(refusal.scope).inc()
                await reply.fail(refusal.message, ref=ref)
                return
        if is_reset(msg.text, route):
            await reply.start(limits.placeholder)
            await self.reset(thread=msg.key)
            await reply.finish(RESET_DONE, ReplyExtras(route=route.name))
            return
        ready = await self.preflight.run(msg, route, reply, limits, ref)
        if ready is None:
            return
        msg, started = ready.msg, ready.started
        turn = Turn(
            msg,
            reply,
            limits,
            route,
            ready.prepared,
            ref,
            ready.inputs,
            notices=ready.notices,
            params=ready.params,
            leave_gate=leave_gate,
        )
        if await self._from_cache(turn, started):
            return
        if not started:
            with span("platform.start", platform=msg.key.platform):
                await reply.start(limits.placeholder)
        await record.refresh()  # now with the placeholder's id
        await self._locked_turn(turn)

    async def _from_cache(self, turn: Turn, started: bool) -> bool:
        """Slash command + cache on: answer from the cache (True) or mark the turn one-shot."""
        msg, route = turn.msg, turn.route
        cache = await plan_cache(
            self.answer_cache,
            self.store,
            route,
            msg,
            found_entities=bool(turn.prepared.found),
            count=lambda result: self.metrics.cache.labels(route.name, result).inc(),
        )
        turn.one_shot, turn.cache_question = cache.one_shot, cache.question
        if cache.hit is None:
            return False
        log.info("answer_cache.hit", chars=len(cache.hit.text))
        if not started:
            await turn.reply.start(turn.limits.placeholder)
        sources = list(cache.hit.sources) if route.config.show_sources else []
        extras = ReplyExtras(sources=sources, notices=list(turn.notices), route=route.name)
        text = cache.hit.text

        async def finish() -> None:
            await turn.reply.finish(text, extras)

        platform = msg.key.platform
        budget = self.budgets.get(
            platform, msg.key.workspace, turn.limits.workspace_edits_per_minute
        )
        await deliver_final(
            finish, budget=budget, on_ratelimited=self.metrics.ratelimited.labels(platform).inc
        )
        self.metrics.answers.labels(platform, "ok").inc()
        return True

    @contextlib.asynccontextmanager
    async def _recorded(self, msg: IncomingMessage, reply: Reply) -> AsyncIterator[_Record]:
        """Record the answer in Redis while it runs, so another replica can close it if we die."""
        token = reply.resume_token()
        if self.inflight is None or not token:
            await self._drop_preack(msg)
            yield _Record(None, None, reply)
            return
        try:
            # The adapter may have recorded this event before its ack: adopt that record.
            answer_id = await self.inflight.begin(
                msg.key.platform,
                token,
                answer_id=self.inflight.id_for(msg.key.platform, msg.event_id),
            )
        except RedisError as e:  # the answer itself may still work; only crash cover is lost
            log.warning("inflight.begin_failed", error=type(e).__name__)
            yield _Record(None, None, reply)
            return
        keeper = asyncio.create_task(self.inflight.keep_alive(answer_id))
        try:
            yield _Record(self.inflight, answer_id, reply)
        finally:
            keeper.cancel()
            try:
                await asyncio.shield(self.inflight.end(answer_id))
            except RedisError as e:
                log.warning("inflight.end_failed", error=type(e).__name__)

    async def _drop_preack(self, msg: IncomingMessage) -> None:
        if self.inflight is None:
            return
        with contextlib.suppress(RedisError):
            await self.inflight.drop_preack(self.inflight.id_for(msg.key.platform, msg.event_id))

    async def _locked_turn(self, turn: Turn) -> None:
        msg, reply, ref = turn.msg, turn.reply, turn.ref
        try:
            read = turn.route.config.dify.mode.is_chat and not turn.one_shot
            async with self.store.lock(
                msg.key,
                order=msg.received_at,
                mark_known=True,
                read_conversation=read,
                settle=0.0 if msg.starts_thread else 0.3,
            ) as lock:
                log.info("lock.acquired")
                with span("bridge.turn", route=turn.route.name):
                    await self._run_turn(turn, self.store.conversation_of(lock))
        except LockTimeout:
            await reply.fail(BUSY_THREAD, ref=ref)
        except RedisError as e:
            log.error("store.unavailable", step="lock", error=type(e).__name__)
            self.metrics.errors.labels("redis").inc()
            await safe_fail(reply, STORAGE_DOWN, ref)


class _Record:
    """The in-flight record of one answer; ``refresh`` stores the reply's newest resume token."""

    def __init__(self, inflight: InflightRegistry | None, answer_id: str | None, reply: Reply):
        self._inflight, self._id, self._reply = inflight, answer_id, reply

    async def refresh(self) -> None:
        if self._inflight is None or self._id is None:
            return
        token = self._reply.resume_token()
        if token is not None:
            try:
                await self._inflight.update_token(self._id, token)
            except RedisError as e:
                log.warning("inflight.refresh_failed", error=type(e).__name__)


__all__ = ["Bridge", "Kind", "new_ref"]
