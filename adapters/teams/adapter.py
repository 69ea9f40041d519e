"""``POST /api/messages``: authenticate, classify, acknowledge at once, answer in the background.

Teams redelivers an activity when the HTTP answer takes more than about 15 seconds, so the handler
never waits for Dify: it hands the message to ``Bridge.submit`` with a reply handle that holds the
conversation reference, and answers 200 in milliseconds. Redeliveries are dropped by the bridge's
dedup on the activity id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

import aiohttp
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from adapters.teams import activities as acts
from adapters.teams import compose, files
from adapters.teams.auth import SigningKeys, TokenValidator, Unauthorized, is_loopback_url
from adapters.teams.clicks import CardClicks
from adapters.teams.client_assertion import Certificate
from adapters.teams.connector import BotConnector
from adapters.teams.feedback import Feedback
from adapters.teams.pacer import TenantPacer
from adapters.teams.reply import EditReply, Runtime, StreamReply
from adapters.teams.resume import close_answer
from adapters.teams.settings import teams_settings
from adapters.teams.tokens import TokenSource
from app.errors import PlatformError
from app.pipeline.model import IncomingMessage, Kind, PlatformLimits, Speaker, ThreadKey
from app.seams.context import AdapterContext
from app.server.health import Backoff

log = structlog.get_logger(__name__)

# How long shutdown waits for replies to button clicks still being sent.
CLICK_DRAIN_SECONDS = 5.0

CREDENTIALS_HEALTH = "teams credentials"
# A cached token is returned without a request; near its expiry this refreshes it.
TOKEN_RECHECK_SECONDS = 120.0
# Dify needs a question; a message that is only a file gets this one.
FILE_ONLY_QUESTION = "Please look at the attached file."
_IGNORED_TYPES = frozenset(
    {
        "conversationUpdate",
        "messageUpdate",
        "messageDelete",
        "messageReaction",
        "installationUpdate",
        "typing",
        "event",
        "endOfConversation",
        "contactRelationUpdate",
    }
)


class TeamsAdapter:
    """Microsoft Teams through the Bot Connector (see docs/teams.md)."""

    name = "teams"
    # Per conversation Teams allows 1,800 sends+edits an hour: one edit every 2 s. The tenant
    # ceiling is 30 requests/s; 20/s (1,200/min) leaves room for the posts and final edits.
    limits = PlatformLimits(
        max_message_chars=20_000,
        min_edit_interval=2.0,
        workspace_edits_per_minute=900.0,
        placeholder="Thinking…",
    )

    def __init__(
        self,
        ctx: AdapterContext,
        *,
        app_id: str | None,
        password: str | None,
        token_url: str | None,
        stream_window: float = 100.0,
        tenant_rps: float = 28.0,
        certificate: Certificate | None = None,
    ) -> None:
        self.ctx = ctx
        self._kv = ctx.store.for_platform("teams")
        self.app_id = app_id
        self.local = not app_id
        self._password = password
        self._certificate = certificate
        self._token_url = token_url
        self._stream_window = stream_window
        self.tenant_rps = tenant_rps
        self._session: aiohttp.ClientSession | None = None
        self._own_session = False
        self._validator: TokenValidator | None = None
        self._runtime: Runtime | None = None
        self._downloader: files.Downloader | None = None
        self._tokens: TokenSource | None = None
        self._token_watch: asyncio.Task[None] | None = None
        self._clicks = CardClicks(ctx, self._kv, self.limits)
        self._feedback = Feedback(ctx, self._kv)

    # ------------------------------------------------------------------ Adapter protocol
    def mount(self, app: web.Application) -> None:
        app.router.add_post("/api/messages", self.handle)

    async def start(self) -> None:
        self._ready()
        if not self.local:
            # Credentials that cannot get a token make every answer fail: say so in /readyz
            # from the start instead of at the first message.
            self.ctx.health.pending(CREDENTIALS_HEALTH)
            self._token_watch = asyncio.create_task(self._watch_token(), name="teams-token")
        if self.local:
            log.warning(
                "teams.LOCAL_MODE_NO_AUTHENTICATION",
                detail="MICROSOFT_APP_ID is not set and TEAMS_ALLOW_UNAUTHENTICATED=true: "
                "/api/messages accepts UNAUTHENTICATED requests, answering loopback serviceUrls "
                "only. For the Bot Framework Emulator and tests; never expose this publicly.",
            )

    async def _watch_token(self) -> None:
        """Get a token now and again every few minutes; report to /readyz when none can be had."""
        tokens = self._tokens
        assert tokens is not None
        backoff = Backoff(first=2.0, cap=60.0)
        while True:
            try:
                await tokens.check()
            except PlatformError as e:
                reason, setting, fix = tokens.last_problem
                self.ctx.health.down(CREDENTIALS_HEALTH, reason, setting=setting, fix=fix)
                delay = backoff.next()
                if e.code != "token_refused":  # a refusal was logged with its fix already
                    log.warning(
                        "teams.token_unavailable",
                        reason=reason,
                        setting=setting,
                        fix=fix,
                        retry_in=round(delay, 1),
                    )
                await asyncio.sleep(delay)
                continue
            self.ctx.health.up(CREDENTIALS_HEALTH)
            backoff.reset()
            await asyncio.sleep(TOKEN_RECHECK_SECONDS)

    async def stop(self) -> None:
        await self._clicks.drain(CLICK_DRAIN_SECONDS)
        if self._token_watch is not None:
            self._token_watch.cancel()
            self._token_watch = None
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None
        self._runtime = None

    async def resume(self, token: Mapping[str, str], text: str) -> None:
        """Close an answer whose replica died: edit its placeholder, else post in its chat."""
        await close_answer(self._ready().connector, token, text)

    # ------------------------------------------------------------------ wiring
    def _ready(self) -> Runtime:
        if self._runtime is not None:
            return self._runtime
        settings = teams_settings(self.ctx.settings)
        if self.ctx.http is not None:
            self._session = self.ctx.http
        else:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        tokens = self._tokens = TokenSource(
            session=self._session,
            app_id=self.app_id,
            password=self._password,
            app_type=settings.microsoft_app_type,
            tenant_id=settings.microsoft_app_tenant_id,
            token_url=self._token_url,
            certificate=self._certificate,
        )
        if self.app_id:
            self._validator = TokenValidator(
                app_id=self.app_id,
                keys=SigningKeys(settings.teams_openid_metadata_url, self._session),
            )
        connector = BotConnector(
            session=self._session,
            tokens=tokens,
            metrics=self.ctx.metrics,
            allow_service_url=is_loopback_url if self.local else _any_https_or_verified,
            pacer=TenantPacer.for_rps(self.tenant_rps, shared=self.ctx.store.shared_budgets()),
        )
        self._downloader = files.Downloader(
            session=self._session,
            tokens=tokens,
            allow_url=is_loopback_url if self.local else _https_or_loopback,
        )
        self._runtime = Runtime(
            connector=connector,
            remember_feedback=self._feedback.remember,
            stop_answer=self._stop_answer,
            feedback_enabled=self._feedback.enabled,
            stream_window=self._stream_window,
            reset_enabled=self._reset_enabled,
            reset_by_word=self._reset_by_word,
            dify_origin=self._dify_origin,
        )
        return self._runtime

    @property
    def stream_window(self) -> float:
        """Seconds a 1:1 stream may run before it is finished (Teams allows 2 minutes)."""
        return self._stream_window

    @stream_window.setter
    def stream_window(self, seconds: float) -> None:
        self._stream_window = seconds
        if self._runtime is not None:
            self._runtime.stream_window = seconds

    # ------------------------------------------------------------------ HTTP entry
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every activity Teams sends. Answers within milliseconds; the answer streams later."""
        rt = self._ready()
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            body = None
        header = request.headers.get("Authorization")
        if self._validator is not None:
            # Authenticate before looking at the content: a stranger learns nothing from 400s.
            loose = body if isinstance(body, dict) else {}
            try:
                await self._validator.check(
                    header,
                    service_url=str(loose.get("serviceUrl") or ""),
                    channel_id=str(loose.get("channelId") or ""),
                )
            except Unauthorized as e:
                log.warning("teams.unauthorized", reason=str(e))
                return web.json_response({"error": "unauthorized"}, status=401)
        try:
            inb = acts.parse(body)
        except acts.BadActivity as e:
            return web.json_response({"error": "bad_activity", "detail": str(e)}, status=400)
        if self.local and not is_loopback_url(inb.service_url):
            log.warning("teams.local_mode_refused_service_url")
            return web.json_response(
                {"error": "local mode answers loopback serviceUrls only"}, status=403
            )
        if inb.type == "message":
            await self._on_message(inb, rt)
            return web.Response(status=200)
        if inb.type == "invoke":
            return await self._feedback.on_invoke(inb)
        log.debug("teams.ignored", type=inb.type if inb.type in _IGNORED_TYPES else "other")
        return web.Response(status=200)

    # ------------------------------------------------------------------ messages
    async def _on_message(self, inb: acts.Inbound, rt: Runtime) -> None:
        if inb.from_id == inb.recipient_id or (self.app_id and inb.from_id == f"28:{self.app_id}"):
            log.debug("teams.ignored", why="own message")
            return
        if await self._clicks.handle(inb, rt):
            return
        key = acts.thread_key(inb)
        kind = await self._kind(inb, key)
        if kind is None:
            log.debug("teams.ignored", why="not addressed to the bot")
            return
        text = acts.clean_text(inb)
        attached = files.attachments(
            inb.attachments, service_url=inb.service_url, downloader=self._downloader_ready()
        )
        if not text:
            if not attached:
                log.debug("teams.ignored", why="empty after removing the mention")
                return
            # A voice clip alone stays without text: the core makes its transcript the question.
            if not any(a.is_audio for a in attached):
                text = FILE_ONLY_QUESTION
        msg = IncomingMessage(
            key=key,
            event_id=acts.event_id(inb),
            speaker=Speaker(id=inb.aad_object_id or inb.from_id, name=inb.from_name),
            text=text,
            kind=kind,
            attachments=attached,
            channel_name=inb.channel_name,
            received_at=inb.timestamp or time.time(),
            starts_thread=acts.starts_thread(inb),
        )
        place = acts.place(inb)
        reply = StreamReply(rt, place, key) if place.personal else EditReply(rt, place, key)
        await self._record_before_ack(msg.event_id, reply)
        self.ctx.bridge.submit(msg, reply, self.limits)

    async def _record_before_ack(self, event_id: str, reply: EditReply) -> None:
        """Record the activity in Redis before the 200: if this replica dies before answering,
        another one tells the user (Teams does not redeliver an acknowledged activity)."""
        try:
            await asyncio.wait_for(
                self.ctx.bridge.preack("teams", event_id, reply.resume_token()), 0.5
            )
        except (RedisError, TimeoutError) as e:
            log.warning("teams.preack_failed", error=type(e).__name__)

    def _downloader_ready(self) -> files.Downloader:
        self._ready()
        if self._downloader is None:  # _ready() always sets it
            raise RuntimeError("Teams adapter not initialised")
        return self._downloader

    async def _kind(self, inb: acts.Inbound, key: ThreadKey) -> Kind | None:
        if inb.conversation_type == acts.PERSONAL:
            return Kind.DIRECT
        if acts.bot_mentioned(inb):
            return Kind.MENTION
        if inb.conversation_type != acts.CHANNEL:
            return None
        # Only delivered with the ChannelMessage.Read.Group permission (manifest opt-in).
        route = self.ctx.bridge.route_for(key)
        if route is None or not route.config.continue_in_thread:
            return None
        try:
            known = await self.ctx.bridge.thread_known(key)
        except RedisError as e:
            # Unmentioned chatter is not worth a 500 (Teams would redeliver it): skip it.
            log.warning("teams.thread_lookup_failed", error=type(e).__name__)
            return None
        return Kind.THREAD_REPLY if known else None

    # ------------------------------------------------------------------ what the replies ask
    async def _stop_answer(self, key: ThreadKey) -> bool:
        return await self.ctx.bridge.stop(thread=key)

    def _reset_enabled(self, route_name: str | None) -> bool:
        route = self.ctx.bridge.route_named(route_name) if route_name else None
        return route is not None and route.config.reset_button and route.config.dify.mode.is_chat

    def _reset_by_word(self, route_name: str | None) -> bool:
        route = self.ctx.bridge.route_named(route_name) if route_name else None
        words = route.config.reset_words if route is not None else ()
        return compose.RESET_TITLE.lower() in {w.strip().lower() for w in words}

    def _dify_origin(self, route_name: str | None) -> str | None:
        route = self.ctx.bridge.route_named(route_name) if route_name else None
        # Dify's relative file URLs (/files/...) hang off the API's origin, not /v1.
        return route.base_url.rstrip("/").removesuffix("/v1") if route is not None else None


def _https_or_loopback(url: str) -> bool:
    return url.startswith("https://") or is_loopback_url(url)


def _any_https_or_verified(url: str) -> bool:
    # With an app id every serviceUrl we call came from a JWT-verified activity whose
    # ``serviceurl`` claim matched it.
    return url.startswith(("https://", "http://"))
