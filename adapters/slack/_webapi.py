"""One way to call the Slack Web API: metrics per call, Slack errors mapped onto ours.

Every call of the adapter goes through :class:`SlackApi` so that a ``ratelimited`` answer always
becomes :class:`app.errors.PlatformRateLimited` (the edit scheduler slows down on it) and every
other failure becomes a :class:`SlackCallError` carrying Slack's error code, which the reply handle
inspects (``message_not_found``, ``not_in_channel``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from app.errors import PlatformError, PlatformRateLimited

if TYPE_CHECKING:
    from app.server.metrics import Metrics

log = structlog.get_logger(__name__)

PLATFORM = "slack"
# Slack answers a rate-limited call without Retry-After only in theory; a second is its own advice.
_DEFAULT_RETRY_AFTER = 1.0
_TRANSIENT = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})


class SlackCallError(PlatformError):
    """A Web API call answered ``ok: false`` (``code``: Slack's ``error``) or could not connect."""


def error_code(e: BaseException, default: str = "ratelimited") -> str:
    """Slack's error code of a failed call, for the logs; ``default`` for errors that carry
    none (a rate limit: Slack's code for it is ``ratelimited``)."""
    return e.code if isinstance(e, PlatformError) else default


def make_client(
    *, token: str | None, base_url: str, session: aiohttp.ClientSession | None
) -> AsyncWebClient:
    """An AsyncWebClient on our base URL and shared HTTP session.

    Without a shared session slack_sdk opens a new aiohttp session per call, which costs a TCP/TLS
    handshake and measurable CPU on every edit.
    """
    return AsyncWebClient(token=token, base_url=base_url, session=session, timeout=15)


def _retry_after(err: SlackApiError) -> float:
    headers = getattr(err.response, "headers", None) or {}
    raw: Any = None
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            raw = v[0] if isinstance(v, list | tuple) and v else v
    try:
        return max(0.0, float(raw)) if raw is not None else _DEFAULT_RETRY_AFTER
    except (TypeError, ValueError):
        return _DEFAULT_RETRY_AFTER


class SlackApi:
    """A bot token's view of the Web API with metrics and error mapping."""

    def __init__(self, client: AsyncWebClient, metrics: Metrics | None) -> None:
        self.client = client
        self._metrics = metrics

    @property
    def token(self) -> str | None:
        return self.client.token

    def _count(self, method: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.platform_calls(PLATFORM, method, outcome)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call ``method`` (dotted Slack name) with ``params``; return the response body.

        Raises :class:`PlatformRateLimited` on ``ratelimited`` / HTTP 429 and
        :class:`SlackCallError` on any other failure.
        """
        fn = getattr(self.client, method.replace(".", "_"), None)
        # Drop unset optional params: Slack rejects some explicit nulls (thread_ts: null).
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            if fn is not None:
                resp = await fn(**clean)
            else:
                resp = await self.client.api_call(method, json=clean)
        except SlackApiError as e:
            code = str((e.response.data or {}).get("error", "")) if e.response else ""
            status = getattr(e.response, "status_code", 0)
            if code == "ratelimited" or status == 429:
                self._count(method, "ratelimited")
                if self._metrics is not None:
                    self._metrics.platform_ratelimited(PLATFORM)
                raise PlatformRateLimited(_retry_after(e), method=method) from e
            self._count(method, code or f"http_{status}")
            # Slack's own trouble (5xx, internal_error, fatal_error) passes; worth another try.
            transient = status >= 500 or code in _TRANSIENT
            raise SlackCallError(
                f"Slack {method} failed: {code or status}",
                code=code or f"http_{status}",
                retryable=transient,
            ) from e
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as e:
            self._count(method, "transport")
            raise SlackCallError(
                f"Slack {method} unreachable: {type(e).__name__}", code="transport", retryable=True
            ) from e
        self._count(method, "ok")
        data = resp.data
        return data if isinstance(data, dict) else {}
