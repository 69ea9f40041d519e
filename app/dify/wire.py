"""The wire rules of Dify calls: timeouts, retry policy, request checks and encoding, how
transport errors map to :mod:`app.dify.errors`, and the shared ``httpx.AsyncClient``."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import aiohttp
import httpx
import structlog

from app.dify.errors import (
    DifyConnectionError,
    DifyError,
    DifyProtocolError,
    DifyServerError,
    DifyStreamError,
    DifyTimeout,
    DifyTooManyRequests,
    StreamIncomplete,
)

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
