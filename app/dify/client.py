"""Async client for Dify's Service API (``/v1``), streaming first.

Rules the stream methods follow (``chat_stream``, ``completion_stream``, ``workflow_stream``):

* They are async generators of :mod:`app.dify.events`. The generator ends right after the first
  terminal event (``MessageEnd``, ``StreamError``, ``WorkflowFinished``, ``WorkflowPaused``) and
  closes the HTTP response itself, because some Dify versions keep it open.
* Terminal events are *yielded*, never raised: a ``StreamError`` is the last event the caller
  sees (``event.to_exception()`` gives the matching ``DifyStreamError`` with its
  ``user_message``). Exceptions are raised only for HTTP, transport and protocol problems, and
  :class:`StreamIncomplete` when the stream ends without a terminal event.
* Retries (exponential backoff, full jitter; ``Retry-After`` honoured) happen only before the
  first event is yielded: connection errors, connect/first-event timeouts, 429
  ``too_many_requests`` and 5xx. Never after anything was yielded, never for other 4xx or for
  ``rate_limit_error`` (plan quota).
* Timeouts: ``connect``; ``first_event`` (request sent -> first SSE event of any kind, pings
  included); ``idle`` (the longest silence between two events).
* The breaker is checked before every attempt and told about every attempt's outcome: HTTP
  failures at once, a started stream when it ends (terminal event, or the error that broke it).
  A stream the caller abandons early reports nothing.

Close a stream you stop reading early with ``contextlib.aclosing`` so the connection is
released at once rather than by the garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar, cast
from urllib.parse import urlencode

import aiohttp
import httpx
import structlog

from app.dify.breaker import CircuitBreaker, State
from app.dify.errors import (
    ConversationNotFound,
    DifyConnectionError,
    DifyError,
    DifyProtocolError,
    DifyServerError,
    DifyStreamError,
    DifyTimeout,
    DifyTooManyRequests,
    StreamIncomplete,
    StreamProgress,
    error_from_response,
)
from app.dify.events import (
    TERMINAL,
    DifyEvent,
    StreamError,
    TextDelta,
    TextReplace,
)
from app.dify.sse import SSEDecodeError, SSEDecoder

T = TypeVar("T")

log = structlog.get_logger("app.dify")

USER_AGENT = "dify-bridge/0.1"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class DifyTimeouts:
    """Seconds. ``request`` bounds whole non-streaming calls (uploads, feedback, ...)."""

    connect: float = 5.0
    first_event: float = 60.0
    idle: float = 45.0
    request: float = 30.0


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One answer as ``GET /messages`` shows it: ``status`` is ``normal`` or ``error``, and
    ``error`` says what failed."""

    answer: str
    status: str
    error: str | None = None
    # Dify's token count of the message (``total_tokens``, else ``message_tokens`` +
    # ``answer_tokens``; newer Dify versions list them), 0 when not given.
    total_tokens: int = 0

    @property
    def ended_normally(self) -> bool:
        """Dify holds a normal, error-free, non-empty answer. Dify writes a message's answer
        when its generation ends (also on a stop), so this is Dify's finished text, unless a
        generation that is still running already shows what it has so far."""
        return self.status == "normal" and self.error is None and bool(self.answer)

    def completes(self, seen: str) -> bool:
        """Whether this is the whole answer of a stream that broke after ``seen`` arrived: it
        ended normally and holds more than had arrived. A copy no longer than what arrived may
        be a generation still under way; it is not taken for the whole answer."""
        return self.ended_normally and len(self.answer) > len(seen)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries before the first event. A ``Retry-After`` above ``max_retry_after`` is not waited."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**attempt)]."""
        cap = min(self.max_delay, self.base_delay * (2 ** min(attempt, 30)))
        return rng.uniform(0.0, cap)


def _check_id(name: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(f"{name} must be a Dify id (letters, digits, - _ . :), got {value!r:.80}")
    return value


_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.~-]{1,512}$")


def _check_token(value: str) -> str:
    """A form token goes into the URL path: URL-safe characters only (no / ? # %)."""
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        raise ValueError("form_token must be a URL-safe token")
    return value


def _encode(body: dict[str, Any]) -> bytes:
    """The request body, encoded once (retries resend the same bytes)."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"inputs and files must be JSON-serialisable: {e}") from None


def _check_user(user: str) -> str:
    if not isinstance(user, str) or not user.strip() or len(user) > 255:
        raise ValueError("user must be a non-empty string of at most 255 characters")
    return user


def counts_as_failure(err: DifyError) -> bool:
    """Whether ``err`` says Dify is unwell (feeds the circuit breaker)."""
    if isinstance(err, DifyStreamError):
        return (err.status or 0) >= 500
    return isinstance(
        err,
        DifyServerError
        | DifyTimeout
        | DifyConnectionError
        | DifyProtocolError
        | DifyTooManyRequests
        | StreamIncomplete,
    )


def _transport_error(
    e: BaseException, phase: Literal["connect", "first_event", "idle", "request"]
) -> DifyError:
    """Map an httpx/aiohttp transport exception to our tree (never includes request data)."""
    cause = e.__cause__
    if isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout):
        # httpx-aiohttp maps every aiohttp ClientConnectionError to ConnectTimeout; only a real
        # timeout underneath is one.
        if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError):
            return DifyConnectionError(f"connection failed ({type(cause).__name__})")
        return DifyTimeout(phase="connect")
    if isinstance(e, httpx.TimeoutException):
        return DifyTimeout(phase=phase)
    return DifyConnectionError(f"connection failed ({type(e).__name__})")


_TRANSPORT_ERRORS = (httpx.TransportError, aiohttp.ClientError, OSError)


_CLOSED_STREAM = httpx.ByteStream(b"")


async def _close(response: httpx.Response) -> None:
    """Release the connection; a failure to close cleanly must not hide the real outcome."""
    try:
        await response.aclose()
    except _TRANSPORT_ERRORS:
        log.debug("dify_close_failed")
    _unbind(response)


def _unbind(response: httpx.Response) -> None:
    """Break the reference cycle httpx builds between a response and its stream.

    Only the garbage collector frees such a cycle, so everything a request touched (aiohttp
    response, headers, buffers: 30+ objects per request) piled up until a collection walked
    it all, which at 1,000 answers meant pauses of 50-200 ms. Call it once the response is
    closed or fully read; it then needs no stream (httpx's own ``Request.aread`` swaps in a
    ``ByteStream`` the same way).
    """
    response.stream = _CLOSED_STREAM


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
        same text into the same edits for a fraction of the CPU (the events wait in the
        socket buffer meanwhile); the end of the answer is seen at most ``seconds`` later.
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


class DifyClient:
    """One Dify app (base URL + API key) over a shared ``httpx.AsyncClient``.

    The client never logs queries, answers or the key. Build it through
    :class:`DifyClientPool` in the service; construct it directly in tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        http: httpx.AsyncClient,
        timeouts: DifyTimeouts = DifyTimeouts(),
        retry: RetryPolicy = RetryPolicy(),
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        pace_reads: bool = False,
    ) -> None:
        """``pace_reads``: let callers pace their streams (:meth:`EventStream.pace_reads`);
        only for an ``http`` client on the aiohttp transport."""
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if (
            not isinstance(api_key, str)
            or not api_key.strip()
            or any(c in api_key for c in "\r\n ")
        ):
            raise ValueError("api_key must be a non-empty token without spaces")
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._t = timeouts
        self._retry = retry
        self._breaker = breaker
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._stream_timeout = httpx.Timeout(
            connect=timeouts.connect, read=None, write=timeouts.connect, pool=timeouts.connect
        )
        self._request_timeout = httpx.Timeout(
            connect=timeouts.connect,
            read=timeouts.request,
            write=timeouts.request,
            pool=timeouts.connect,
        )
        self._stream_timeout_ext = self._stream_timeout.as_dict()
        # The client's defaults (Accept, Accept-Encoding, ...) under ours, as build_request would.
        self._stream_headers = httpx.Headers(http.headers)
        self._stream_headers.update(self._json_headers)
        self._plain_headers = httpx.Headers(http.headers)
        self._plain_headers.update(self._headers)
        self._stream_urls: dict[str, httpx.URL] = {}
        self._can_pace = pace_reads

    def _stream_url(self, path: str) -> httpx.URL:
        url = self._stream_urls.get(path)
        if url is None:
            url = self._stream_urls[path] = httpx.URL(self.base_url + path)
        return url

    # ----------------------------------------------------------------- streaming

    def chat_stream(
        self,
        *,
        query: str,
        user: str,
        conversation_id: str | None,
        inputs: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]] = (),
        auto_generate_name: bool = False,
    ) -> EventStream:
        """Stream a chat / agent-chat / advanced-chat answer (``POST /chat-messages``)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if conversation_id is not None:
            _check_id("conversation_id", conversation_id)
        body = {
            "query": query,
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "streaming",
            "conversation_id": conversation_id or "",
            "files": [dict(f) for f in files],
            "auto_generate_name": bool(auto_generate_name),
        }
        return self._event_stream("/chat-messages", _encode(body))

    def completion_stream(
        self,
        *,
        query: str,
        user: str,
        inputs: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]] = (),
    ) -> EventStream:
        """Stream a text-generator answer (``POST /completion-messages``)."""
        if not isinstance(query, str):
            raise ValueError("query must be a string")
        body = {
            "query": query,
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "streaming",
            "files": [dict(f) for f in files],
        }
        return self._event_stream("/completion-messages", _encode(body))

    def workflow_stream(
        self,
        *,
        user: str,
        inputs: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]] = (),
    ) -> EventStream:
        """Stream a workflow run (``POST /workflows/run``); text arrives as ``text_chunk``."""
        body = {
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "streaming",
            "files": [dict(f) for f in files],
        }
        return self._event_stream("/workflows/run", _encode(body))

    def run_events(self, workflow_run_id: str, *, user: str) -> EventStream:
        """Re-attach to a chatflow/workflow run (``GET /workflow/{id}/events``), e.g. after a
        Human Input form was submitted. ``user`` must be the one that started the run.

        The stream ends at the run's next terminal event (``workflow_paused`` again, or
        ``message_end`` / ``workflow_finished``). A run that already finished answers one
        ``workflow_finished`` and nothing else: Dify relays live events only (pub/sub), so
        whoever attaches late reads the answer from the stored messages instead.
        """
        _check_id("workflow_run_id", workflow_run_id)
        query = urlencode({"user": _check_user(user)})
        return self._event_stream(f"/workflow/{workflow_run_id}/events?{query}", None, "GET")

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
                next_read = loop.time() + pace.seconds
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

    def _fail(self, err: DifyError) -> DifyError:
        if self._breaker is not None and counts_as_failure(err):
            self._breaker.record_failure()
        return err

    async def _open(
        self, path: str, body: bytes | None, method: str = "POST"
    ) -> tuple[
        httpx.Response, AsyncGenerator[bytes, None], SSEDecoder, list[DifyEvent], bytes
    ]:
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

    # ------------------------------------------------------------ plain requests

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        budget: float | None = None,
    ) -> Any:
        """One JSON call with retries; returns the decoded body (None for 204)."""
        result = await self._retrying(
            path,
            lambda: self._request_once(
                method,
                path,
                json=json,
                params=params,
                data=data,
                files=files,
                budget=budget or self._t.request,
            ),
        )
        if self._breaker is not None:
            self._breaker.record_success()
        return result

    async def _retrying(self, path: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` until it succeeds or its error is not worth retrying (see _retry_delay).

        Only used before anything reached the caller, so a retry never repeats shown text.
        """
        attempt = 0
        while True:
            self._check_breaker()
            try:
                return await op()
            except DifyError as err:
                self._record(err)
                delay = self._retry_delay(err, attempt)
                if delay is None:
                    raise
                attempt += 1
                log.warning(
                    "dify_retry",
                    path=path,
                    attempt=attempt,
                    delay=round(delay, 3),
                    status=err.status,
                    code=err.code,
                )
                await self._sleep(delay)

    async def _request_once(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        budget: float,
    ) -> Any:
        timeout = (
            self._request_timeout
            if budget == self._t.request
            else httpx.Timeout(budget, connect=self._t.connect)
        )
        request: httpx.Request
        if files is None and data is None:
            # Plain GET/JSON calls are built directly: ``build_request`` parses the URL and
            # merges headers on every call, which costs more than the rest of a small call.
            url = self.base_url + path
            if params:
                url += "?" + urlencode(params)
            body = b"" if json is None else _encode(json)
            request = httpx.Request(
                method,
                url,
                content=body or None,
                headers=self._stream_headers if json is not None else self._plain_headers,
                extensions={"timeout": timeout.as_dict()},
            )
        else:
            request = self._http.build_request(
                method, self.base_url + path, params=params, data=data, files=files,
                headers=self._headers, timeout=timeout,
            )
        try:
            async with asyncio.timeout(budget):
                response = await self._http.send(request)
        except TimeoutError:
            raise DifyTimeout(phase="request") from None
        except _TRANSPORT_ERRORS as e:
            raise _transport_error(e, "request") from e
        _unbind(response)  # read in full by ``send``
        if not 200 <= response.status_code < 300:
            raise error_from_response(
                response.status_code,
                response.content[:_MAX_ERROR_BODY],
                response.headers.get("retry-after"),
            )
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise DifyProtocolError(
                "response body is not JSON", status=response.status_code, code="protocol_error"
            ) from None

    async def _http_error(self, response: httpx.Response) -> DifyError:
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except _TRANSPORT_ERRORS:
            pass  # the status alone classifies the error
        return error_from_response(
            response.status_code, bytes(body), response.headers.get("retry-after")
        )

    # --------------------------------------------------------------- policy

    def _check_breaker(self) -> None:
        if self._breaker is not None:
            self._breaker.check()

    def _record(self, err: DifyError) -> None:
        if self._breaker is None:
            return
        if counts_as_failure(err):
            self._breaker.record_failure()
        elif err.status is not None:
            self._breaker.record_success()

    def _retry_delay(self, err: DifyError, attempt: int) -> float | None:
        if not err.retryable or attempt >= self._retry.max_retries:
            return None
        if err.retry_after is not None:
            if err.retry_after > self._retry.max_retry_after:
                return None
            return err.retry_after
        return self._retry.backoff(attempt, self._rng)

    # ------------------------------------------------------------- endpoints

    async def chat_blocking(
        self, *, query: str, user: str, conversation_id: str | None, inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Whole answer in one JSON body (not for agent-chat apps, which only stream)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if conversation_id is not None:
            _check_id("conversation_id", conversation_id)
        body = {
            "query": query,
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "blocking",
            "conversation_id": conversation_id or "",
            "auto_generate_name": False,
        }
        # The whole answer is generated before Dify replies: allow the first-event budget.
        wait = max(self._t.request, self._t.first_event)
        return self._as_dict(await self._request("POST", "/chat-messages", json=body, budget=wait))

    async def stop(self, task_id: str, *, user: str, mode: str = "chat") -> None:
        """Ask Dify to stop a running answer; the stream then ends with its partial text."""
        _check_id("task_id", task_id)
        if mode == "completion":
            path = f"/completion-messages/{task_id}/stop"
        elif mode == "workflow":
            path = f"/workflows/tasks/{task_id}/stop"
        elif mode in ("chat", "agent-chat", "advanced-chat"):
            path = f"/chat-messages/{task_id}/stop"
        else:
            raise ValueError(f"unknown app mode {mode!r}")
        await self._request("POST", path, json={"user": _check_user(user)})

    async def feedback(
        self,
        message_id: str,
        *,
        user: str,
        rating: Literal["like", "dislike"] | None,
        content: str | None = None,
    ) -> None:
        """Rate an answer; ``rating=None`` withdraws an earlier rating."""
        _check_id("message_id", message_id)
        if rating not in ("like", "dislike", None):
            raise ValueError("rating must be 'like', 'dislike' or None")
        body: dict[str, Any] = {"rating": rating, "user": _check_user(user)}
        if content is not None:
            body["content"] = content
        await self._request("POST", f"/messages/{message_id}/feedbacks", json=body)

    async def suggested(self, message_id: str, *, user: str) -> list[str]:
        """Follow-up questions for an answer ([] when the app has them switched off)."""
        _check_id("message_id", message_id)
        try:
            obj = await self._request(
                "GET", f"/messages/{message_id}/suggested", params={"user": _check_user(user)}
            )
        except DifyError as e:
            if e.status == 400 and e.code == "bad_request":
                return []  # "Suggested Questions Is Disabled."
            raise
        data = self._as_dict(obj).get("data")
        return [q for q in data if isinstance(q, str)] if isinstance(data, list) else []

    async def submit_form(
        self, form_token: str, *, inputs: Mapping[str, Any], action: str, user: str
    ) -> None:
        """Answer a paused Human Input form (``POST /form/human_input/{token}``); Dify then
        resumes the run: follow it with :meth:`run_events`. Every input of the form must be a
        key of ``inputs`` (send ``""`` for an empty paragraph)."""
        _check_token(form_token)
        if not isinstance(action, str) or not action:
            raise ValueError("action must be the id of one of the form's actions")
        body = {"inputs": dict(inputs), "action": action, "user": _check_user(user)}
        # Not retried: a submit that reached Dify but whose answer was lost must not be sent
        # again (the second would meet "already submitted" and hide the first one's success).
        await self._request_once(
            "POST", f"/form/human_input/{form_token}", json=body, params=None, data=None,
            files=None, budget=self._t.request,
        )

    async def parameters(self) -> dict[str, Any]:
        """The app's input form, file upload settings and feature switches."""
        return self._as_dict(await self._request("GET", "/parameters"))

    async def info(self) -> dict[str, Any]:
        """Name and ``mode`` of the app."""
        return self._as_dict(await self._request("GET", "/info"))

    async def upload_file(
        self, *, user: str, filename: str, data: bytes, mime_type: str
    ) -> dict[str, Any]:
        """Upload for a later ``files=[{"transfer_method": "local_file", ...}]`` (same ``user``)."""
        self._check_file(filename, data, mime_type)
        obj = await self._request(
            "POST",
            "/files/upload",
            data={"user": _check_user(user)},
            files={"file": (filename, data, mime_type)},
        )
        return self._as_dict(obj)

    async def audio_to_text(self, *, user: str, filename: str, data: bytes, mime_type: str) -> str:
        """Transcribe a voice message (the app must have speech-to-text on)."""
        self._check_file(filename, data, mime_type)
        obj = await self._request(
            "POST",
            "/audio-to-text",
            data={"user": _check_user(user)},
            files={"file": (filename, data, mime_type)},
        )
        text = self._as_dict(obj).get("text")
        if not isinstance(text, str):
            raise DifyProtocolError("audio-to-text answer has no text", code="protocol_error")
        return text

    async def messages(
        self, *, conversation_id: str, user: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Messages of one conversation (as Dify orders them)."""
        _check_id("conversation_id", conversation_id)
        obj = await self._request(
            "GET",
            "/messages",
            params={
                "conversation_id": conversation_id,
                "user": _check_user(user),
                "limit": max(1, min(100, int(limit))),
            },
        )
        return self._data_list(obj)

    async def conversations(self, *, user: str, limit: int = 20) -> list[dict[str, Any]]:
        """The ``user``'s conversations, most recently updated first."""
        obj = await self._request(
            "GET",
            "/conversations",
            params={"user": _check_user(user), "limit": max(1, min(100, int(limit)))},
        )
        return self._data_list(obj)

    async def delete_conversation(self, conversation_id: str, *, user: str) -> None:
        """Delete a conversation (Dify answers 204)."""
        _check_id("conversation_id", conversation_id)
        await self._request(
            "DELETE", f"/conversations/{conversation_id}", json={"user": _check_user(user)}
        )

    async def stored_message(
        self, *, conversation_id: str, message_id: str, user: str
    ) -> StoredMessage | None:
        """After a broken stream: what Dify has stored of the answer (``GET /messages``), or
        None when the conversation or the message is not there."""
        _check_id("message_id", message_id)
        try:
            items = await self.messages(conversation_id=conversation_id, user=user, limit=100)
        except ConversationNotFound:
            return None
        for item in items:
            if item.get("id") == message_id:
                answer, status, error = item.get("answer"), item.get("status"), item.get("error")
                return StoredMessage(
                    answer=answer if isinstance(answer, str) else "",
                    status=status if isinstance(status, str) else "normal",
                    error=error if isinstance(error, str) and error else None,
                    total_tokens=_tokens(item),
                )
        return None

    async def recover_answer(
        self, *, conversation_id: str, message_id: str, user: str
    ) -> str | None:
        """After a broken stream: the stored answer if Dify finished it normally, else None."""
        stored = await self.stored_message(
            conversation_id=conversation_id, message_id=message_id, user=user
        )
        return stored.answer if stored is not None and stored.ended_normally else None

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _check_file(filename: str, data: bytes, mime_type: str) -> None:
        if not isinstance(filename, str) or not filename or "/" in filename or "\\" in filename:
            raise ValueError("filename must be a plain file name (no slashes)")
        if not isinstance(data, bytes | bytearray) or not data:
            raise ValueError("file data must be non-empty bytes")
        if not isinstance(mime_type, str) or "/" not in mime_type:
            raise ValueError("mime_type must look like type/subtype")

    @staticmethod
    def _as_dict(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise DifyProtocolError("expected a JSON object from Dify", code="protocol_error")
        return obj

    def _data_list(self, obj: Any) -> list[dict[str, Any]]:
        data = self._as_dict(obj).get("data")
        if not isinstance(data, list):
            raise DifyProtocolError("expected a 'data' list from Dify", code="protocol_error")
        return [d for d in data if isinstance(d, dict)]


def _tokens(item: Mapping[str, Any]) -> int:
    """A stored message's token count (0 when Dify does not list one)."""

    def count(name: str) -> int:
        v = item.get(name)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    return count("total_tokens") or count("message_tokens") + count("answer_tokens")


def _never(msg: str) -> NoReturn:  # pragma: no cover - exhaustiveness helper
    raise AssertionError(msg)


Transport = Literal["aiohttp", "httpx"]


def make_http_client(
    transport: Transport = "aiohttp", *, max_connections: int = 4096
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over aiohttp (httpx-aiohttp, default: less CPU) or httpx's own."""
    limits = httpx.Limits(
        # Every streaming answer holds a connection for its whole length: the cap must sit well
        # above the answers in flight (None would mean aiohttp's default of 100).
        max_connections=max_connections,
        max_keepalive_connections=256,
        keepalive_expiry=30.0,
    )
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), limits=limits)
    if transport == "httpx":
        return httpx.AsyncClient(limits=limits)
    _never(f"unknown transport {transport!r}")


class DifyClientPool:
    """One ``httpx.AsyncClient`` per base URL; one client and breaker per (base URL, key)."""

    def __init__(
        self,
        *,
        transport: Transport = "aiohttp",
        timeouts: DifyTimeouts = DifyTimeouts(),
        retry: RetryPolicy = RetryPolicy(),
        breaker_failures: int = 5,
        breaker_reset_seconds: float = 30.0,
        on_breaker_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        """``on_breaker_change(base_url, before, after)`` is called on every breaker transition
        (for metrics); transitions are also logged as ``dify_breaker``."""
        if transport not in ("aiohttp", "httpx"):
            raise ValueError("transport must be 'aiohttp' or 'httpx'")
        self.transport: Transport = transport
        self._timeouts = timeouts
        self._retry = retry
        self._breaker_failures = breaker_failures
        self._breaker_reset = breaker_reset_seconds
        self._http: dict[str, httpx.AsyncClient] = {}
        self._clients: dict[tuple[str, str], DifyClient] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._on_breaker_change = on_breaker_change

    @staticmethod
    def _key(base_url: str, api_key: str) -> tuple[str, str]:
        # The dict key never holds the API key itself.
        return base_url.rstrip("/"), hashlib.sha256(api_key.encode()).hexdigest()

    def breaker(self, base_url: str, api_key: str) -> CircuitBreaker:
        """The breaker shared by every call to this app."""
        k = self._key(base_url, api_key)
        b = self._breakers.get(k)
        if b is None:
            url = k[0]

            def changed(before: State, after: State) -> None:
                log.warning("dify_breaker", base_url=url, before=before, after=after)
                if self._on_breaker_change is not None:
                    self._on_breaker_change(url, before, after)

            b = CircuitBreaker(
                failures=self._breaker_failures,
                reset_seconds=self._breaker_reset,
                on_change=changed,
            )
            self._breakers[k] = b
        return b

    def client(self, base_url: str, api_key: str) -> DifyClient:
        """A (cached) client for one app."""
        k = self._key(base_url, api_key)
        c = self._clients.get(k)
        if c is None:
            http = self._http.get(k[0])
            if http is None:
                http = make_http_client(self.transport)
                self._http[k[0]] = http
            c = DifyClient(
                k[0],
                api_key,
                http=http,
                timeouts=self._timeouts,
                retry=self._retry,
                breaker=self.breaker(base_url, api_key),
                pace_reads=self.transport == "aiohttp",
            )
            self._clients[k] = c
        return c

    async def aclose(self) -> None:
        """Close every HTTP client (connections, aiohttp sessions)."""
        clients, self._http = list(self._http.values()), {}
        self._clients.clear()
        for http in clients:
            await http.aclose()


__all__ = [
    "DifyClient",
    "DifyClientPool",
    "DifyTimeouts",
    "EventStream",
    "RetryPolicy",
    "StoredMessage",
    "Transport",
    "counts_as_failure",
    "make_http_client",
]
