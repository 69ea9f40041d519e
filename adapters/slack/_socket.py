"""Socket Mode: one WebSocket to Slack, opened and kept open in the background.

slack_sdk's own client retries a failed connect forever inside ``connect()`` (a traceback every few
seconds) and so blocks whoever awaits it; the service could then not stop. Here the connection is
a task of its own: each failed attempt is one warning line naming the setting and the fix, the
next attempt waits with backoff, ``/readyz`` says the connection is down until it is up, and
cancelling the task ends it at once in every state. The envelopes themselves are slack_sdk's
``SocketModeRequest`` and are dispatched through bolt exactly as bolt's own handler does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app
from slack_sdk.proxy_env_variable_loader import load_http_proxy_from_env
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from adapters.slack._webapi import SlackApi, SlackCallError, make_client
from app.errors import PlatformRateLimited
from app.server.health import Backoff, Health
from app.server.tasks import spawn

if TYPE_CHECKING:
    from slack_bolt.app.async_app import AsyncApp

log = structlog.get_logger(__name__)

COMPONENT = "slack socket mode"
CONNECT_TIMEOUT = 10.0
# aiohttp pings at this interval and drops the connection when a pong is late: a silent
# network failure is noticed within about 15 s.
HEARTBEAT = 10.0

_APP_KEY_ADVICE = (
    "set SLACK_APP_TOKEN to an app-level token (xapp-…) with the connections:write scope "
    "(api.slack.com/apps -> Basic Information -> App-Level Tokens) and turn Socket Mode on"
)
_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "account_inactive", "not_allowed_token_type"}
)


class SocketModeConnection:
    """Keeps one Socket Mode connection open; ``start`` returns at once."""

    def __init__(
        self,
        *,
        bolt: AsyncApp,
        app_token: str,
        api_url: str,
        session: aiohttp.ClientSession,
        health: Health,
    ) -> None:
        self._bolt = bolt
        self._app_token = app_token
        self._api = SlackApi(make_client(token=None, base_url=api_url, session=session), None)
        self._api_url = api_url
        self._session = session
        self._health = health
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = asyncio.Event()
        # HTTPS_PROXY / HTTP_PROXY, read as slack_sdk's own Socket Mode client reads them.
        self._proxy = load_http_proxy_from_env()

    def start(self) -> None:
        self._health.pending(COMPONENT)
        self._task = asyncio.create_task(self._run(), name="slack-socket-mode")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_ws()
        self._health.up(COMPONENT)  # stopped on purpose: nothing to report any more

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        self.connected.clear()
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    async def _run(self) -> None:
        backoff = Backoff()
        attempt = 0
        while True:
            attempt += 1
            wait = 0.0
            try:
                url = await self._open_url()
                self._ws = await asyncio.wait_for(
                    self._session.ws_connect(
                        url, heartbeat=HEARTBEAT, autoping=True, proxy=self._proxy
                    ),
                    CONNECT_TIMEOUT,
                )
            except PlatformRateLimited as e:
                wait = e.retry_after
                failure = ("apps.connections.open is rate limited", "", "")
            except SlackCallError as e:
                failure = _explain(e.code or "", self._api_url)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                failure = (
                    f"the Socket Mode WebSocket could not be opened ({type(e).__name__})",
                    "network",
                    "allow outbound WSS to *.slack.com (proxy, firewall)",
                )
            except Exception as e:  # anything else: keep trying rather than stay down for good
                failure = (f"unexpected error while connecting ({type(e).__name__}: {e})", "", "")
            else:
                log.info("slack.socket_mode_connected", attempt=attempt)
                self._health.up(COMPONENT)
                self.connected.set()
                attempt = 0
                backoff.reset()
                reason = await self._receive(self._ws)
                await self._close_ws()
                if reason in ("refresh_requested", "warning"):
                    # Slack rotates connections every few hours: reconnect at once, no alarm.
                    log.info("slack.socket_mode_refresh", reason=reason)
                    continue
                if reason == "link_disabled":
                    fix = (
                        "turn Socket Mode on in the Slack app's settings, or unset SLACK_APP_TOKEN"
                    )
                    self._health.down(
                        COMPONENT,
                        "Slack closed the connection: Socket Mode is turned off for the app",
                        setting="SLACK_APP_TOKEN",
                        fix=fix,
                    )
                    log.warning("slack.socket_mode_disabled", fix=fix)
                else:
                    self._health.down(COMPONENT, f"connection lost ({reason}); reconnecting")
                    log.warning("slack.socket_mode_lost", reason=reason)
                await backoff.sleep()
                continue
            reason, setting, fix = failure
            delay = max(wait, backoff.next())
            self._health.down(COMPONENT, reason, setting=setting, fix=fix)
            # One line per failed attempt, no traceback: the reason, the setting, the fix.
            log.warning(
                "slack.socket_mode_connect_failed",
                attempt=attempt,
                reason=reason,
                setting=setting or None,
                fix=fix or None,
                retry_in=round(delay, 1),
            )
            await asyncio.sleep(delay)

    async def _open_url(self) -> str:
        data = await self._api.call("apps.connections.open", app_token=self._app_token)
        url = data.get("url")
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise SlackCallError("apps.connections.open gave no URL", code="no_url")
        return url

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse | None) -> str:
        """Dispatch envelopes until the connection ends; return why it ended."""
        if ws is None:
            return "not connected"
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data: Any = json.loads(msg.data)
            except ValueError:
                log.warning("slack.socket_mode_bad_frame")
                continue
            if not isinstance(data, dict):
                continue
            kind = data.get("type")
            if kind == "hello":
                continue
            if kind == "disconnect":
                return str(data.get("reason") or "disconnect")
            req = SocketModeRequest.from_dict(data)
            if req is not None:
                spawn(self._handle(ws, req), name="slack-socket-dispatch")
        exc = ws.exception()
        return f"{type(exc).__name__}" if exc is not None else f"closed, code {ws.close_code}"

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, req: SocketModeRequest) -> None:
        """What bolt's own Socket Mode handler does: dispatch, then ack with bolt's answer."""
        resp = await run_async_bolt_app(self._bolt, req)
        if resp.status != 200:
            log.info("slack.socket_mode_unhandled", status=resp.status, type=req.type)
            return
        payload: dict[str, Any] | None = None
        if resp.body:
            ctype = resp.headers.get("content-type", [""])[0]
            payload = (
                json.loads(resp.body)
                if ctype.startswith("application/json")
                else {"text": resp.body}
            )
        ack = SocketModeResponse(envelope_id=req.envelope_id, payload=payload)
        if ws.closed:
            return  # Slack sends it again on the next connection; dedup drops the repeat
        try:
            await ws.send_str(json.dumps(ack.to_dict()))
        except (ConnectionError, aiohttp.ClientError) as e:
            log.info("slack.socket_mode_ack_failed", error=type(e).__name__)


def _explain(code: str, api_url: str) -> tuple[str, str, str]:
    """(reason, setting, fix) for a failed apps.connections.open."""
    if code in _TOKEN_ERRORS:
        return f"Slack refused SLACK_APP_TOKEN ({code})", "SLACK_APP_TOKEN", _APP_KEY_ADVICE
    if code == "transport" or code.startswith("http_5"):
        return (
            f"Slack is unreachable at {api_url} ({code})",
            "SLACK_API_URL",
            "check outbound HTTPS to slack.com (proxy, firewall, DNS)",
        )
    return f"apps.connections.open failed: {code}", "SLACK_APP_TOKEN", _APP_KEY_ADVICE
