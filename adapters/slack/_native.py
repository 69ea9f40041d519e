"""Slack's native streaming per answer: ``chat.startStream`` / ``appendStream`` / ``stopStream``.

The answer's text goes out as deltas, Dify's steps (tool calls, workflow nodes) as task cards
(``task_update`` chunks; ``plan`` mode groups them in one plan block), and the last call carries
the sources (URL sources on a "Sources" card) and the blocks under the answer: Slack's feedback
buttons, suggested questions, "New topic".

Limits kept here:

* one streamed message holds at most :data:`PART_LIMIT` characters (the markdown block's 12,000
  with room to spare); a longer answer is stopped at a paragraph break and continues in a new
  streamed message in the same thread (a code block cut in two is closed and reopened);
* ``chat.startStream`` / ``stopStream`` are Tier 2, ``appendStream`` Tier 4 per workspace: the
  caller's :class:`~adapters.slack._budget.MethodWindow` s say when; an append that does not fit
  is skipped (the next one carries the delta), a start that does not fit means "use edits";
* at most 50 blocks at ``stopStream``.

Any refusal (a Slack error code) is raised as :class:`SlackCallError`; the reply then continues
with ``chat.update`` edits of the messages listed in :attr:`NativeStream.message_ts`, so no text
is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from adapters.slack import _blocks as B
from adapters.slack._budget import MethodWindow
from adapters.slack._webapi import SlackApi
from app.errors import PlatformError
from app.pipeline.model import Source, Step

log = structlog.get_logger(__name__)

PART_LIMIT = B.PART_LIMIT
_FENCE = "```"
_TASK_STATUS = {"running": "in_progress", "done": "complete", "failed": "error"}
# Task card fields are short by design; Slack documents no limit, slack_sdk none either.
_TASK_TITLE = 150
_TASK_TEXT = 500
_MAX_URL_SOURCES = 10
# Chunks per call: enough for every step that changed since the last call, in bounded bodies.
_MAX_CHUNKS = 40


# Error codes after which streaming is not tried again in that workspace for a while: Slack said
# the app or the conversation may not stream (agent features off, a missing scope, ...).
REFUSAL_MEMORY = 600.0


class Refusals:
    """Where Slack refused native streaming lately, per (workspace, DM or channel), so each new
    answer does not pay a failed ``chat.startStream`` before falling back to edits."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[tuple[str, bool], tuple[float, str]] = {}

    def refuse(self, team: str, dm: bool, code: str) -> bool:
        """Remember a refusal; True the first time in a while (worth a warning in the log)."""
        key = (team, dm)
        first = key not in self._until or self._until[key][0] <= self._clock()
        self._until[key] = (self._clock() + REFUSAL_MEMORY, code)
        return first

    def refused(self, team: str, dm: bool) -> str | None:
        """The code Slack refused with, while it is remembered."""
        hit = self._until.get((team, dm))
        return hit[1] if hit and hit[0] > self._clock() else None


def defuse(md: str) -> str:
    """Stop ``<!channel>``, ``<!here>`` and ``<@U…>`` in streamed answer text from notifying anyone.

    A zero-width space after ``<`` keeps the text readable. It only inserts after ``<``, so the
    defused text of a longer answer still starts with that of a shorter one (deltas stay deltas).
    """
    return md.replace("<!", "<\u200b!").replace("<@", "<\u200b@") if "<" in md else md


def task_chunk(step: Step) -> dict[str, Any]:
    """One step as a ``task_update`` chunk (slack_sdk ``TaskUpdateChunk``)."""
    chunk: dict[str, Any] = {
        "type": "task_update",
        "id": step.id[:64],
        "title": step.title[:_TASK_TITLE] or "Step",
        "status": _TASK_STATUS.get(step.state, "in_progress"),
    }
    if step.detail:
        chunk["details"] = step.detail[:_TASK_TEXT]
    if step.output:
        chunk["output"] = step.output[:_TASK_TEXT]
    return chunk


def sources_chunk(sources: Sequence[Source]) -> dict[str, Any] | None:
    """The answer's linked sources as a finished "Sources" card (URL source elements)."""
    urls = [
        {"type": "url", "url": s.url, "text": (s.title or s.url)[:150]}
        for s in sources
        if s.url and s.url.startswith(("https://", "http://"))
    ][:_MAX_URL_SOURCES]
    if not urls:
        return None
    return {
        "type": "task_update",
        "id": "dify-sources",
        "title": "Sources",
        "status": "complete",
        "sources": urls,
    }


def _reopen(shown: str) -> str:
    """What the next message must start with when ``shown`` ends inside a code block: the
    block's opening fence (with its language), else nothing."""
    if shown.count(_FENCE) % 2 == 0:
        return ""
    opener = shown[shown.rindex(_FENCE) :].split("\n", 1)[0]
    return opener + "\n"


def cut_point(text: str, start: int, end: int, floor: int) -> int:
    """Where to end a streamed message: the last paragraph break (else line break) in
    ``text[start:end]`` at or after ``floor`` (text already sent stays), else ``end``."""
    window = text[floor:end]
    for sep in ("\n\n", "\n"):
        i = window.rfind(sep)
        if i > 0 and floor + i + len(sep) > start:
            return floor + i + len(sep)
    return end


class NativeStream:
    """The streamed messages of one answer. Not thread-safe: the reply's scheduler serialises."""

    def __init__(
        self,
        api: SlackApi,
        *,
        channel: str,
        thread_ts: str,
        recipient: dict[str, str],
        task_display: str = "timeline",
        streams: MethodWindow | None = None,
        appends: MethodWindow | None = None,
    ) -> None:
        self._api = api
        self._channel = channel
        self._thread_ts = thread_ts
        self._recipient = recipient
        self._display = task_display
        self._streams = streams
        self._appends = appends
        self._done: list[str] = []  # ts of streamed messages already stopped
        self._ts: str | None = None  # the message streaming now
        self._text = ""  # the answer text sent so far, across messages
        self._base = 0  # where the current message's part of the text starts
        self._prefix = ""  # what the current message shows before text[_base:] (a reopened fence)
        self._steps_sent: dict[str, dict[str, Any]] = {}

    @property
    def message_ts(self) -> list[str]:
        """Every message this answer streamed into, oldest first."""
        return [*self._done, *([self._ts] if self._ts else [])]

    def _step_chunks(self, steps: Sequence[Step]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for s in steps:
            chunk = task_chunk(s)
            if self._steps_sent.get(chunk["id"]) != chunk:
                out.append(chunk)
        out = out[-_MAX_CHUNKS:]
        if out and self._display == "plan" and not self._steps_sent:
            # The plan block's heading, with its first task.
            out.insert(0, {"type": "plan_update", "title": "Working on it"})
        return out

    def _mark_sent(self, chunks: list[dict[str, Any]]) -> None:
        for c in chunks:
            if c.get("type") == "task_update":
                self._steps_sent[str(c["id"])] = c

    def _args(self, md: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        # Plain text goes as markdown_text; with task cards everything goes as chunks, in order.
        if not chunks:
            return {"markdown_text": md or None}
        body = list(chunks)
        if md:
            body.append({"type": "markdown_text", "text": md})
        return {"chunks": body}

    async def _start(self, md: str, chunks: list[dict[str, Any]]) -> bool:
        if self._streams is not None and not await self._streams.try_take():
            return False
        data = await self._api.call(
            "chat.startStream",
            channel=self._channel,
            thread_ts=self._thread_ts,
            task_display_mode=self._display if self._display != "timeline" else None,
            **self._args(md, chunks),
            **self._recipient,
        )
        ts = data.get("ts")
        if not isinstance(ts, str):
            raise PlatformError("chat.startStream returned no ts", code="no_ts")
        self._ts = ts
        self._mark_sent(chunks)
        return True

    async def _stop(
        self, md: str, chunks: list[dict[str, Any]], blocks: list[B.Block] | None
    ) -> None:
        assert self._ts is not None
        await self._api.call(
            "chat.stopStream",
            channel=self._channel,
            ts=self._ts,
            blocks=blocks or None,
            **self._args(md, chunks),
        )
        self._mark_sent(chunks)
        self._done.append(self._ts)
        self._ts = None

    async def _roll_over(self, text: str) -> bool:
        """End the current message where the next part of ``text`` no longer fits; False when
        a new stream cannot start now (the caller falls back to edits)."""
        while True:
            used = len(self._prefix) + len(self._text) - self._base
            if len(text) - len(self._text) <= PART_LIMIT - used:
                return True
            end = self._base + PART_LIMIT - len(self._prefix)
            cut = cut_point(text, self._base, end, len(self._text))
            shown = self._prefix + text[self._base : cut]
            reopen = _reopen(shown)
            tail = text[len(self._text) : cut] + ("\n" + _FENCE if reopen else "")
            if self._ts is None:
                if not await self._start(self._prefix + tail, []):
                    return False
                await self._stop("", [], None)
            else:
                await self._stop(tail, [], None)
            self._text, self._base, self._prefix = text[:cut], cut, reopen

    async def show(self, text: str, steps: Sequence[Step]) -> bool:
        """Stream ``text`` (the whole answer so far) and the steps that changed. True: shown, or
        skipped for now (an append over the tier; the next call carries it). False: streaming
        cannot go on (Dify replaced the text, or no new stream may start now): use edits."""
        text = defuse(text)
        if not text.startswith(self._text) or not await self._roll_over(text):
            return False
        delta = text[len(self._text) :]
        chunks = self._step_chunks(steps)
        if not delta and not chunks:
            return True
        if self._ts is None:
            if not await self._start(self._prefix + delta, chunks):
                return False
        else:
            if self._appends is not None and not await self._appends.try_take():
                return True
            await self._api.call(
                "chat.appendStream",
                channel=self._channel,
                ts=self._ts,
                **self._args(delta, chunks),
            )
            self._mark_sent(chunks)
        self._text = text
        return True

    async def finish(
        self, text: str, steps: Sequence[Step], sources: Sequence[Source], blocks: list[B.Block]
    ) -> bool:
        """Stream the rest of ``text``, the steps' final state and the linked sources, then stop
        with ``blocks`` under the answer. False: the caller must deliver with edits instead.
        Safe to call again after a rate limit: what went out is not sent twice."""
        text = defuse(text)
        if not text.startswith(self._text) or not await self._roll_over(text):
            return False
        delta = text[len(self._text) :]
        chunks = self._step_chunks(steps)
        src = sources_chunk(sources)
        if src is not None and self._steps_sent.get(src["id"]) != src:
            chunks.append(src)
        if self._ts is None:
            if not await self._start(self._prefix + delta, chunks):
                return False
            self._text, delta, chunks = text, "", []
        await self._stop(delta, chunks, blocks[:50])
        self._text = text
        return True

    async def stop_quietly(self) -> None:
        """End a live stream as it is (its text stays); used before falling back to edits."""
        if self._ts is None:
            return
        try:
            await self._api.call("chat.stopStream", channel=self._channel, ts=self._ts)
        except Exception as e:  # the edits that follow rewrite the message anyway
            log.info("slack.stop_stream_failed", error=type(e).__name__)
        self._done.append(self._ts)
        self._ts = None
