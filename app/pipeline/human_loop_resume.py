"""Following a run again after its form was answered: re-attaching to its events, the
stored answer when the live events were missed, and how a failure shows what had arrived."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import structlog

from app.dify.client import DifyClient
from app.dify.errors import DifyError
from app.dify.events import DifyEvent, WorkflowFinished
from app.pipeline.answer_fold import Answer
from app.pipeline.failures import safe_fail
from app.pipeline.model import Reply
from app.redact import Restorer
from app.state.form_store import PendingForm
from app.texts import FAILED_AFTER_PARTIAL

log = structlog.get_logger("app.pipeline.human_loop")


@dataclass(slots=True)
class RunEvents:
    """A re-attached run: the events of the first read (Dify's ping once subscribed) and the
    rest of the stream."""

    first: list[DifyEvent]
    batches: AsyncGenerator[list[DifyEvent], None]


async def reattach(
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
    return no_events(), []


async def no_events() -> AsyncGenerator[list[DifyEvent], None]:
    """A stream that ended at once (the continuation then reads the stored answer)."""
    return
    yield []  # pragma: no cover - makes this an async generator


async def stored_answer(client: DifyClient, ans: Answer, p: PendingForm) -> str:
    assert ans.conversation_id and ans.message_id
    try:
        whole = await client.recover_answer(
            conversation_id=ans.conversation_id, message_id=ans.message_id, user=p.user
        )
    except DifyError as e:
        log.warning("forms.stored_answer_unavailable", error=type(e).__name__)
        return ""
    return (whole or "")[p.before :]


def final_text(text: str, restorer: Restorer | None) -> str:
    return restorer.final(text) if restorer else text


async def fail_with(reply: Reply, partial: str, message: str, ref: str) -> None:
    text = (
        FAILED_AFTER_PARTIAL.format(partial=partial, message=message)
        if partial.strip()
        else message
    )
    await safe_fail(reply, text, ref)


__all__ = ["RunEvents", "fail_with", "final_text", "no_events", "reattach", "stored_answer"]
