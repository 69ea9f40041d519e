"""The end of an answer run: the final answer (or the failure) as the thread shows it.

Workflow output, the answer's size within the platform's limits (cut, with the full text as a file
where the platform takes one), partial and stopped notices, suggested follow-ups and the
conversation's Dify name, the answer cache, token usage and the failure message (with what had
arrived). :class:`~app.pipeline.answer_run.AnswerRun` inherits it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from redis.exceptions import RedisError

from app import texts
from app.config.settings import AppMode, Settings
from app.dify.appcheck import ParamsCache
from app.dify.client import DifyClient
from app.dify.errors import CircuitOpen, DifyError
from app.dify.hints import hint
from app.pipeline.answer_extras import chat_extras
from app.pipeline.answer_fold import Answer, workflow_answer
from app.pipeline.answer_size import AnswerSize
from app.pipeline.failures import safe_fail
from app.pipeline.model import ReplyExtras, ShowsSteps
from app.pipeline.streaming import deliver_final
from app.redact import Restorer
from app.server.metrics import Metrics
from app.server.tracing import span
from app.state.answer_cache import AnswerCache
from app.state.store import RedisStore

if TYPE_CHECKING:
    from app.pipeline.answer_run import Turn

# The answer run's logger name, so its events read as they did before the split.
log = structlog.get_logger("app.pipeline.answer_run")


class AnswerFinish:
    """The finishing half of :class:`~app.pipeline.answer_run.AnswerRun`: what it needs of the
    bridge is declared here."""

    settings: Settings
    store: RedisStore
    metrics: Metrics
    answer_cache: AnswerCache
    limiter: Any
    params: ParamsCache

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
        full_text = restore(text, restorer)
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
            want_suggested=await self.params.offers_follow_ups(route, turn.params),
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


def restore(text: str, restorer: Restorer | None) -> str:
    return restorer.final(text) if restorer else text
