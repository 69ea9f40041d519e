"""``POST /api/messages``: authenticate, classify, acknowledge at once, answer in the background.

Teams redelivers an activity when the HTTP answer takes more than about 15 seconds, so the handler
never waits for Dify: it hands the message to ``Bridge.submit`` with a reply handle that holds the
conversation reference, and answers 200 in milliseconds. Redeliveries are dropped by the bridge's
dedup on the activity id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal, cast

import aiohttp
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from adapters.teams import _sdk, compose, files
from adapters.teams import activities as acts
from adapters.teams.auth import SigningKeys, TokenValidator, Unauthorized, is_loopback_url
from adapters.teams.client_assertion import Certificate
from adapters.teams.connector import BotConnector
from adapters.teams.pacer import TenantPacer
from adapters.teams.reply import EditReply, Runtime, StreamReply
from adapters.teams.settings import teams_settings
from adapters.teams.tokens import TokenSource
from app.errors import PlatformError
from app.pipeline.forms import FormAnswer, FormResult, Outcome, Responder
from app.pipeline.model import IncomingMessage, Kind, PlatformLimits, Speaker, ThreadKey
from app.seams.context import AdapterContext
from app.server.health import Backoff
from app.server.tasks import spawn
from app.texts import RESET_DONE

log = structlog.get_logger(__name__)

FEEDBACK_TIMEOUT = 10.0
CREDENTIALS_HEALTH = "teams credentials"
# A cached token is returned without a request; near its expiry this refreshes it.
TOKEN_RECHECK_SECONDS = 120.0
FEEDBACK_LATEST = "fb:latest"  # the thread's newest answer (feedback without replyToId)
# Dify needs a question; a message that is only a file gets this one.
FILE_ONLY_QUESTION = "Please look at the attached file."
RESET_FAILED = "Sorry, I could not start a new conversation just now. Please try again."
NOTHING_TO_STOP = "There is no answer to stop any more."
FEEDBACK_UNPLACED = (
    "Thanks! I could not tell which answer this feedback is for, so it was not recorded."
)
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
    """Microsoft Teams through the Bot Connector (see README.md, Microsoft Teams)."""

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
        if self._token_watch is not None:
            self._token_watch.cancel()
            self._token_watch = None
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None
        self._runtime = None

    async def resume(self, token: Mapping[str, str], text: str) -> None:
        """Close an answer whose replica died: edit its placeholder, else post in its chat."""
        rt = self._ready()
        service_url, conv_id = token.get("service_url", ""), token.get("conversation_id", "")
        tenant = token.get("tenant", "")
        if not service_url or not conv_id:
            return
        reply_to = token.get("reply_to_id") or None
        base = _sdk.base_activity(
            bot=(token.get("bot_id", ""), token.get("bot_name", "")),
            user=None,
            conversation=json.loads(token.get("conversation") or "{}"),
            reply_to_id=reply_to,
        )
        activity_id = token.get("activity_id")
        if activity_id:
            try:
                await rt.connector.put(
                    service_url,
                    conv_id,
                    activity_id,
                    _sdk.build_activity(
                        base, type=_sdk.MESSAGE, text=text, activity_id=activity_id
                    ),
                    tenant=tenant,
                    urgent=True,
                )
                return
            except PlatformError as e:  # gone meanwhile: say it in the chat instead
                log.info("teams.resume_update_failed", code=e.code)
        await rt.connector.post(
            service_url,
            conv_id,
            _sdk.build_activity(base, type=_sdk.MESSAGE, text=text),
            tenant=tenant,
            reply_to=reply_to if token.get("conversation_type") == "channel" else None,
        )

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
            remember_feedback=self._remember_feedback,
            stop_answer=self._stop_answer,
            feedback_enabled=self._feedback_enabled,
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
            return await self._on_invoke(inb)
        log.debug("teams.ignored", type=inb.type if inb.type in _IGNORED_TYPES else "other")
        return web.Response(status=200)

    # ------------------------------------------------------------------ messages
    async def _on_message(self, inb: acts.Inbound, rt: Runtime) -> None:
        if inb.from_id == inb.recipient_id or (self.app_id and inb.from_id == f"28:{self.app_id}"):
            log.debug("teams.ignored", why="own message")
            return
        form_click = compose.parse_form_click(inb.value)
        if form_click is not None:
            # A button of a Dify Human Input form card (Action.Submit with the inputs).
            await self._on_form_click(inb, rt, *form_click)
            return
        if compose.is_reset_click(inb.value):
            # A card button click: Teams sends it as a message without text or mention.
            await self._on_reset_click(inb, rt)
            return
        if compose.is_stop_click(inb.value):
            await self._on_stop_click(inb, rt)
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
            event_id=_event_id(inb),
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

    # ------------------------------------------------------------------ New topic button
    async def _on_reset_click(self, inb: acts.Inbound, rt: Runtime) -> None:
        """Forget the thread's Dify conversation (``Bridge.reset``), then say so in the thread.

        The reset is done before the 200, so a question sent right after the click already
        starts the new conversation; the confirmation is posted in the background."""
        key = acts.thread_key(inb)
        route = self.ctx.bridge.route_for(key)
        if route is None or not route.config.dify.mode.is_chat:
            log.info("teams.reset_click_ignored", why="no chat route for this thread")
            return
        try:
            if not await self._kv.claim(_event_id(inb)):
                log.info("teams.reset_click_duplicate")
                return
            await self.ctx.bridge.reset(thread=key)
            text = RESET_DONE
        except RedisError as e:
            log.warning("teams.reset_failed", error=type(e).__name__)
            text = RESET_FAILED
        # Answer under the card that was clicked (in channels: in its reply chain).
        place = replace(acts.place(inb), reply_to_id=inb.reply_to_id or inb.id)
        spawn(self._say(EditReply(rt, place, key), text), name=f"teams-reset-{key.log_id}")

    # ------------------------------------------------------------------ Human Input forms
    async def _on_form_click(
        self, inb: acts.Inbound, rt: Runtime, form_key: str, action: str, values: dict[str, str]
    ) -> None:
        """Answer the form in the background (the 200 goes out at once); a redelivered click
        is dropped by its activity id."""
        try:
            if not await self._kv.claim(_event_id(inb)):
                log.info("teams.form_click_duplicate")
                return
        except RedisError as e:
            log.warning("teams.form_click_dedup_failed", error=type(e).__name__)
        spawn(
            self._answer_form(inb, rt, form_key, action, values),
            name=f"teams-form-{_short(inb.conversation_id)}",
        )

    async def _answer_form(
        self, inb: acts.Inbound, rt: Runtime, form_key: str, action: str, values: dict[str, str]
    ) -> None:
        key = acts.thread_key(inb)
        place = acts.place(inb)
        # The rest of the answer: in 1:1 chats streamed, elsewhere edits, like any answer.
        reply = StreamReply(rt, place, key) if place.personal else EditReply(rt, place, key)
        note = EditReply(rt, replace(place, reply_to_id=inb.reply_to_id or inb.id), key)
        click = FormAnswer(
            form_key,
            action,
            values,
            Responder(id=inb.aad_object_id or inb.from_id, name=inb.from_name or "Someone"),
        )
        try:
            result = await self.ctx.bridge.answer_form(key, click, reply, self.limits)
        except Exception as e:  # the clicker always hears back
            log.warning("teams.form_failed", error=type(e).__name__)
            await self._say(note, "I couldn't send your answer. Please try again in a minute.")
            return
        log.info("teams.form_answered", outcome=result.outcome.value)
        if result.closed and result.form is not None and inb.reply_to_id:
            try:
                await note.show_card(inb.reply_to_id, compose.closed_form_part(result.form, result))
            except PlatformError as e:
                log.info("teams.form_card_update_failed", code=e.code)
        if result.outcome is not Outcome.ACCEPTED:
            await self._say(note, _for_clicker(inb.from_name, result))

    async def _on_stop_click(self, inb: acts.Inbound, rt: Runtime) -> None:
        """The Stop button under an answer being written (group chats, channels): stop the
        thread's running answer; it then ends with what was written and a "stopped" note."""
        key = acts.thread_key(inb)
        try:
            stopped = await self.ctx.bridge.stop(thread=key)
        except Exception as e:  # Redis or Dify down: say there is nothing stopped, never crash
            log.warning("teams.stop_failed", error=type(e).__name__)
            stopped = False
        if stopped:
            return
        place = replace(acts.place(inb), reply_to_id=inb.reply_to_id or inb.id)
        spawn(
            self._say(EditReply(rt, place, key), NOTHING_TO_STOP), name=f"teams-stop-{key.log_id}"
        )

    async def _say(self, reply: EditReply, text: str) -> None:
        try:
            await reply.say(text)
        except PlatformError as e:
            log.warning("teams.reset_reply_failed", code=e.code)

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

    # ------------------------------------------------------------------ feedback
    async def _on_invoke(self, inb: acts.Inbound) -> web.StreamResponse:
        value = inb.value if isinstance(inb.value, dict) else {}
        if inb.name != "message/submitAction" or value.get("actionName") != "feedback":
            log.debug("teams.invoke_ignored", name=inb.name or "")
            return web.Response(status=200)
        raw_action = value.get("actionValue")
        action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
        reaction = action.get("reaction")
        if reaction not in ("like", "dislike"):
            log.info("teams.feedback_unreadable")
            return _invoke_message(FEEDBACK_UNPLACED)
        comment = _feedback_text(action.get("feedback"))
        key = acts.thread_key(inb)
        try:
            placed = await asyncio.wait_for(
                self._send_feedback(key, inb.reply_to_id, reaction, comment), FEEDBACK_TIMEOUT
            )
        except Exception as e:
            # The click still succeeds in Teams; the log says why Dify did not get it.
            log.warning("teams.feedback_failed", error=type(e).__name__)
            placed = True
        if not placed:
            return _invoke_message(FEEDBACK_UNPLACED)
        # Teams wants 200 with an empty body, or it shows an error to the user.
        return web.Response(status=200)

    async def _send_feedback(
        self, key: ThreadKey, activity_id: str | None, reaction: str, comment: str | None
    ) -> bool:
        """Send the rating to Dify; False when the rated answer is unknown.

        Real Teams names the rated message (``replyToId``); the Agents Playground does not, and
        then the thread's latest answer is the one rated."""
        field = f"fb:{activity_id}" if activity_id else FEEDBACK_LATEST
        message_id = await self._kv.get(field, thread=key)
        if message_id is None:
            log.info("teams.feedback_unknown_message", named=bool(activity_id))
            return False
        await self.ctx.bridge.feedback(
            thread=key,
            message_id=message_id,
            rating=cast(Literal["like", "dislike"], reaction),
            content=comment,
        )
        return True

    async def _remember_feedback(self, key: ThreadKey, activity_id: str, dify_id: str) -> None:
        ttl = int(self.ctx.settings.conversation_ttl_days * 86400)
        await self._kv.set_many(
            {f"fb:{activity_id}": dify_id, FEEDBACK_LATEST: dify_id}, ttl=ttl, thread=key
        )

    async def _stop_answer(self, key: ThreadKey) -> bool:
        return await self.ctx.bridge.stop(thread=key)

    def _feedback_enabled(self, route_name: str | None) -> bool:
        route = self.ctx.bridge.route_named(route_name) if route_name else None
        return route.config.feedback_buttons if route is not None else True


def _for_clicker(name: str, result: FormResult) -> str:
    """Teams has no message only the clicker sees: name them in the thread."""
    text = result.message
    if result.outcome is Outcome.ALREADY_DECIDED:
        text += " Your choice was not sent."
    return f"{name}: {text}" if name else text


def _invoke_message(text: str) -> web.Response:
    """A polite invoke response: 200 (never a 4xx, which Teams shows as an error) with a
    message Teams may show the user."""
    return web.json_response(
        {"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text}
    )


def _feedback_text(raw: Any) -> str | None:
    """Teams sends the comment as a JSON string ``{"feedbackText": "..."}``."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:2000]
    text = data.get("feedbackText") if isinstance(data, dict) else None
    return text[:2000] if isinstance(text, str) and text.strip() else None


def _event_id(inb: acts.Inbound) -> str:
    # Channel message ids are millisecond timestamps, unique per conversation only: scope them
    # so two channels posting in the same millisecond never collide.
    return f"{inb.id}@{_short(inb.base_conversation_id)}"


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _https_or_loopback(url: str) -> bool:
    return url.startswith("https://") or is_loopback_url(url)


def _any_https_or_verified(url: str) -> bool:
    # With an app id every serviceUrl we call came from a JWT-verified activity whose
    # ``serviceurl`` claim matched it.
    return url.startswith(("https://", "http://"))
