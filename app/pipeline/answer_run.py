"""The answer run: one turn from the Dify stream to the final message (or its failure).

Inside the thread lock (see :mod:`app.pipeline.bridge`): upload files -> Dify stream (every app
mode) -> edit scheduler -> store the conversation id as soon as it is known -> recover a broken
stream -> final answer with suggestions, sources and the conversation's Dify name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from app import texts
from app.config.settings import AppMode, Route, Settings
from app.dify.appcheck import AppParams
from app.dify.client import DifyClient, EventStream, StoredMessage
from app.dify.errors import (
    CircuitOpen,
    ConversationNotFound,
    DifyError,
    DifyTimeout,
    StreamIncomplete,
    StreamProgress,
)
from app.dify.events import DifyEvent
from app.pipeline.admission import no_gate
from app.pipeline.answer_deadline import StreamDeadline
from app.pipeline.answer_extras import chat_extras, hint, stream_error
from app.pipeline.answer_fold import Answer, fold, workflow_answer
from app.pipeline.answer_size import AnswerSize
from app.pipeline.attachments import upload_files
from app.pipeline.failures import safe_fail
from app.pipeline.human_loop import HumanLoop
from app.pipeline.model import (
    IncomingMessage,
    PlatformLimits,
    Reply,
    ReplyExtras,
    ShowsSteps,
)
from app.pipeline.streaming import BudgetRegistry, EditScheduler, deliver_final
from app.redact import Prepared, Restorer
from app.server.metrics import Metrics
from app.server.tracing import span
from app.state.answer_cache import AnswerCache
from app.state.store import ConversationRecord, RedisStore

log = structlog.get_logger(__name__)


@dataclass
class Turn:
    msg: IncomingMessage
    reply: Reply
    limits: PlatformLimits
    route: Route
    prepared: Prepared
    ref: str
    inputs: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    params: AppParams | None = None
    # Slash command with the answer cache on: no conversation is read or stored.
    one_shot: bool = False
    # The question to cache the answer under (set only when the answer may be shared).
    cache_question: str | None = None
    new_conversation: bool = False
    # A Stop click named this answer's task.
    stopped: bool = False
    # Gives the answer's place in the start gate back (once its first words are shown).
    leave_gate: Callable[[], None] = no_gate


class AnswerRun:
    """The answer-run half of :class:`~app.pipeline.bridge.Bridge` (which inherits it): what a turn
    needs of the bridge is declared here."""

    settings: Settings
    store: RedisStore
    metrics: Metrics
    budgets: BudgetRegistry
    answer_cache: AnswerCache
    forms: HumanLoop
    limiter: Any

    def client_for(self, route: Route) -> DifyClient:
        raise NotImplementedError

    async def _run_turn(self, turn: Turn, record: ConversationRecord | None) -> None:
        msg, route, reply = turn.msg, turn.route, turn.reply
        client = self.client_for(route)
        mode = route.config.dify.mode
        user = msg.key.dify_user()
        conversation_id = record.conversation_id if record else None
        budget = self.budgets.get(
            msg.key.platform, msg.key.workspace, turn.limits.workspace_edits_per_minute
        )
        platform = msg.key.platform
        names = {i: turn.prepared.extra.get(f"__file{i}", "") for i in range(len(msg.attachments))}
        try:
            with span("dify.upload", files=len(msg.attachments)):
                turn.files = await upload_files(
                    client,
                    user,
                    msg.attachments,
                    names,
                    turn.params.files if turn.params else None,
                )
        except DifyError as e:
            await self._fail(turn, "", e)
            return
        except ValueError as e:  # a download larger than the app takes
            await safe_fail(reply, str(e), turn.ref)
            return
        started = time.monotonic()
        self.metrics.active.inc()
        answer = Answer()

        async def send(text: str, status: str | None) -> None:
            with span("platform.update", platform=platform, chars=len(text)):
                await reply.update(text, status=status)

        scheduler = EditScheduler(
            send,
            interval=max(route.config.edit_interval, turn.limits.min_edit_interval),
            budget=budget,
            on_edit=self.metrics.edits.labels(platform).inc,
            on_ratelimited=self.metrics.ratelimited.labels(platform).inc,
        )
        try:
            try:
                with span("dify.stream", mode=mode.value, continued=conversation_id is not None):
                    answer = await self._stream(client, turn, conversation_id, scheduler, started)
            except ConversationNotFound:
                if conversation_id is None:
                    raise
                log.info("conversation.expired")
                await self.store.forget(msg.key)
                turn.notices.append(texts.THREAD_EXPIRED)
                answer = await self._stream(client, turn, None, scheduler, started)
            except StreamIncomplete as e:
                answer = await self._recover(client, turn, e)
        except DifyError as e:
            await scheduler.close()
            await self._fail(turn, _visible(answer, turn.prepared.restorer, e), e)
            return
        finally:
            self.metrics.active.dec()
            try:
                stop_request = await self.store.end_stream(
                    msg.key, touch=conversation_id is not None
                )
            except RedisError as e:  # the answer is still worth delivering
                log.warning("store.write_failed", step="end_stream", error=type(e).__name__)
                stop_request = None
        turn.stopped = stop_request is not None and stop_request == answer.task_id
        await scheduler.close()
        if answer.error is not None:
            err = stream_error(answer.error)
            await self._fail(turn, _restore(answer.text, turn.prepared.restorer), err)
            return
        if answer.workflow_status == "paused" and answer.forms:
            await self.forms.paused(
                thread=msg.key,
                route=route,
                reply=reply,
                answer=answer,
                text=_restore(answer.text, turn.prepared.restorer),
                notices=[*turn.notices, *answer.notices],
                user=user,
                asker=msg.speaker.id,
                budget=budget,
            )
            return
        await self._finish(client, turn, answer, started, budget)

    async def _stream(
        self,
        client: DifyClient,
        turn: Turn,
        conversation_id: str | None,
        scheduler: EditScheduler,
        started: float,
    ) -> Answer:
        msg, route = turn.msg, turn.route
        mode = route.config.dify.mode
        user = msg.key.dify_user()
        query = turn.prepared.query
        restorer = turn.prepared.restorer
        events: EventStream
        if mode.is_chat:
            events = client.chat_stream(
                query=query,
                user=user,
                conversation_id=conversation_id,
                inputs=turn.inputs,
                files=turn.files,
                # Dify names a new conversation (admins find it in the logs by that name).
                auto_generate_name=conversation_id is None and not turn.one_shot,
            )
        elif mode is AppMode.COMPLETION:
            # Completion apps read the text from their form's query variable (Dify drops the
            # key if the form has no such variable); the legacy ``query`` field goes too.
            qv = route.config.dify.query_variable
            events = client.completion_stream(
                query=query, user=user, inputs={qv: query, **turn.inputs}, files=turn.files
            )
        else:
            wf_inputs = {**turn.inputs, route.config.dify.query_variable: query}
            events = client.workflow_stream(user=user, inputs=wf_inputs, files=turn.files)
        ans = Answer(thinking_status=route.config.thinking_status)
        turn.new_conversation = mode.is_chat and conversation_id is None and not turn.one_shot
        # One-shot turns never store a conversation: pretend it is already saved.
        saved_conversation = conversation_id is not None or turn.one_shot or not mode.is_chat
        saved_task = False
        # Redis writes run beside the stream so the first text is not held up by them; they
        # are awaited before the answer is finished.
        writes: list[asyncio.Task[Any]] = []
        ttft = self.metrics.ttft
        push = scheduler.push
        batches = events.batches()
        shown = False
        deadline = StreamDeadline(
            first_content=route.config.first_content_timeout
            or self.settings.dify_first_content_timeout,
            answer=route.config.answer_timeout or self.settings.dify_answer_timeout,
        )
        saw = deadline.saw
        size = self._size(turn)

        def visible(text: str) -> str:
            # Cut before restoring: a 5 MB answer is not restored whole on every edit.
            if len(text) > 2 * size.stream_chars:
                text = text[: 2 * size.stream_chars]
            return size.streaming(_restore_partial(text, restorer))

        steps_view = turn.reply if isinstance(turn.reply, ShowsSteps) else None
        try:
            async with deadline:
                # One network read at a time: the events of a read are folded, then shown once.
                async for batch in batches:
                    changed = False
                    if not deadline.content_started:
                        for ev in batch:
                            saw(ev)
                    for ev in batch:
                        if not (saved_task and saved_conversation):
                            saved_task, saved_conversation = self._note_ids(
                                turn, ev, ans, writes, saved_task, saved_conversation
                            )
                        if fold(ev, ans) and ans.first_text_at is not None:
                            waited = ans.first_text_at - started
                            ttft.observe(waited)
                            log.info("dify.first_token", ms=int(waited * 1000))
                        changed = changed or ans.changed
                    if changed and steps_view is not None and ans.steps:
                        steps_view.show_steps(tuple(ans.steps))
                    if changed and (ans.text or ans.status):
                        if not shown and ans.text:
                            # The first words go out now, before the reads already waiting are
                            # taken in and folded.
                            shown = True
                            events.pace_reads(read_pace(scheduler.interval))
                            turn.leave_gate()
                            await scheduler.show_first(visible(ans.text), ans.status)
                        else:
                            push(visible(ans.text), ans.status)
        except DifyTimeout as e:
            if e.phase not in ("first_content", "answer"):
                raise
            await self._stop_overdue(client, turn, ans, e.phase)
            raise DifyTimeout(
                phase=e.phase,
                progress=StreamProgress(
                    conversation_id=ans.conversation_id,
                    message_id=ans.message_id,
                    task_id=ans.task_id,
                    partial_text=ans.text,
                ),
            ) from None
        finally:
            await batches.aclose()
            for result in await asyncio.gather(*writes, return_exceptions=True):
                if isinstance(result, BaseException):
                    log.warning("store.write_failed", error=type(result).__name__)
        return ans

    async def _stop_overdue(self, client: DifyClient, turn: Turn, ans: Answer, phase: str) -> None:
        """An answer outran its deadline: stop the Dify task so it stops spending tokens.

        Dify's pings carry no task id, so a stream that sent nothing but pings cannot be stopped
        by id: closing the connection (the caller does) is all there is, and the log says so.
        """
        log.warning(
            "answer.deadline", phase=phase, task_known=bool(ans.task_id), chars=len(ans.text)
        )
        if not ans.task_id:
            return
        try:
            async with asyncio.timeout(5):
                await client.stop(
                    ans.task_id,
                    user=turn.msg.key.dify_user(),
                    mode=turn.route.config.dify.mode.value,
                )
        except (DifyError, TimeoutError, ValueError) as e:
            log.warning("dify.stop_failed", error=type(e).__name__)

    def _note_ids(
        self,
        turn: Turn,
        ev: DifyEvent,
        ans: Answer,
        writes: list[asyncio.Task[Any]],
        saved_task: bool,
        saved_conversation: bool,
    ) -> tuple[bool, bool]:
        """Store the conversation and task ids the first time an event carries them; the
        writes run beside the stream so the first text is not held up by them."""
        conv = ev.conversation_id if not saved_conversation else None
        task = ev.task_id if not saved_task else None
        if conv or task:
            writes.append(
                asyncio.create_task(
                    self.store.save_stream_ids(
                        turn.msg.key,
                        route=turn.route.name,
                        user=turn.msg.key.dify_user(),
                        conversation_id=conv,
                        task_id=task,
                    )
                )
            )
        if task:
            ans.task_id = task
            structlog.contextvars.bind_contextvars(dify_task=task)
        return saved_task or bool(task), saved_conversation or bool(conv)

    async def _recover(self, client: DifyClient, turn: Turn, e: StreamIncomplete) -> Answer:
        """The stream ended without a closing event: ask Dify for the stored answer first.

        Dify's copy is the whole answer only when it ended normally and holds more than had
        arrived (:meth:`StoredMessage.completes`); otherwise the longer of the two texts is
        shown as partial. With nothing to show, the failure is reported as such."""
        seen = e.partial_text or ""
        log.warning("dify.stream_incomplete", have_chars=len(seen))
        stored: StoredMessage | None = None
        if e.conversation_id and e.message_id:
            try:
                stored = await client.stored_message(
                    conversation_id=e.conversation_id,
                    message_id=e.message_id,
                    user=turn.msg.key.dify_user(),
                )
            except DifyError as err:
                log.warning("dify.recover_failed", error=type(err).__name__)
        conv, mid = e.conversation_id, e.message_id
        # The tokens were spent even though message_end (which carries them) never arrived.
        usage = {"total_tokens": stored.total_tokens} if stored and stored.total_tokens else {}
        if stored is not None and stored.completes(seen):
            log.info("dify.recovered", chars=len(stored.answer))
            return Answer(text=stored.answer, conversation_id=conv, message_id=mid, usage=usage)
        text = stored.answer if stored is not None and len(stored.answer) > len(seen) else seen
        if not text.strip():
            raise e
        log.warning(
            "dify.recovered_partial", chars=len(text), dify_status=stored.status if stored else None
        )
        return Answer(text=text, partial=True, conversation_id=conv, message_id=mid, usage=usage)

    async def _finish(
        self,
        client: DifyClient,
        turn: Turn,
        answer: Answer,
        started: float,
        budget: Any,
    ) -> None:
        msg, route = turn.msg, turn.route
        restorer = turn.prepared.restorer
        text = answer.text
        if route.config.dify.mode is AppMode.WORKFLOW:
            text = workflow_answer(text, answer.outputs, route.config.dify.output_variable)
        full_text = _restore(text, restorer)
        text, cut = self._size(turn).final(full_text)
        extras = ReplyExtras(
            dify_message_id=answer.message_id,
            conversation_id=answer.conversation_id,
            sources=answer.sources if route.config.show_sources else [],
            files=answer.files,
            notices=list(turn.notices),
            route=route.name,
        )
        if answer.partial:
            # No feedback on (nor follow-ups to) an answer that may be missing its end.
            extras.partial, extras.dify_message_id = True, None
            extras.notices.append(texts.PARTIAL)
        elif turn.stopped or answer.workflow_status == "stopped":
            extras.stopped = True
            extras.notices.append(texts.STOPPED)
        else:
            await self._chat_extras(client, turn, answer, extras)
        if cut:
            attach = turn.limits.attaches_files
            log.info("answer.too_long", chars=len(full_text), shown=len(text), attached=attach)
            extras.full_text_file = full_text if attach else None
            extras.notices.append(texts.cut_notice(self._size(turn).max_messages, attached=attach))
        if not text.strip() and not extras.files:
            text = texts.EMPTY_ANSWER

        if answer.steps and isinstance(turn.reply, ShowsSteps):
            turn.reply.show_steps(tuple(answer.steps))

        async def finish() -> None:
            with span("platform.finish", platform=msg.key.platform, chars=len(text)):
                await turn.reply.finish(text, extras)

        await deliver_final(
            finish,
            budget=budget,
            on_ratelimited=self.metrics.ratelimited.labels(msg.key.platform).inc,
        )
        if (
            turn.cache_question
            and not extras.stopped
            and not extras.partial
            and not extras.files
            and text.strip()
        ):
            try:
                await self.answer_cache.put(
                    route.name,
                    turn.cache_question,
                    text,
                    extras.sources,
                    route.config.answer_cache_ttl,
                )
            except RedisError as e:
                log.warning("answer_cache.write_failed", error=type(e).__name__)
        total = answer.usage.get("total_tokens")
        if isinstance(total, int) and total > 0:
            self.metrics.tokens.labels(route.name).inc(total)
            if self.limiter is not None:
                await self.limiter.record_usage(msg, route, total)
        self.metrics.latency.observe(time.monotonic() - started)
        outcome = "partial" if extras.partial else "stopped" if extras.stopped else "ok"
        self.metrics.answers.labels(msg.key.platform, outcome).inc()
        log.info("answer.finished", chars=len(text), sources=len(extras.sources))

    async def _chat_extras(
        self, client: DifyClient, turn: Turn, answer: Answer, extras: ReplyExtras
    ) -> None:
        """Suggested follow-ups and, on a new conversation's first answer, Dify's name for it."""
        route = turn.route
        if not route.config.dify.mode.is_chat or not answer.message_id:
            return
        extras.suggested, name = await chat_extras(
            client,
            user=turn.msg.key.dify_user(),
            message_id=answer.message_id,
            conversation_id=answer.conversation_id,
            want_suggested=route.config.suggested_questions,
            want_name=turn.new_conversation,
        )
        if name:
            extras.conversation_name = name
            # As a notice every adapter already shows, so admins can find it in Dify's logs.
            extras.notices.append(texts.CONVERSATION_NAMED.format(name=name))
            try:
                await self.store.set_conversation_name(turn.msg.key, name)
            except RedisError as e:
                log.warning("store.write_failed", error=type(e).__name__)

    def _size(self, turn: Turn) -> AnswerSize:
        """How much of an answer the thread shows (see app/pipeline/answer_size.py)."""
        most = turn.route.config.max_messages_per_answer or self.settings.max_messages_per_answer
        # The last message also carries the error or the notices: keep a little room.
        return AnswerSize(max_chars=max(1, turn.limits.max_message_chars - 200), max_messages=most)

    async def _fail(self, turn: Turn, partial: str, e: DifyError) -> None:
        kind = type(e).__name__
        self.metrics.errors.labels(kind).inc()
        self.metrics.answers.labels(turn.msg.key.platform, "failed").inc()
        log.warning(
            "answer.failed",
            error=kind,
            status=e.status,
            code=e.code,
            hint=hint(e, turn.route.base_url),
        )
        text = turn.route.config.fallback_text if isinstance(e, CircuitOpen) else e.user_message
        partial, cut = self._size(turn).final(partial)
        if cut:  # a failure message has no file: what fits, then the reason
            partial += "\n\n…"
        if partial.strip():
            text = texts.FAILED_AFTER_PARTIAL.format(partial=partial, message=text)
        await safe_fail(turn.reply, text, turn.ref)


# ---------------------------------------------------------------------- plain helpers


def _restore(text: str, restorer: Restorer | None) -> str:
    return restorer.final(text) if restorer else text


def read_pace(edit_interval: float) -> float:
    """How often to read Dify's stream once the first words are shown: a few reads per edit
    interval keep every edit fresh (at most this much older than eager reading) while most
    per-token wake-ups are saved; capped so the end of an answer is never seen late."""
    return min(0.25, edit_interval / 5)


def _restore_partial(text: str, restorer: Restorer | None) -> str:
    return restorer.partial(text) if restorer else text


def _visible(answer: Answer, restorer: Restorer | None, e: DifyError) -> str:
    partial = e.partial_text or answer.text
    return _restore(partial or "", restorer)
