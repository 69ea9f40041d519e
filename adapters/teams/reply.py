"""Reply handles: how one answer appears in Teams.

* :class:`EditReply` (channels, group chats): a placeholder message grown with ``PUT`` edits at
  the pace the core's edit scheduler sets; 429s surface as ``PlatformRateLimited``.
* :class:`StreamReply` (1:1 chats): Teams' streaming protocol. An informative ``typing`` activity
  first (its 201 answer carries the stream id), then ``typing`` updates with the full text so far
  and ``streamSequence`` + 1, at least 1 s apart, then the ``final`` message. Streams must end
  within 2 minutes: past ``stream_window`` the stream is finished and the answer continues as
  edits of that message. A ``403 ContentStreamNotAllowed`` "cancel" means the user pressed Stop:
  the Dify task is stopped through the bridge.

A finished answer that needs several messages (size limit) keeps track of which parts went out,
so the core retrying ``finish`` after a 429 never posts a part twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from adapters.teams import _sdk, compose
from adapters.teams.activities import Place
from adapters.teams.connector import (
    BotConnector,
    MessageGone,
    StreamingUnsupported,
    StreamRejected,
)
from app.errors import PlatformError, PlatformRateLimited
from app.pipeline.forms import HumanForm
from app.pipeline.model import ReplyExtras, ThreadKey
from app.server.tasks import spawn

log = structlog.get_logger(__name__)

STREAM_MIN_GAP = 1.0
FAIL_ATTEMPTS = 3
FAIL_MAX_WAIT = 30.0


@dataclass
class Runtime:
    """What every reply handle shares: the client and the callbacks into the core."""

    connector: BotConnector
    remember_feedback: Callable[[ThreadKey, str, str], Awaitable[None]]
    stop_answer: Callable[[ThreadKey], Awaitable[bool]]
    feedback_enabled: Callable[[str | None], bool]
    stream_window: float = 100.0
    # Whether a route shows the "New topic" button (route switch on and a chat-mode app).
    reset_enabled: Callable[[str | None], bool] = lambda _route: False
    # Whether "New topic" is one of a route's reset words (1:1 offers it as a suggested action).
    reset_by_word: Callable[[str | None], bool] = lambda _route: False
    # The Dify API origin of a route, for Dify's relative file URLs (``/files/tools/...``).
    dify_origin: Callable[[str | None], str | None] = lambda _route: None


class EditReply:
    """Placeholder + ``update_activity`` edits (channels and group chats)."""

    def __init__(self, rt: Runtime, place: Place, key: ThreadKey) -> None:
        self.rt = rt
        self.place = place
        self.key = key
        self.message_id: str | None = None
        self._delivered = 0  # parts of the final answer already visible
        self._last_id: str | None = None
        self._placeholder: asyncio.Task[None] | None = None
        self._placeholder_sending = False
        self._grown = False  # the answer's first words are out
        self._base = _sdk.base_activity(
            bot=place.bot,
            user=place.user,
            conversation=place.conversation,
            reply_to_id=place.reply_to_id,
        )

    def resume_token(self) -> dict[str, str]:
        """Ids another replica needs to close this answer if our process dies (no text)."""
        p = self.place
        return {
            "service_url": p.service_url,
            "conversation_id": p.conversation_id,
            "conversation": json.dumps(p.conversation),
            "conversation_type": p.conversation_type,
            "reply_to_id": p.reply_to_id or "",
            "bot_id": p.bot[0],
            "bot_name": p.bot[1],
            "tenant": p.tenant_id,
            "activity_id": self.message_id or "",
        }

    # -------------------------------------------------------------- Reply protocol
    async def start(self, placeholder: str) -> None:
        # Returns at once, so Dify starts streaming meanwhile. When many answers start together
        # the tenant's request budget is short: if the first text comes before the placeholder
        # got its turn, the placeholder is dropped and the text is the first message.
        self._placeholder = spawn(
            self._post_placeholder(placeholder), name=f"teams-placeholder-{self.key.log_id}"
        )

    async def _post_placeholder(self, text: str) -> None:
        await self.rt.connector.slot(self.place.tenant_id, urgent=True)
        self._placeholder_sending = True  # from here on it is sent, never cancelled
        try:
            try:
                self.message_id = await self._post(compose.Part(text=text), paced=False)
            except PlatformRateLimited as e:
                await asyncio.sleep(e.retry_after)
                await _patient(lambda: self._show(text))
        except PlatformError as e:
            # Not fatal: the first update posts a new message instead.
            log.warning("teams.placeholder_failed", code=e.code)

    async def _settle(self) -> None:
        """Before touching the message: the placeholder is out, or will never be."""
        task, self._placeholder = self._placeholder, None
        if task is None:
            return
        if not self._placeholder_sending:
            task.cancel()
        await asyncio.wait([task])

    async def update(self, text: str, *, status: str | None = None) -> None:
        await self._settle()
        shown = compose.interim(text, status)
        if not shown:
            return  # nothing visible yet (an answer starting with "## "): keep the placeholder
        # The growing answer and its Stop button: one message (a carousel, see compose.layout).
        # The first words go with the tenant's urgent calls; later edits only refresh them.
        await self._show_part(
            compose.Part(text=shown, attachments=[compose.stop_card()]), urgent=not self._grown
        )
        self._grown = True

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        await self._settle()
        await self._deliver(self._final_parts(text, extras), extras)

    def _final_parts(self, text: str, extras: ReplyExtras) -> list[compose.Part]:
        personal = self.place.personal
        route = extras.route
        return compose.final_parts(
            text,
            extras,
            feedback=self.rt.feedback_enabled(route),
            suggestions=personal,
            reset=self.rt.reset_enabled(route) and (not personal or self.rt.reset_by_word(route)),
            file_origin=self.rt.dify_origin(route),
            personal=personal,
        )

    async def fail(self, message: str, *, ref: str) -> None:
        await self._settle()
        text = compose.error_text(message, ref)
        await _patient(lambda: self._show(text))

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        """The answer so far (in the progress message), then each form as a card."""
        await self._settle()
        parts = (
            [compose.Part(text=compose.plain(text), entities=[dict(compose.AI_LABEL)])]
            if text.strip()
            else []
        )
        parts += [
            compose.form_part(f, extras.notices if i == 0 else []) for i, f in enumerate(forms)
        ]
        # Like _deliver: a retry after a 429 never posts a part twice.
        while self._delivered < len(parts):
            i = self._delivered
            if i == 0 and self.message_id is not None:
                try:
                    await self._put(self.message_id, parts[0])
                except MessageGone:
                    self.message_id = None
                    continue
            else:
                posted = await self._post(parts[i])
                if i == 0:
                    self.message_id = posted
            self._delivered += 1

    async def show_card(self, activity_id: str, part: compose.Part) -> None:
        """Replace one of the bot's messages (a form card once it was decided)."""
        await _patient(lambda: self._put(activity_id, part))

    async def say(self, text: str) -> None:
        """One short message of the bot's own (not an answer), e.g. after a button click."""
        await _patient(lambda: self._show(compose.plain(text)))

    # -------------------------------------------------------------- helpers
    def _activity(
        self,
        part: compose.Part,
        *,
        activity_id: str | None = None,
        type: str = _sdk.MESSAGE,
        entities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return _sdk.build_activity(
            self._base,
            type=type,
            text=part.text,
            entities=(part.entities + (entities or [])) or None,
            channel_data=part.channel_data,
            attachments=part.attachments or None,
            suggested=part.suggested or None,
            activity_id=activity_id,
            attachment_layout=compose.layout(part),
        )

    async def _post(
        self, part: compose.Part, *, urgent: bool = True, paced: bool = True, **kw: Any
    ) -> str | None:
        p = self.place
        # Channels: reply into the chain; chats have no chains, a plain send is the reply.
        reply_to = p.reply_to_id if p.conversation_type == "channel" else None
        sent = await self.rt.connector.post(
            p.service_url,
            p.conversation_id,
            self._activity(part, **kw),
            tenant=p.tenant_id,
            reply_to=reply_to,
            urgent=urgent,
            paced=paced,
        )
        return sent.id

    async def _put(self, activity_id: str, part: compose.Part, *, urgent: bool = True) -> None:
        p = self.place
        await self.rt.connector.put(
            p.service_url,
            p.conversation_id,
            activity_id,
            self._activity(part, activity_id=activity_id),
            tenant=p.tenant_id,
            urgent=urgent,
        )

    async def _show(self, text: str, *, urgent: bool = True) -> None:
        await self._show_part(compose.Part(text=text), urgent=urgent)

    async def _show_part(self, part: compose.Part, *, urgent: bool = True) -> None:
        """Make the answer's message show ``part``: edit it, or post it if there is none.

        ``urgent``: placeholders, errors and final text go before interim edits when the
        tenant's request budget is short."""
        if self.message_id is not None:
            try:
                await self._put(self.message_id, part, urgent=urgent)
                return
            except MessageGone:
                log.info("teams.message_gone")  # deleted meanwhile: continue in a new one
                self.message_id = None
        # The first message of the answer (no placeholder) goes ahead of other answers' edits.
        self.message_id = await self._post(part, urgent=True)

    async def _deliver(self, parts: list[compose.Part], extras: ReplyExtras) -> None:
        while self._delivered < len(parts):
            i = self._delivered
            part = parts[i]
            if i == 0 and self.message_id is not None:
                try:
                    await self._put(self.message_id, part)
                except MessageGone:
                    self.message_id = None
                    continue
                self._last_id = self.message_id
            else:
                self._last_id = await self._post(part)
                if i == 0:
                    self.message_id = self._last_id
            self._delivered += 1
        await self._after_final(self._last_id, extras)

    async def _after_final(self, last_id: str | None, extras: ReplyExtras) -> None:
        if last_id and extras.dify_message_id:
            try:
                await self.rt.remember_feedback(self.key, last_id, extras.dify_message_id)
            except Exception as e:  # feedback is a bonus; the answer is out
                log.warning("teams.feedback_map_failed", error=type(e).__name__)


class StreamReply(EditReply):
    """Teams' streaming protocol in 1:1 chats, falling back to edits when it is unavailable."""

    def __init__(self, rt: Runtime, place: Place, key: ThreadKey) -> None:
        super().__init__(rt, place, key)
        self.stream_id: str | None = None
        self.sequence = 0
        self.mode = "stream"  # stream -> edit (window over, refused) | cancelled (user Stop)
        self._started = 0.0
        self._last_sent = float("-inf")
        self._last_status: str | None = None
        self._text = ""
        self._streamed = ""  # the last text the stream showed
        self._text_shown = False  # ask(): the stream's final message showed the text

    async def start(self, placeholder: str) -> None:
        self._started = time.monotonic()
        try:
            await _patient(lambda: self._send_stream("informative", placeholder))
        except StreamingUnsupported:
            log.info("teams.stream_unsupported")
            self.mode = "edit"
            await super().start(placeholder)
        except PlatformError as e:
            log.warning("teams.stream_start_failed", code=e.code)
            self.mode = "edit"

    async def update(self, text: str, *, status: str | None = None) -> None:
        if self.mode == "cancelled":
            return
        if self.mode == "edit":
            await super().update(text, status=status)
            return
        self._text = text
        if time.monotonic() - self._started > self.rt.stream_window:
            shown = compose.interim(text) or self._streamed or compose.plain("…")
            await self._close_stream(compose.Part(text=shown))
            return
        try:
            if not text:
                if status and status != self._last_status:
                    await self._send_stream("informative", status[:1000])
                    self._last_status = status
                return
            # Teams wants every streamed text to extend the previous one: the stream shows the
            # answer's complete blocks, rendered as the final message will be (never an empty
            # or half-converted bubble). A rewrite (Dify's message_replace) waits for the final
            # message, as does text beyond the streaming size cap.
            shown = compose.streamable(text)
            if (
                len(shown) <= len(self._streamed)
                or not shown.startswith(self._streamed)
                or len(shown) > compose.STREAM_TEXT_LIMIT
            ):
                return
            await self._send_stream("streaming", shown)
            self._streamed = shown
        except StreamRejected as e:
            self._on_rejected(e)

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        if self.mode == "cancelled":
            # The user pressed Stop: Teams already ended the stream with what had arrived.
            log.info("teams.stream_cancelled_finish")
            return
        if self.mode == "edit":
            await super().finish(text, extras)
            return
        parts = self._final_parts(text, extras)
        try:
            await self._close_stream(parts[0])
        except StreamRejected as e:
            self._on_rejected(e)
            if self.mode == "cancelled":
                return
            self.message_id = None  # post the whole answer as new messages
        else:
            self._delivered = 1
            self._last_id = self.message_id
        await self._deliver(parts, extras)

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        if self.mode == "cancelled":
            return
        if self.mode == "stream" and self.stream_id is not None:
            # The stream ends with the text so far; the forms follow as cards of their own.
            shown = compose.plain(text) if text.strip() else "The assistant needs an answer:"
            try:
                await self._close_stream(compose.Part(text=shown))
                self._text_shown = True
            except StreamRejected as e:
                self._on_rejected(e)
                if self.mode == "cancelled":
                    return
            self.message_id = None  # the cards are new messages, the streamed one stays
        self.mode = "edit"
        await super().ask("" if self._text_shown else text, forms, extras)

    async def fail(self, message: str, *, ref: str) -> None:
        if self.mode == "stream" and self.stream_id is not None:
            try:
                await _patient(
                    lambda: self._close_stream(compose.Part(text=compose.error_text(message, ref)))
                )
                return
            except PlatformError as e:
                log.warning("teams.stream_fail_failed", code=e.code)
                self.message_id = None
        self.mode = "edit"
        await super().fail(message, ref=ref)

    # -------------------------------------------------------------- protocol steps
    async def _send_stream(self, stream_type: str, text: str) -> None:
        gap = self._last_sent + STREAM_MIN_GAP - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)  # Teams allows one streaming request per second
        info: dict[str, Any] = {
            "type": "streaminfo",
            "streamType": stream_type,
            "streamSequence": self.sequence + 1,
        }
        if self.stream_id is not None:
            info["streamId"] = self.stream_id
        activity = self._activity(compose.Part(text=text), type=_sdk.TYPING, entities=[info])
        activity.pop("textFormat", None)
        p = self.place
        sent = await self.rt.connector.post(
            p.service_url,
            p.conversation_id,
            activity,
            tenant=p.tenant_id,
            urgent=stream_type == "informative",
        )
        self._last_sent = time.monotonic()
        self.sequence += 1
        if self.stream_id is None:
            if not sent.id:
                raise PlatformError("stream start returned no id", code="no_stream_id")
            self.stream_id = sent.id

    async def _close_stream(self, part: compose.Part) -> None:
        """Send the ``final`` message; afterwards the answer is an ordinary editable message."""
        gap = self._last_sent + STREAM_MIN_GAP - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        info = {"type": "streaminfo", "streamType": "final", "streamId": self.stream_id}
        p = self.place
        sent = await self.rt.connector.post(
            p.service_url,
            p.conversation_id,
            self._activity(part, entities=[info]),
            tenant=p.tenant_id,
        )
        self._last_sent = time.monotonic()
        self.mode = "edit"
        self.message_id = sent.id or self.stream_id
        log.info("teams.stream_closed", seconds=round(time.monotonic() - self._started, 1))

    def _on_rejected(self, e: StreamRejected) -> None:
        if e.cancelled_by_user:
            self.mode = "cancelled"
            log.info("teams.stream_cancelled_by_user")
            spawn(self._stop(), name=f"teams-stop-{self.key.log_id}")
        else:
            log.info("teams.stream_refused", detail=str(e)[:120])
            self.mode = "edit"
            self.message_id = None  # continue in a second message

    async def _stop(self) -> None:
        try:
            await self.rt.stop_answer(self.key)
        except Exception as e:
            log.warning("teams.stop_failed", error=type(e).__name__)


async def _patient(op: Callable[[], Awaitable[None]]) -> None:
    """Run a call that must not be dropped (placeholder, error text), waiting out 429s."""
    waited = 0.0
    for attempt in range(FAIL_ATTEMPTS):
        try:
            await op()
            return
        except PlatformRateLimited as e:
            if attempt == FAIL_ATTEMPTS - 1 or waited + e.retry_after > FAIL_MAX_WAIT:
                raise PlatformError("Teams kept rate limiting", code="ratelimited") from e
            waited += e.retry_after
            await asyncio.sleep(e.retry_after)
