"""The answer run: one turn from the Dify stream to the final message (or its failure).

Inside the thread lock (see :mod:`app.pipeline.bridge`): upload files -> Dify stream (every app
mode) -> edit scheduler -> store the conversation id as soon as it is known -> recover a broken
stream; the final answer (or its failure) is :mod:`app.pipeline.answer_finish`.
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
from app.config.settings import AppMode, Route
from app.dify.appcheck import AppParams
from app.dify.client import DifyClient, EventStream, StoredMessage
from app.dify.errors import (
    ConversationNotFound,
    DifyError,
    DifyTimeout,
    StreamIncomplete,
    StreamProgress,
)
from app.dify.events import DifyEvent
from app.pipeline.admission import no_gate
from app.pipeline.answer_deadline import StreamDeadline
from app.pipeline.answer_extras import stream_error
from app.pipeline.answer_finish import AnswerFinish, restore
from app.pipeline.answer_fold import Answer, fold
from app.pipeline.attachments import upload_files
from app.pipeline.failures import safe_fail
from app.pipeline.human_loop import HumanLoop
from app.pipeline.model import (
    IncomingMessage,
    PlatformLimits,
    Reply,
    ShowsSteps,
)
from app.pipeline.streaming import BudgetRegistry, EditScheduler
from app.redact import Prepared, Restorer
from app.server.tracing import span
from app.state.store import ConversationRecord

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


class AnswerRun(AnswerFinish):
    """The answer-run half of :class:`~app.pipeline.bridge.Bridge` (which inherits it): what a turn
    needs of the bridge is declared here and in :class:`AnswerFinish`."""

    budgets: BudgetRegistry
    forms: HumanLoop

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
            await self._fail(turn, restore(answer.text, turn.prepared.restorer), err)
            return
        if answer.workflow_status == "paused" and answer.forms:
            await self.forms.paused(
                thread=msg.key,
                route=route,
                reply=reply,
                answer=answer,
                text=restore(answer.text, turn.prepared.restorer),
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


# ---------------------------------------------------------------------- plain helpers


def read_pace(edit_interval: float) -> float:
    """How often to read Dify's stream once the first words are shown: a few reads per edit
    interval keep every edit fresh (at most this much older than eager reading) while most
    per-token wake-ups are saved; capped so the end of an answer is never seen late."""
    return min(0.25, edit_interval / 5)


def _restore_partial(text: str, restorer: Restorer | None) -> str:
    return restorer.partial(text) if restorer else text


def _visible(answer: Answer, restorer: Restorer | None, e: DifyError) -> str:
    partial = e.partial_text or answer.text
    return restore(partial or "", restorer)
