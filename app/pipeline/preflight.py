"""Everything between "a message for this route" and "ready to call Dify".

voice clip -> transcript; files checked against the app's upload rules; ``inputs`` built from
the route's mapping; redaction of the question, inputs and file names; inputs checked against
the app's form. Any refusal is said in the thread here (``reply.fail``) and the pipeline stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from app import texts
from app.config.settings import AppMode, Route
from app.dify.appcheck import AppParams, ParamsCache
from app.dify.client import DifyClient
from app.errors import ConfigError, UserFacingError
from app.pipeline.attachments import check_files
from app.pipeline.inputs import build_inputs, check_inputs, not_content
from app.pipeline.model import IncomingMessage, PlatformLimits, Reply
from app.pipeline.voice import as_question, quote, voice_clip
from app.redact import Prepared, RedactionService
from app.server.metrics import Metrics
from app.server.tracing import span

log = structlog.get_logger(__name__)


@dataclass
class Ready:
    """A message cleared for Dify: possibly transcribed, redacted, with checked inputs."""

    msg: IncomingMessage
    prepared: Prepared
    inputs: dict[str, Any]
    params: AppParams | None
    notices: list[str] = field(default_factory=list)
    # The placeholder is already up (voice messages show it while transcribing).
    started: bool = False


class Preflight:
    """Runs the checks before a Dify call; one per :class:`~app.pipeline.bridge.Bridge`."""

    def __init__(
        self,
        *,
        params: ParamsCache,
        redaction: RedactionService,
        metrics: Metrics,
        client_for: Callable[[Route], DifyClient],
        max_chars: int,
    ) -> None:
        self.params = params
        self.redaction = redaction
        self.metrics = metrics
        self.client_for = client_for
        self.max_chars = max_chars

    @staticmethod
    def needs_params(route: Route, msg: IncomingMessage) -> bool:
        """Inputs, files, voice and workflow queries are checked; plain chat questions are not."""
        return bool(
            route.config.inputs
            or msg.attachments
            or route.config.dify.mode in (AppMode.WORKFLOW, AppMode.COMPLETION)
        )

    async def params_for(self, route: Route, msg: IncomingMessage) -> AppParams | None:
        """The app's parameters when this message needs them, else None."""
        return await self.params.get(route) if self.needs_params(route, msg) else None

    async def run(
        self, msg: IncomingMessage, route: Route, reply: Reply, limits: PlatformLimits, ref: str
    ) -> Ready | None:
        """The message ready for Dify, or None once the user has been told why not."""
        clip = voice_clip(msg)
        started = False
        if clip is not None or (self.needs_params(route, msg) and not self.params.fresh(route)):
            # Transcription takes seconds, and so may asking Dify: show progress first.
            await reply.start(limits.placeholder)
            started = True
        params = await self.params_for(route, msg)
        if clip is not None:
            try:
                with span("dify.audio_to_text"):
                    msg = await as_question(
                        self.client_for(route), msg, clip, params, max_chars=self.max_chars
                    )
            except UserFacingError as e:
                log.info("voice.refused", reason=e.user_message[:60])
                await reply.fail(e.user_message, ref=ref)
                return None
            log.info("voice.transcribed", chars=len(msg.text))
        problem = check_files(msg.attachments, params.files) if params else None
        if problem:
            log.info("files.refused", count=len(msg.attachments))
            await reply.fail(problem, ref=ref)
            return None
        inputs = build_inputs(route, msg)
        prepared = await self._redact(msg, route, inputs, reply, ref)
        if prepared is None:
            return None
        problem = check_inputs(route, inputs, prepared.query, params) if params else None
        if problem:
            log.info("inputs.refused")
            await reply.fail(problem, ref=ref)
            return None
        ready = Ready(msg, prepared, inputs, params, started=started)
        if clip is not None:
            restorer = prepared.restorer
            shown = restorer.final(prepared.query) if restorer else prepared.query
            ready.notices.append(quote(shown))
        notice = self.redaction.notice(prepared) if route.config.redaction.notify else None
        if notice:
            ready.notices.append(notice)
        return ready

    async def _redact(
        self,
        msg: IncomingMessage,
        route: Route,
        inputs: dict[str, Any],
        reply: Reply,
        ref: str,
    ) -> Prepared | None:
        """Redact the question, the content inputs and file names; ``inputs`` is updated."""
        extra = {k: str(v) for k, v in inputs.items() if k not in not_content(route)}
        for i, att in enumerate(msg.attachments):
            extra[f"__file{i}"] = att.name
        try:
            with span("bridge.redact", mode=route.config.redaction.mode.value):
                prepared = await self.redaction.prepare(
                    route.config.redaction, msg.text, msg.key, extra=extra
                )
        except ConfigError as e:
            log.error("redaction.misconfigured", detail=str(e))
            await reply.fail(texts.PRIVACY_MISCONFIGURED, ref=ref)
            return None
        for etype, count in prepared.found.items():
            self.metrics.redacted.labels(etype).inc(count)
        if prepared.found:
            log.info("redaction.applied", found=dict(prepared.found), blocked=prepared.blocked)
        if prepared.blocked:
            await reply.fail(self.redaction.block_message(prepared), ref=ref)
            return None
        for k in list(inputs):
            if k in prepared.extra:
                inputs[k] = prepared.extra[k]
        return prepared


__all__ = ["Preflight", "Ready"]
