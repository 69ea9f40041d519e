"""The streaming read of one Dify call: events per network read, paced reads, and what
the breaker hears when a stream ends (the rules are in :mod:`app.dify.client`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import cast

import httpx

from app.dify.errors import (
    DifyError,
    DifyProtocolError,
    DifyTimeout,
    StreamIncomplete,
    StreamProgress,
)
from app.dify.events import (
    TERMINAL,
    DifyEvent,
    StreamError,
    TextDelta,
    TextReplace,
)
from app.dify.sse import SSEDecodeError, SSEDecoder
from app.dify.transport import DifyTransport
from app.dify.wire import _TRANSPORT_ERRORS, _close, _transport_error


class _Progress:
    """Ids and text seen so far in one stream, for StreamIncomplete and friends."""

    __slots__ = ("conversation_id", "message_id", "parts", "task_id", "workflow_run_id")

    def __init__(self) -> None:
        self.conversation_id: str | None = None
        self.message_id: str | None = None
        self.task_id: str | None = None
        self.workflow_run_id: str | None = None
        self.parts: list[str] = []

    def see(self, ev: DifyEvent) -> None:
        if self.task_id is None and ev.task_id:
            self.task_id = ev.task_id
        if self.conversation_id is None and ev.conversation_id:
            self.conversation_id = ev.conversation_id
        if self.message_id is None and ev.message_id:
            self.message_id = ev.message_id
        if self.workflow_run_id is None and ev.workflow_run_id:
            self.workflow_run_id = ev.workflow_run_id
        if type(ev) is TextDelta:
            self.parts.append(ev.answer)
        elif type(ev) is TextReplace:
            self.parts = [ev.answer]

    def snapshot(self) -> StreamProgress:
        return StreamProgress(
            conversation_id=self.conversation_id,
            message_id=self.message_id,
            task_id=self.task_id,
            workflow_run_id=self.workflow_run_id,
            partial_text="".join(self.parts),
        )


def _first_event_end(chunk: bytes) -> int:
    """Where the first event of ``chunk`` ends (after its blank line), else ``len(chunk)``."""
    if len(chunk) < 2048:
        return len(chunk)
    ends = [i + n for i, n in ((chunk.find(b"\n\n"), 2), (chunk.find(b"\r\n\r\n"), 4)) if i >= 0]
    return min(ends) if ends else len(chunk)


# Paced reads start once two reads in a row were smaller than _PACE_BELOW: events trickle in
# (an LLM's tokens, a few hundred bytes each) and a pause lets the next read take in several.
# Reads that are large from the start mean the stream arrives faster than a pace would take
# it in: pausing would only hold the text back and leave the process idle between reads, which
# costs more CPU than the reads it saves (a waking process runs on cold caches; measured here:
# 2 KB answers sent at once as 400 events, 50 at a time, 5.6 ms of CPU per answer paced
# against 4.5 ms unpaced). A paced read that fills _READ_CHUNK (the buffer held more) means the
# same, and ends the pacing.
_PACE_BELOW = 4 * 1024
# What one read of the aiohttp transport hands over at most (httpx-aiohttp reads in 16 KB).
_READ_CHUNK = 16 * 1024


def _next_tick(now: float, seconds: float) -> float:
    """The next multiple of ``seconds`` on the loop's clock after ``now``.

    Paced reads wake on a shared grid rather than ``seconds`` after their own last read: the
    streams answering at once then wake in the same loop iteration, one wake-up for all of
    them instead of one each: 7-8 % less CPU per answer with 50 answers at once (see
    docs/performance.md, "Paced reads")."""
    return (now // seconds + 1) * seconds if seconds > 0 else now


class _Pace:
    """How long a stream waits between network reads (0: read as data arrives)."""

    __slots__ = ("enabled", "engaged", "seconds", "small_reads")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.seconds = 0.0
        self.engaged = False  # pausing between reads now (see _PACE_BELOW)
        self.small_reads = 0

    def saw(self, read: int) -> None:
        """Note a read of ``read`` bytes: start or end the pauses."""
        if self.engaged:
            if read >= _READ_CHUNK:
                self.engaged, self.small_reads = False, 0
            return
        self.small_reads = self.small_reads + 1 if read < _PACE_BELOW else 0
        self.engaged = self.small_reads >= 2


class EventStream:
    """One streamed Dify call: ``async for`` gives typed events one by one; :meth:`batches`
    gives them per network read, which saves a hop per event on the hot path.

    Iterate it once, one way or the other; :meth:`aclose` (or the end of the stream) releases
    the connection.
    """

    __slots__ = ("_batches", "_buffer", "_index", "_pace")

    def __init__(self, batches: AsyncGenerator[list[DifyEvent], None], pace: _Pace) -> None:
        self._batches = batches
        self._pace = pace
        self._buffer: list[DifyEvent] = []
        self._index = 0

    def batches(self) -> AsyncGenerator[list[DifyEvent], None]:
        return self._batches

    def pace_reads(self, seconds: float) -> None:
        """From now on, read the network at most every ``seconds``.

        A caller that only shows the text once per edit interval calls this once the first
        words are out: Dify sends an event per token, and reading each as it lands costs a
        wake-up, a read and a decode per event. Reading a few times per edit interval gets the
        same text into the same edits for a fraction of the CPU (the events wait in
        aiohttp's buffer meanwhile); the end of the answer is seen at most ``seconds`` later.
        Only while reads are small: a stream arriving in large reads is read as it comes.

        Only where one read returns everything buffered (the aiohttp transport, the default):
        httpx's own transport returns one HTTP chunk (one event) per read, so pacing it would
        slow the answer down instead, and this is a no-op there.
        """
        if self._pace.enabled:
            self._pace.seconds = max(0.0, float(seconds))

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> DifyEvent:
        while self._index >= len(self._buffer):
            self._buffer = await anext(self._batches)
            self._index = 0
        self._index += 1
        return self._buffer[self._index - 1]

    async def aclose(self) -> None:
        await self._batches.aclose()


class StreamingTransport(DifyTransport):
    """:class:`DifyTransport` plus streamed calls (:meth:`_event_stream`)."""

    def _event_stream(self, path: str, body: bytes | None, method: str = "POST") -> EventStream:
        pace = _Pace(self._can_pace)
        return EventStream(self._stream(path, body, pace, method), pace)

    async def _stream(
        self, path: str, body: bytes | None, pace: _Pace, method: str = "POST"
    ) -> AsyncGenerator[list[DifyEvent], None]:
        """The events of one streamed call, one list per network read (never empty)."""
        response, chunks, decoder, first, rest = await self._retrying(
            path, lambda: self._open(path, body, method)
        )
        # The breaker hears about this attempt when the stream ends: a Dify that always
        # fails mid-stream must still open it.
        progress = _Progress()
        see = progress.see
        loop = asyncio.get_running_loop()
        next_read = 0.0
        try:
            pending: list[DifyEvent] | None = first
            while pending is not None:
                for i, ev in enumerate(pending):
                    see(ev)
                    if isinstance(ev, TERMINAL):
                        await _close(response)
                        if self._breaker is not None:
                            if isinstance(ev, StreamError) and ev.status >= 500:
                                self._breaker.record_failure()
                            else:
                                self._breaker.record_success()
                        # Events after the terminal one in the same read are not this turn's.
                        yield pending[: i + 1]
                        return
                yield pending
                if rest:
                    pending, rest = self._decode(decoder.feed, progress, rest), b""
                    if pending:
                        continue
                if pace.seconds and pace.engaged:
                    wait = next_read - loop.time()
                    if wait > 0.001:
                        await asyncio.sleep(wait)
                pending = await self._next_events(chunks, decoder, progress, pace)
                next_read = _next_tick(loop.time(), pace.seconds)
            raise self._fail(StreamIncomplete(progress=progress.snapshot()))
        finally:
            # Closed here, not left to the loop's finaliser: an unfinished async generator
            # dropped without ``aclose`` costs a task each and keeps the response alive until
            # that task runs.
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await chunks.aclose()
            await _close(response)

    async def _next_events(
        self,
        chunks: AsyncGenerator[bytes, None],
        decoder: SSEDecoder,
        progress: _Progress,
        pace: _Pace,
    ) -> list[DifyEvent] | None:
        """Wait (at most ``idle`` seconds) for more events; None at EOF with nothing left."""
        while True:
            try:
                async with asyncio.timeout(self._t.idle):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                tail = self._decode(lambda _: decoder.close(), progress, b"")
                return tail or None
            except TimeoutError:
                raise self._fail(DifyTimeout(phase="idle", progress=progress.snapshot())) from None
            except _TRANSPORT_ERRORS as e:
                raise self._fail(
                    StreamIncomplete(
                        f"connection broke mid-stream ({type(e).__name__})",
                        progress=progress.snapshot(),
                    )
                ) from e
            pace.saw(len(chunk))
            events = self._decode(decoder.feed, progress, chunk)
            if events:
                return events

    def _decode(
        self, step: Callable[[bytes], list[DifyEvent]], progress: _Progress, chunk: bytes
    ) -> list[DifyEvent]:
        try:
            return step(chunk)
        except SSEDecodeError as e:
            for ev in e.events:
                progress.see(ev)
            raise self._fail(
                DifyProtocolError(e.message, code=e.code, progress=progress.snapshot())
            ) from e

    async def _open(
        self, path: str, body: bytes | None, method: str = "POST"
    ) -> tuple[httpx.Response, AsyncGenerator[bytes, None], SSEDecoder, list[DifyEvent], bytes]:
        """Send the request and wait for the first event(s); everything here may be retried."""
        # Built directly rather than with ``build_request``, which costs three times as much
        # (URL parsing and header merging on every call); the headers were merged once.
        request = httpx.Request(
            method,
            # Re-attach URLs carry a run id and user: not worth caching.
            self._stream_url(path) if body is not None else httpx.URL(self.base_url + path),
            content=body,
            headers=self._stream_headers if body is not None else self._plain_headers,
            extensions={"timeout": self._stream_timeout_ext},
        )
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self._t.first_event):
                response = await self._http.send(request, stream=True)
                if response.status_code != 200:
                    raise await self._http_error(response)
                ctype = response.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    raise DifyProtocolError(
                        f"expected an event stream, got {ctype.split(';')[0] or 'no content type'}",
                        status=200,
                        code="protocol_error",
                    )
                # aiter_bytes, not aiter_raw: a proxy may gzip the stream (nginx `gzip_types`).
                # Typed by httpx as an iterator; it is an async generator, closed in _stream.
                chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
                decoder = SSEDecoder()
                while True:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        first = decoder.close()
                        if first:
                            break
                        raise StreamIncomplete(
                            "stream ended before any event", progress=StreamProgress()
                        ) from None
                    # Only the first event of a large read: the answer's first words are shown
                    # before the rest of the read is decoded (after a slow start Dify's first
                    # read can hold hundreds of events).
                    cut = _first_event_end(chunk)
                    first = decoder.feed(chunk[:cut])
                    if first:
                        rest = chunk[cut:]
                        break
                    first = decoder.feed(chunk[cut:])
                    if first:
                        rest = b""
                        break
            return response, chunks, decoder, first, rest
        except BaseException as e:
            if response is not None:
                await _close(response)
            if isinstance(e, DifyError):
                raise
            if isinstance(e, TimeoutError):
                raise DifyTimeout(phase="first_event") from None
            if isinstance(e, _TRANSPORT_ERRORS):
                raise _transport_error(e, "first_event") from e
            raise
