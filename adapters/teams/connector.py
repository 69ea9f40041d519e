"""A small async client for the Bot Connector REST API (the calls a reply needs, nothing more).

No retry layer on purpose: a 429 surfaces at once as :class:`~app.errors.PlatformRateLimited` with
the server's ``Retry-After``, so the core's edit scheduler decides when to try again (the Agents
SDK's ``ConnectorClient`` raises a bare ``ClientResponseError``; botbuilder's msrest stack retried
silently). Activities are the SDK's models serialised by ``_sdk.build_activity``; conversation ids
are percent-encoded in the path and never cut (the SDK's client cuts them at 150 characters).
Every failure becomes a typed error the reply handle can act on.
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from adapters.teams.pacer import TenantPacer
from adapters.teams.tokens import TokenSource
from app.errors import PlatformError, PlatformRateLimited
from app.server.metrics import Metrics

log = structlog.get_logger(__name__)

DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 120.0


class StreamRejected(PlatformError):
    """``403 ContentStreamNotAllowed``: the stream is over (user pressed Stop, time or size)."""

    @property
    def cancelled_by_user(self) -> bool:
        return "cancel" in str(self).lower()


class StreamingUnsupported(PlatformError):
    """``405``: streaming is not available in this conversation (not a personal chat)."""


class MessageGone(PlatformError):
    """``404``: the message to edit no longer exists (deleted by someone)."""


@dataclass(frozen=True, slots=True)
class Sent:
    status: int
    id: str | None


class BotConnector:
    """``POST``/``PUT`` activities to a conversation on the activity's ``serviceUrl``."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tokens: TokenSource,
        metrics: Metrics,
        allow_service_url: Callable[[str], bool],
        pacer: TenantPacer | None = None,
        timeout: float = 15.0,
    ) -> None:
        self._pacer = pacer or TenantPacer()
        self._session = session
        self._tokens = tokens
        self._metrics = metrics
        self._allow = allow_service_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def slot(self, tenant: str, *, urgent: bool = True) -> None:
        """Wait for the tenant's request budget ahead of a ``post(..., paced=False)``; lets a
        caller give up cleanly while it waits (nothing has been sent yet)."""
        await self._pacer.wait(tenant, urgent=urgent)

    async def post(
        self,
        service_url: str,
        conversation_id: str,
        activity: dict[str, Any],
        *,
        tenant: str,
        reply_to: str | None = None,
        urgent: bool = True,
        paced: bool = True,
    ) -> Sent:
        """Send an activity (as a reply to ``reply_to`` when given); returns the new id."""
        path = f"v3/conversations/{_q(conversation_id)}/activities"
        if reply_to:
            path += f"/{_q(reply_to)}"
        return await self._call(
            "POST",
            service_url,
            path,
            activity,
            tenant,
            urgent=urgent,
            paced=paced,
            method_name="send",
        )

    async def put(
        self,
        service_url: str,
        conversation_id: str,
        activity_id: str,
        activity: dict[str, Any],
        *,
        tenant: str,
        urgent: bool = False,
    ) -> Sent:
        """Replace a message the bot sent (``update_activity``)."""
        path = f"v3/conversations/{_q(conversation_id)}/activities/{_q(activity_id)}"
        return await self._call(
            "PUT",
            service_url,
            path,
            activity,
            tenant,
            urgent=urgent,
            paced=True,
            method_name="update",
        )

    async def _call(
        self,
        verb: str,
        service_url: str,
        path: str,
        activity: dict[str, Any],
        tenant: str,
        *,
        urgent: bool,
        paced: bool,
        method_name: str,
    ) -> Sent:
        if not self._allow(service_url):
            # Defence in depth: the inbound check already refused it.
            raise PlatformError("refusing to call a serviceUrl that is not allowed", code="url")
        url = service_url.rstrip("/") + "/" + path
        headers = {"Content-Type": "application/json"}
        auth = await self._tokens.header()
        if auth:
            headers["Authorization"] = auth
        if paced:
            await self._pacer.wait(tenant, urgent=urgent)
        started = time.monotonic()
        try:
            async with self._session.request(
                verb, url, json=activity, headers=headers, timeout=self._timeout
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                body = await _body(resp)
        except (aiohttp.ClientError, TimeoutError) as e:
            self._metrics.platform_calls("teams", method_name, "network")
            raise PlatformError(
                f"Bot Connector unreachable ({type(e).__name__})", code="network", retryable=True
            ) from e
        ms = int((time.monotonic() - started) * 1000)
        if 200 <= status < 300:
            self._metrics.platform_calls("teams", method_name, "ok")
            new_id = body.get("id")
            return Sent(status, new_id if isinstance(new_id, str) and new_id else None)
        raw_err = body.get("error")
        err: dict[str, Any] = raw_err if isinstance(raw_err, dict) else {}
        code = str(err.get("code") or body.get("code") or f"http_{status}")
        message = str(err.get("message") or body.get("message") or "")
        log.info("teams.call_failed", verb=verb, status=status, code=code, ms=ms)
        if status == 429:
            self._metrics.platform_calls("teams", method_name, "ratelimited")
            self._metrics.platform_ratelimited("teams")
            raise PlatformRateLimited(_retry_after(retry_after), method=method_name)
        self._metrics.platform_calls("teams", method_name, f"http_{status}")
        if status == 403 and code == "ContentStreamNotAllowed":
            raise StreamRejected(message or code, code=code)
        if status == 405:
            raise StreamingUnsupported(message or "streaming not supported here", code=code)
        if status == 404:
            raise MessageGone(message or "activity not found", code=code)
        if status == 413:
            raise PlatformError("message too large for Teams", code="MessageSizeTooBig")
        raise PlatformError(
            f"Bot Connector answered {status} ({code})",
            code=code,
            retryable=status in (412, 500, 502, 503, 504),
        )


@functools.lru_cache(maxsize=4096)
def _q(part: str) -> str:
    # Conversation ids hold ':', ';', '@' and '=': encode everything, as botbuilder's msrest
    # did (the Agents SDK's client sends them raw). Cached: an answer's calls share its ids.
    return quote(part, safe="")


def _retry_after(raw: str | None) -> float:
    if not raw:
        return DEFAULT_RETRY_AFTER
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


async def _body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await resp.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
