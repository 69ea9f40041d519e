"""Errors raised by the Dify client.

::

    DifyError
    ├── DifyHTTPError               non-200 answer, with Dify's {"code","message","status"} or not
    │   ├── ConversationNotFound    404 not_found "Conversation Not Exists." (gone, other user)
    │   ├── DifyAuthError           401/403 (bad key, app disabled)
    │   ├── DifyBadRequest          other 4xx: invalid_param, not_chat_app, provider_*, ...
    │   ├── DifyTooManyRequests     429 too_many_requests (retryable, honours Retry-After)
    │   ├── DifyQuotaExceeded       429 rate_limit_error (plan quota: not retryable)
    │   └── DifyServerError         5xx (retryable)
    ├── DifyStreamError             an ``error`` event mid-stream (see StreamError.to_exception)
    ├── DifyProtocolError           garbage, HTML, non-SSE body, undecodable JSON
    ├── DifyTimeout                 .phase in {"connect", "first_event", "idle", "request"}
    ├── DifyConnectionError         could not connect, or the connection broke
    ├── StreamIncomplete            EOF with no terminal event
    └── CircuitOpen                 the app's breaker is open

Every error has ``status`` (int | None), ``code`` (str), ``message`` (Dify's text, never the
user's), ``retryable``, ``retry_after`` (seconds or None) and ``user_message`` (plain words for the
person in the chat). Errors raised after the stream produced events also carry what was seen so
far in ``progress`` (ids and partial text) so the caller can recover the answer with
``DifyClient.recover_answer``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

from app import texts


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """What a stream had delivered when it broke off."""

    conversation_id: str | None = None
    message_id: str | None = None
    task_id: str | None = None
    workflow_run_id: str | None = None
    partial_text: str = ""


class DifyError(Exception):
    """Base of every Dify client error."""

    default_user_message: ClassVar[str] = texts.DIFY_UNAVAILABLE
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        code: str = "",
        retryable: bool | None = None,
        retry_after: float | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.progress = progress
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [p for p in (str(self.status) if self.status else "", self.code) if p]
        head = " ".join(parts)
        return f"{head}: {self.message}" if head and self.message else head or self.message

    @property
    def user_message(self) -> str:
        """Text for the person in the chat: no codes, no Dify internals."""
        return self.default_user_message

    # Shortcuts so callers need not check ``progress`` for None.
    @property
    def conversation_id(self) -> str | None:
        return self.progress.conversation_id if self.progress else None

    @property
    def message_id(self) -> str | None:
        return self.progress.message_id if self.progress else None

    @property
    def task_id(self) -> str | None:
        return self.progress.task_id if self.progress else None

    @property
    def partial_text(self) -> str:
        return self.progress.partial_text if self.progress else ""


class DifyHTTPError(DifyError):
    """Dify (or a proxy in front of it) answered with a non-success status."""

    default_user_message = texts.DIFY_REFUSED


class ConversationNotFound(DifyHTTPError):
    """The stored conversation is gone or belongs to another ``user``: start a new one."""

    default_user_message = texts.DIFY_CONVERSATION_GONE


class DifyAuthError(DifyHTTPError):
    """The API key was refused or the app's API is disabled: an admin must fix the config."""

    default_user_message = texts.DIFY_AUTH


class DifyBadRequest(DifyHTTPError):
    """Dify rejected the request (validation, wrong app mode, model provider problems)."""

    @property
    def user_message(self) -> str:
        code = self.code
        if code.startswith("provider_") or code == "model_currently_not_support":
            return texts.DIFY_MODEL_UNAVAILABLE
        if code in ("not_chat_app", "not_workflow_app", "app_unavailable"):
            return texts.DIFY_WRONG_APP_KIND
        if code == "completion_request_error":
            return texts.DIFY_MODEL_FAILED
        if code == "invalid_param":
            return texts.DIFY_INVALID_INPUT
        if code in ("file_too_large", "audio_too_large"):
            return texts.DIFY_FILE_TOO_LARGE
        if code in ("unsupported_file_type", "unsupported_audio_type"):
            return texts.DIFY_FILE_TYPE
        return self.default_user_message


class DifyTooManyRequests(DifyHTTPError):
    """Dify's per-app concurrency limit: retry after ``retry_after`` seconds."""

    default_retryable = True
    default_user_message = texts.DIFY_BUSY


class DifyQuotaExceeded(DifyHTTPError):
    """The plan's quota is used up; retrying will not help until it resets."""

    default_user_message = texts.DIFY_QUOTA


class DifyServerError(DifyHTTPError):
    """5xx from Dify or a proxy (502/503/504 pages)."""

    default_retryable = True
    default_user_message = texts.DIFY_SERVER


class DifyStreamError(DifyError):
    """An ``error`` event arrived mid-stream (the client yields it as ``StreamError``)."""

    @property
    def user_message(self) -> str:
        if self.code.startswith("provider_") or self.code == "model_currently_not_support":
            return texts.DIFY_MODEL_UNAVAILABLE
        if self.code == "completion_request_error":
            return texts.DIFY_MODEL_FAILED
        return texts.DIFY_STREAM_ERROR


class DifyProtocolError(DifyError):
    """The answer was not what Dify sends (HTML page, broken JSON, not an event stream)."""

    default_user_message = texts.DIFY_UNREADABLE


TimeoutPhase = Literal["connect", "first_event", "idle", "request", "first_content", "answer"]
# The bridge's own bounds on one answer (app/pipeline/answer_deadline.py): Dify's task is
# stopped then.
_STOPPED_PHASES = frozenset({"first_content", "answer"})


class DifyTimeout(DifyError):
    """No connection, no first event, too long a silence between events, or (phases
    ``first_content`` and ``answer``) an answer that outran the bridge's own deadlines."""

    default_retryable = True
    default_user_message = texts.DIFY_TIMEOUT

    def __init__(
        self,
        message: str = "",
        *,
        phase: TimeoutPhase,
        progress: StreamProgress | None = None,
    ) -> None:
        self.phase = phase
        super().__init__(
            message or f"timed out ({phase})",
            code=f"timeout_{phase}",
            retryable=phase not in ("idle", *_STOPPED_PHASES),
            progress=progress,
        )

    @property
    def user_message(self) -> str:
        if self.phase == "first_content":
            return texts.DIFY_NO_START
        if self.phase == "answer":
            return texts.DIFY_TOO_LONG
        return self.default_user_message


class DifyConnectionError(DifyError):
    """The connection could not be opened or broke before an answer started."""

    default_retryable = True
    default_user_message = texts.DIFY_UNREACHABLE


class StreamIncomplete(DifyError):
    """The stream ended (EOF or broken connection) without a terminal event.

    Dify usually finishes and stores the answer anyway: use ``message_id`` and
    ``conversation_id`` with ``DifyClient.recover_answer``.
    """

    default_user_message = texts.DIFY_CUT_OFF

    def __init__(self, message: str = "", *, progress: StreamProgress) -> None:
        super().__init__(
            message or "stream ended without a terminal event",
            code="stream_incomplete",
            progress=progress,
        )


class CircuitOpen(DifyError):
    """Too many recent failures for this app: calls fail fast until the breaker half-opens."""

    default_user_message = texts.DIFY_UNAVAILABLE

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(
            message or "circuit breaker is open", code="circuit_open", retry_after=retry_after
        )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _error_body(body: bytes) -> tuple[str, str] | None:
    """``(code, message)`` from Dify's JSON error envelope, or None for any other body."""
    try:
        obj: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    code = obj.get("code")
    message = obj.get("message")
    if not isinstance(code, str):
        return None
    return code, message if isinstance(message, str) else ""


def error_from_response(
    status: int, body: bytes, retry_after_header: str | None = None
) -> DifyHTTPError:
    """Map a non-success HTTP answer to the right :class:`DifyHTTPError` subclass."""
    parsed = _error_body(body[:65536])
    if parsed is None:
        code = f"http_{status}"
        # Proxies answer with HTML; never echo it (it can be large) beyond a short hint.
        message = body[:120].decode("utf-8", "replace").strip().replace("\n", " ")
    else:
        code, message = parsed
    retry_after = parse_retry_after(retry_after_header)
    kw: dict[str, Any] = {"status": status, "code": code, "retry_after": retry_after}
    if status == 404 and code == "not_found" and "onversation" in message:
        return ConversationNotFound(message, **kw)
    if status in (401, 403):
        return DifyAuthError(message, **kw)
    if status == 429:
        if code == "rate_limit_error":
            return DifyQuotaExceeded(message, **kw)
        return DifyTooManyRequests(message, **kw)
    if status >= 500:
        return DifyServerError(message, **kw)
    if 400 <= status < 500:
        return DifyBadRequest(message, **kw)
    # 1xx/3xx: Dify never sends them to API clients; a proxy is misconfigured.
    return DifyHTTPError(message or f"unexpected HTTP status {status}", **kw)


__all__ = [
    "CircuitOpen",
    "ConversationNotFound",
    "DifyAuthError",
    "DifyBadRequest",
    "DifyConnectionError",
    "DifyError",
    "DifyHTTPError",
    "DifyProtocolError",
    "DifyQuotaExceeded",
    "DifyServerError",
    "DifyStreamError",
    "DifyTimeout",
    "DifyTooManyRequests",
    "StreamIncomplete",
    "StreamProgress",
    "error_from_response",
    "parse_retry_after",
]
