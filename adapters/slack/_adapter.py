"""The Slack adapter: bolt's ``AsyncApp`` at the edge, mounted on the core's aiohttp server.

Routes (HTTP mode, ``SLACK_SIGNING_SECRET``): ``POST /slack/events`` for Events API callbacks,
interactivity and slash commands; ``GET /slack/install`` and ``GET /slack/oauth_redirect`` when the
OAuth variables are set. Socket Mode (``SLACK_APP_TOKEN``) needs no public URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger import messages as bolt_messages
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

from adapters.slack import _blocks as B
from adapters.slack import _forms as F
from adapters.slack._auth import (
    CachedInstallationAuthorize,
    RedisInstallationStore,
    SignedStateStore,
    SingleTeamAuthorize,
    auth_problem,
)
from adapters.slack._edge import Refused, check_shape, check_signature, decode, read_body
from adapters.slack._handlers import SlackHandlers
from adapters.slack._socket import SocketModeConnection
from adapters.slack._webapi import PLATFORM, SlackApi, error_code, make_client
from adapters.slack.settings import slack_settings
from app.errors import PlatformError
from app.pipeline.model import PlatformLimits
from app.server.health import Backoff
from app.server.tasks import spawn

if TYPE_CHECKING:
    from app.seams.context import AdapterContext

log = structlog.get_logger(__name__)

# Bot scopes asked for in the OAuth install (the manifest in manifests/slack lists the same).
BOT_SCOPES = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "groups:history",
    "im:history",
    "mpim:history",
    "users:read",
    "users:read.email",
)

# Slack limits are per method: chat.update is Tier 3 (~50/min per workspace), chat.postMessage is
# ~1/s per channel. The adapter keeps both itself (adapters/slack/_budget.py) and shows text
# without chat.update where it can, so the core's workspace budget here is only a ceiling on all
# calls of the answers (100/s sustained, bursts of 10). Edits of one message at most every 1.5 s.
SLACK_LIMITS = PlatformLimits(
    max_message_chars=B.PART_LIMIT,
    min_edit_interval=1.5,
    workspace_edits_per_minute=6000.0,
    placeholder="Thinking…",
    # An answer longer than the messages it may fill comes whole as a file (files.upload*).
    attaches_files=True,
)


class SlackAdapter:
    """Slack in HTTP mode, Socket Mode, or both; one workspace (bot token) or many (OAuth)."""

    name = "slack"
    limits = SLACK_LIMITS

    def __init__(self, ctx: AdapterContext, session: aiohttp.ClientSession, *, owns_session: bool):
        s = slack_settings(ctx.settings)
        self._ctx = ctx
        self._session = session
        self._owns_session = owns_session
        self._api_url = s.slack_api_url if s.slack_api_url.endswith("/") else s.slack_api_url + "/"
        self._max_body = ctx.settings.max_body_bytes
        self._signing_secret = s.secret("slack_signing_secret") or ""
        self._secret_bytes = self._signing_secret.encode()
        self._app_token = s.secret("slack_app_token")
        base_client = make_client(token=None, base_url=self._api_url, session=session)
        self._single: SingleTeamAuthorize | None = None
        self.installations: RedisInstallationStore | None = None
        self.oauth_flow: AsyncOAuthFlow | None = None
        authorize: AsyncAuthorize
        bot_token = s.secret("slack_bot_token")
        kv = ctx.store.for_platform(PLATFORM)
        if s.slack_client_id and s.secret("slack_client_secret") and s.secret("slack_state_secret"):
            store = RedisInstallationStore(kv.redis, kv.key_prefix)
            self.installations = store
            authorize = CachedInstallationAuthorize(store)
            self.oauth_flow = AsyncOAuthFlow(
                client=base_client,
                settings=AsyncOAuthSettings(
                    client_id=s.slack_client_id,
                    client_secret=s.secret("slack_client_secret"),
                    scopes=list(BOT_SCOPES),
                    installation_store=store,
                    installation_store_bot_only=True,
                    state_store=SignedStateStore(
                        s.secret("slack_state_secret") or "", kv.redis, kv.key_prefix
                    ),
                ),
            )
        else:
            self._single = SingleTeamAuthorize(
                SlackApi(
                    make_client(token=bot_token, base_url=self._api_url, session=session),
                    ctx.metrics,
                )
            )
            authorize = self._single
        self._authorize = authorize
        self.bolt = AsyncApp(
            client=base_client,
            signing_secret=self._signing_secret,
            authorize=authorize,  # type: ignore[arg-type]  # bolt accepts AsyncAuthorize objects
            oauth_flow=self.oauth_flow,
            # Ack at once, work afterwards: Slack retries after 3 s without a 2xx.
            process_before_response=False,
            # Socket Mode requests carry no signature; HTTP ones always do.
            request_verification_enabled=bool(self._signing_secret),
            name="dify-bridge",
            logger=_bolt_logger(),
        )
        self.handlers = SlackHandlers(
            bridge=ctx.bridge,
            kv=kv,
            budgets=ctx.store.shared_budgets(),
            limits=self.limits,
            api_url=self._api_url,
            session=session,
            metrics=ctx.metrics,
        )
        self._register(s.slack_slash_command)
        self._socket: SocketModeConnection | None = None
        self._auth_task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Callable[[], AsyncBoltRequest]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def resume(self, token: Mapping[str, str], text: str) -> None:
        """Close an answer whose replica died: edit its placeholder, else post in its thread."""
        team, channel = token.get("team", ""), token.get("channel", "")
        thread_ts, ts = token.get("thread_ts", ""), token.get("ts", "")
        if not channel or not thread_ts:
            return
        api = self.handlers.api(await self._bot_token(team))
        if ts:
            try:
                await api.call("chat.update", channel=channel, ts=ts, text=text, blocks=[])
                return
            except PlatformError as e:  # deleted meanwhile: say it in the thread instead
                log.info("slack.resume_update_failed", code=error_code(e, ""))
        await self.handlers.budgets.wait_post(team, channel)
        await api.call("chat.postMessage", channel=channel, thread_ts=thread_ts, text=text)

    async def _bot_token(self, team: str) -> str | None:
        if self._single is not None:
            result = await self._single.warm()
            return result.bot_token if result else None
        if self.installations is not None:
            bot = await self.installations.async_find_bot(enterprise_id=None, team_id=team)
            return bot.bot_token if bot else None
        return None

    def _register(self, command: str) -> None:
        app, h = self.bolt, self.handlers
        app.event("app_uninstalled")(self._on_uninstalled)
        app.event("tokens_revoked")(self._on_uninstalled)
        app.event("app_mention")(h.on_message_event)
        app.event("message")(h.on_message_event)
        app.event("app_home_opened")(h.on_home_opened)
        app.event("app_context_changed")(h.on_context_changed)
        app.event("assistant_thread_started")(h.on_thread_started)
        app.event("agent_session_stopped")(h.on_session_stopped)
        # Anything else we receive is acknowledged, so Slack never retries or disables the app.
        app.event(re.compile(r".*"))(h.on_other_event)
        app.command(command)(h.on_command)
        app.action(B.ACTION_STOP)(h.on_stop)
        app.action(re.compile(rf"^({B.ACTION_LIKE}|{B.ACTION_DISLIKE}|{B.ACTION_FEEDBACK})$"))(
            h.on_feedback
        )
        app.action(re.compile(rf"^{B.ACTION_SUGGEST}_\d+$"))(h.on_suggestion)
        app.action(B.ACTION_RESET)(h.on_reset)
        app.action(re.compile(rf"^{F.ACTION_FORM}_\d+$"))(h.on_form)
        # Typing in a form's inputs sends nothing (no dispatch_action); selects do: ack them.
        app.action(F.FIELD_ACTION)(h.on_form_field)

    async def _on_uninstalled(self, context: AsyncBoltContext) -> None:
        """The app was removed from a workspace: forget its installation and cached token."""
        log.info("slack.uninstalled", team=context.team_id, enterprise=context.enterprise_id)
        if self.installations is None:
            return
        await self.installations.async_delete_bot(
            enterprise_id=context.enterprise_id, team_id=context.team_id
        )
        await self.installations.async_delete_installation(
            enterprise_id=context.enterprise_id, team_id=context.team_id
        )
        if isinstance(self._authorize, CachedInstallationAuthorize):
            self._authorize.forget(context.enterprise_id, context.team_id)

    # ------------------------------------------------------------------ Adapter protocol

    def mount(self, app: web.Application) -> None:
        if self._signing_secret:
            app.router.add_post("/slack/events", self._events)
        if self.oauth_flow is not None:
            app.router.add_get("/slack/install", self._install)
            app.router.add_get("/slack/oauth_redirect", self._oauth_redirect)

    async def start(self) -> None:
        # Nothing here waits for Slack: a wrong token or an unreachable Slack must neither delay
        # the start nor keep SIGTERM from ending the process. /readyz reports both meanwhile.
        self._worker = asyncio.create_task(self._dispatcher(), name="slack-dispatcher")
        if self._single is not None:
            self._ctx.health.pending(AUTH_COMPONENT)
            self._auth_task = asyncio.create_task(self._authorize_bot(), name="slack-auth")
        if self._app_token:
            self._socket = SocketModeConnection(
                bolt=self.bolt,
                app_token=self._app_token,
                api_url=self._api_url,
                session=self._session,
                health=self._ctx.health,
            )
            self._socket.start()

    async def _authorize_bot(self) -> None:
        """``auth.test`` with SLACK_BOT_TOKEN until it succeeds (backoff up to 30 s)."""
        assert self._single is not None
        backoff = Backoff()
        while True:
            who = await self._single.warm()
            if who is not None:
                self._ctx.health.up(AUTH_COMPONENT)
                log.info("slack.ready", team=who.team_id, bot_user=who.bot_user_id)
                return
            reason, setting, fix = auth_problem(self._single.last_error)
            self._ctx.health.down(AUTH_COMPONENT, reason, setting=setting, fix=fix)
            await backoff.sleep()

    async def stop(self) -> None:
        if self._worker is not None:
            # Requests already acknowledged still reach bolt before we stop.
            while not self._queue.empty():
                spawn(self._dispatch(self._queue.get_nowait()), name="slack-dispatch")
            self._worker.cancel()
            self._worker = None
        if self._auth_task is not None:
            self._auth_task.cancel()
            self._auth_task = None
        if self._socket is not None:
            await self._socket.stop()
            self._socket = None
        if self._owns_session and not self._session.closed:
            await self._session.close()

    # ------------------------------------------------------------------ HTTP routes

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Events API, interactivity and slash commands: verify, ack, then let bolt dispatch.

        Slack needs nothing but a 2xx from us (we never answer in the ack body), so after the
        checks of :mod:`._edge` the request is acknowledged at once and bolt runs in the
        background. A burst of events then acks in well under a millisecond each instead of
        queueing behind bolt's middleware and the answers it starts. ``url_verification`` and
        ``ssl_check`` do need bolt's answer and go through it before the response.
        """
        raw = await read_body(request, self._max_body)
        if isinstance(raw, Refused):
            return _refused(raw)
        headers = request.headers
        refused = check_signature(
            self._secret_bytes,
            raw,
            headers.get("X-Slack-Request-Timestamp"),
            headers.get("X-Slack-Signature"),
        )
        if refused is not None:
            return _refused(refused)
        body = decode(raw)
        if isinstance(body, Refused):
            return _refused(body)
        shape = check_shape(body, request.content_type)
        if isinstance(shape, Refused):
            return _refused(shape)
        bolt_req = partial(_bolt_request, body, request.query_string, dict(headers), shape.form)
        if _needs_bolt_answer(body):
            return await to_aiohttp_response(await self.bolt.async_dispatch(bolt_req()))
        if shape.event is not None:
            self._record_before_ack(shape.event)
        if self._worker is None:  # not started (or stopping): no queue to wait in
            spawn(self._dispatch(bolt_req), name="slack-dispatch")
        else:
            self._queue.put_nowait(bolt_req)
        return web.Response(status=200)

    def _record_before_ack(self, payload: dict[str, Any]) -> None:
        """Start the Redis record of an event that will surely be answered (mentions, DMs)
        before the ack: if this replica dies between the ack and the answer, another one tells
        the user (Slack does not retry an acked event). The write is started, not awaited: an
        await here would let answers already running delay every ack of a burst."""
        token = _answerable(payload)
        if token is None:
            return
        queued = self._ctx.bridge.preack_nowait(PLATFORM, str(payload.get("event_id", "")), token)
        if queued is not None:
            queued.add_done_callback(_log_preack_failure)

    async def _dispatcher(self) -> None:
        """Start bolt dispatches one per event-loop turn.

        Under a burst, every waiting request is acknowledged before the next dispatch (and the
        answer it starts) takes its share of the loop: acks stay fast, answers start a few
        milliseconds later.
        """
        while True:
            make_request = await self._queue.get()
            spawn(self._dispatch(make_request), name="slack-dispatch")
            await asyncio.sleep(0)

    async def _dispatch(self, make_request: Callable[[], AsyncBoltRequest]) -> None:
        resp = await self.bolt.async_dispatch(make_request())
        if resp.status >= 400:
            log.warning("slack.dispatch_refused", status=resp.status)

    async def _install(self, request: web.Request) -> web.StreamResponse:
        assert self.oauth_flow is not None
        bolt_req = AsyncBoltRequest(
            body="", query=request.query_string, headers=dict(request.headers)
        )
        return await to_aiohttp_response(await self.oauth_flow.handle_installation(bolt_req))

    async def _oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        assert self.oauth_flow is not None
        bolt_req = AsyncBoltRequest(
            body="", query=request.query_string, headers=dict(request.headers)
        )
        return await to_aiohttp_response(await self.oauth_flow.handle_callback(bolt_req))


def _bolt_request(
    body: str, query: str, headers: dict[str, str | Sequence[str]], form: dict[str, str] | None
) -> AsyncBoltRequest:
    req = AsyncBoltRequest(body=body, query=query, headers=headers)
    if form is not None:  # a form bolt misreads as an empty payload (see _edge.check_shape)
        req.body = form
        req.context = build_async_context(AsyncBoltContext({}), form)
    return req


def _refused(refused: Refused) -> web.Response:
    # One plain line per refused request; the reason is ours, never the request's content.
    log.warning("slack.request_refused", status=refused.status, reason=refused.reason)
    return refused.response()


def _log_preack_failure(fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        return
    err = fut.exception()
    if err is not None:
        log.warning("slack.preack_failed", error=type(err).__name__)


def _answerable(payload: Any) -> dict[str, str] | None:
    """The resume token of an event the bot will answer for sure, else None."""
    if not isinstance(payload, dict) or payload.get("type") != "event_callback":
        return None
    ev = payload.get("event")
    if not isinstance(ev, dict) or ev.get("bot_id") or ev.get("subtype"):
        return None
    is_dm = ev.get("type") == "message" and ev.get("channel_type") == "im"
    if ev.get("type") != "app_mention" and not is_dm:
        return None
    channel, ts = ev.get("channel"), ev.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str) or not payload.get("event_id"):
        return None
    thread_ts = ev.get("thread_ts")
    thread: str = thread_ts if isinstance(thread_ts, str) else ts
    return {
        "team": str(payload.get("team_id", "")),
        "channel": channel,
        "thread_ts": thread,
        "ts": "",
    }


def _needs_bolt_answer(body: str) -> bool:
    """Requests whose response body matters: the URL check and Slack's SSL check."""
    return "url_verification" in body[:200] or "ssl_check=" in body


AUTH_COMPONENT = "slack bot token"

# Bolt warns about a `token` it will not use whenever SLACK_BOT_TOKEN is in the environment,
# because it reads that variable itself; ours goes through `authorize`, so the warning is noise.
_BOLT_NOISE = frozenset(
    {
        bolt_messages.warning_client_prioritized_and_token_skipped(),
        bolt_messages.warning_token_skipped(),
    }
)


class _DropBoltNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _BOLT_NOISE


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("slack_bolt.AsyncApp")
    if not any(isinstance(f, _DropBoltNoise) for f in logger.filters):
        logger.addFilter(_DropBoltNoise())
    return logger


def _quiet_sdk_loggers() -> None:
    # slack_sdk logs whole request bodies (message text) at DEBUG: never below INFO for them.
    for name in ("slack_sdk", "slack_bolt"):
        lg = logging.getLogger(name)
        if lg.getEffectiveLevel() < logging.INFO:
            lg.setLevel(logging.INFO)


def create(ctx: AdapterContext) -> SlackAdapter | None:
    """Build the Slack adapter, or return None (after one log line) when it is not configured."""
    s = slack_settings(ctx.settings)
    oauth = bool(
        s.slack_client_id and s.secret("slack_client_secret") and s.secret("slack_state_secret")
    )
    partial_oauth = bool(s.slack_client_id or s.secret("slack_client_secret")) and not oauth
    if not (s.secret("slack_bot_token") or oauth):
        if partial_oauth:
            log.warning(
                "slack.disabled",
                hint="set all of SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET "
                "for the OAuth install flow, or SLACK_BOT_TOKEN for one workspace",
            )
        else:
            log.info(
                "slack.disabled",
                hint="set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for "
                "Socket Mode) to enable Slack",
            )
        return None
    if not (s.secret("slack_signing_secret") or s.secret("slack_app_token")):
        log.warning(
            "slack.disabled",
            hint="set SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode)",
        )
        return None
    _quiet_sdk_loggers()
    if ctx.http is not None:
        return SlackAdapter(ctx, ctx.http, owns_session=False)
    # Created inside the running loop (Service.create is async); closed in stop().
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    return SlackAdapter(ctx, session, owns_session=True)
