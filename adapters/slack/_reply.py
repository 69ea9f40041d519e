"""The Slack :class:`app.pipeline.model.Reply` handle: one answer in one thread.

Progress shows on the thread's status line (``assistant.threads.setStatus``, refreshed before
Slack clears it after two minutes), or in a "Thinking…" message where that is not available.
The text then appears as a message in the thread and grows with ``chat.update`` (the core's edit
scheduler paces the calls; :mod:`._budget` keeps Slack's per-method limits), or with Slack's
native streaming (``chat.startStream`` / ``appendStream`` / ``stopStream``) when the route
enables it. An answer longer than one message continues in further messages; a message deleted
meanwhile is posted anew.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from dataclasses import dataclass

import aiohttp
import structlog

from adapters.slack import _blocks as B
from adapters.slack import _forms as F
from adapters.slack._budget import ChannelPacer, MethodWindow, UpdateBudget
from adapters.slack._files import upload_out_files, upload_text
from adapters.slack._native import NativeStream, Refusals
from adapters.slack._session import AgentSession
from adapters.slack._status import ThreadStatus
from adapters.slack._webapi import SlackApi, SlackCallError
from app.errors import PlatformError, PlatformRateLimited
from app.pipeline.forms import HumanForm
from app.pipeline.model import ReplyExtras, Step

log = structlog.get_logger(__name__)

# How long fail() waits out rate limits before giving up: the error must land.
_FAIL_MAX_WAIT = 30.0
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
# The stream ended under us (Slack expires streams after ~5 minutes): finish with edits.
_NOT_STREAMING = frozenset({"message_not_in_streaming_state", "streaming_state_conflict"})
_POST_MAX_WAIT = 10.0
# A final text waits its turn in a busy channel (Slack: ~1 post per second per channel) rather
# than draw a 429 it might not recover from; bounded so a stuck clock cannot park an answer.
_FINAL_POST_MAX_WAIT = 300.0


class _Skip(Exception):
    """An interim edit that the budgets cannot afford now: skipped, the next one catches up."""


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    """Per-route switches that shape the answer (from the route's config)."""

    native_streaming: bool = False
    # Native streaming: Dify's steps as "timeline" cards or one "plan" block.
    task_display: str = "timeline"
    feedback_buttons: bool = True
    suggested_questions: bool = True
    stop_button: bool = True
    # "New topic" under finished answers: only for chat apps that keep a conversation.
    reset_button: bool = False


class SlackReply:
    """One answer in one Slack thread. Created per message; cheap until :meth:`start`."""

    def __init__(
        self,
        api: SlackApi,
        session: aiohttp.ClientSession,
        *,
        channel: str,
        thread_ts: str,
        team: str,
        user: str,
        options: ReplyOptions,
        dify_origin: str | None = None,
        is_dm: bool = False,
        updates: UpdateBudget | None = None,
        posts: ChannelPacer | None = None,
        streams: MethodWindow | None = None,
        appends: MethodWindow | None = None,
        refusals: Refusals | None = None,
        titles: MethodWindow | None = None,
        session_refusals: Refusals | None = None,
        sessions: MethodWindow | None = None,
    ) -> None:
        self._api = api
        self._session = session
        self._channel = channel
        self._thread_ts = thread_ts
        self._team = team
        self._user = user
        self._opt = options
        self._dify_origin = dify_origin
        self._is_dm = is_dm
        # One entry per Slack message of this answer: its ts and what it shows now.
        self._ts: list[str] = []
        self._shown: list[str] = []
        self._refusals = refusals
        # DMs with an agent app are agent sessions (Slack's own Stop button, titles).
        self._agent_session = (
            AgentSession(
                api,
                team=team,
                channel=channel,
                thread_ts=thread_ts,
                refusals=session_refusals,
                window=sessions,
            )
            if is_dm and session_refusals is not None
            else None
        )
        self._session_begun = False
        refused = refusals.refused(team, is_dm) if refusals is not None else None
        self._native = options.native_streaming and refused is None
        self._stream: NativeStream | None = None
        self._steps: tuple[Step, ...] = ()
        self._status = ThreadStatus(api, channel=channel, thread_ts=thread_ts, titles=titles)
        self._updates = updates
        self._posts = posts
        self._reserved = False
        # Names this answer's reservation in the workspace's shared chat.update budget.
        self._holder = secrets.token_hex(8)
        self._streams = streams
        self._appends = appends

    def resume_token(self) -> dict[str, str]:
        """Ids another replica needs to close this answer if our process dies (no text)."""
        return {
            "team": self._team,
            "channel": self._channel,
            "thread_ts": self._thread_ts,
            "ts": self._ts[0] if self._ts else "",
        }

    def show_steps(self, steps: tuple[Step, ...]) -> None:
        # Shown as task cards by native streaming; the status line covers the edit path.
        self._steps = steps

    @property
    def message_ts(self) -> list[str]:
        """The ts of every message this answer occupies (first is the placeholder)."""
        return list(self._ts)

    # ---------------------------------------------------------------- Reply protocol

    async def start(self, placeholder: str) -> None:
        # Progress on the thread's status line costs no message and no chat.update: the first
        # text then arrives as a new message. Without status support, a placeholder message.
        if self._agent_session is not None:
            await self._agent_session.begin()
            self._session_begun = self._agent_session.open
        if await self._status.set(placeholder):
            self._status.keep_alive()
            return
        await self._reserve(force=True)
        payload = [(B.fallback_text(placeholder), self._streaming_blocks("", placeholder))]
        for attempt in range(3):
            try:
                await self._sync(payload, final=True)
                return
            except PlatformRateLimited as e:
                # start() has no scheduler behind it to retry: wait a little ourselves.
                if attempt == 2 or e.retry_after > _POST_MAX_WAIT:
                    raise
                await asyncio.sleep(e.retry_after)

    async def update(self, text: str, *, status: str | None = None) -> None:
        nothing_shown = not self._ts and (self._stream is None or not self._stream.message_ts)
        if nothing_shown and status and self._status.on and status != self._status.text:
            await self._status.set(status)
        if nothing_shown and not text.strip():
            return
        if self._native and await self._native_update(text):
            return
        if not self._ts and not await self._reserve():
            return  # the status line shows progress; the text comes with a later edit
        parts = B.split(text, final=False) if text.strip() else [""]
        payloads = [(B.fallback_text(p, final=False), B.answer_blocks(p)) for p in parts[:-1]]
        payloads.append(
            (
                B.fallback_text(parts[-1], final=False, default=status),
                self._streaming_blocks(parts[-1], status),
            )
        )
        try:
            await self._sync(payloads, final=False)
        except _Skip:
            if not self._ts:
                self._unreserve()

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        self._status.stop()
        tail = B.final_extras_blocks(
            extras,
            feedback=self._opt.feedback_buttons,
            suggested=self._opt.suggested_questions,
            reset=self._opt.reset_button,
        )
        streamed = self._native and await self._native_finish(text, extras)
        if self._agent_session is not None:
            if streamed:
                self._agent_session.ended_by_stream()
            else:
                await self._agent_session.end()
        if not streamed:
            parts = B.split(text)
            payloads = [(B.fallback_text(p), B.answer_blocks(p)) for p in parts]
            last_text, last_blocks = payloads[-1]
            payloads[-1] = (last_text, last_blocks + tail)
            await self._sync(payloads, final=True)
        self._unreserve()
        if extras.full_text_file is not None and not await upload_text(
            self._api,
            self._session,
            extras.full_text_file,
            name="answer.md",
            channel=self._channel,
            thread_ts=self._thread_ts,
        ):
            await self._post_quietly(
                "I couldn't attach the whole answer as a file; the part above is all I can show."
            )
        if self._is_dm and extras.conversation_name:
            session = self._agent_session if self._session_begun else None
            await self._status.set_title(extras.conversation_name, session)
        if extras.files:
            failed = await upload_out_files(
                self._api,
                self._session,
                extras.files,
                channel=self._channel,
                thread_ts=self._thread_ts,
                dify_origin=self._dify_origin,
            )
            if failed:
                await self._post_quietly(
                    f"I couldn't attach {len(failed)} file(s) the assistant produced: "
                    + ", ".join(failed)
                )

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        """The answer so far, then one message per form (inputs and buttons)."""
        self._status.stop()
        payloads: list[tuple[str, list[B.Block]]] = []
        if text.strip():
            payloads += [(B.fallback_text(p), B.answer_blocks(p)) for p in B.split(text)]
        for i, form in enumerate(forms):
            notes = extras.notices if i == 0 else []
            payloads.append((F.fallback(form), F.form_blocks(form, notes)))
        if self._stream is not None and self._stream.message_ts:
            await self._leave_native()
        await self._sync(payloads, final=True)
        self._unreserve()
        await self._status.clear()
        if self._agent_session is not None:
            # The run waits for a person, not for us: Slack's Stop button would stop nothing.
            await self._agent_session.end()

    async def fail(self, message: str, *, ref: str) -> None:
        self._status.stop()
        await self._status.clear()
        if self._agent_session is not None:
            await self._agent_session.end()
        text = f"{message}\n\n(Reference: {ref})"
        parts = B.split(message) if message.strip() else [""]
        payloads = [(B.fallback_text(p), B.answer_blocks(p)) for p in parts[:-1]]
        payloads.append((B.fallback_text(text), B.error_blocks(parts[-1], ref)))
        waited = 0.0
        while True:
            try:
                if self._stream is not None and self._stream.message_ts:
                    # The streamed message (partial answer) becomes the error message.
                    await self._leave_native()
                await self._sync(payloads, final=True)
                self._unreserve()
                return
            except PlatformRateLimited as e:
                if waited + e.retry_after > _FAIL_MAX_WAIT:
                    log.error("slack.fail_undeliverable", reason="ratelimited")
                    self._unreserve()
                    return
                waited += e.retry_after
                await asyncio.sleep(e.retry_after)
            except PlatformError as e:
                log.error("slack.fail_undeliverable", code=e.code)
                self._unreserve()
                return

    # ---------------------------------------------------------------- message edits

    def _streaming_blocks(self, md: str, status: str | None) -> list[B.Block]:
        return B.streaming_blocks(md, status, stop_button=self._opt.stop_button)

    async def _reserve(self, *, force: bool = False) -> bool:
        """Hold the right to one final chat.update for this answer (see :mod:`._budget`)."""
        if self._reserved or self._updates is None:
            return True
        if force:
            self._updates.force_open(self._holder)
        elif not await self._updates.try_open(self._holder):
            return False
        self._reserved = True
        return True

    def _unreserve(self) -> None:
        if self._reserved and self._updates is not None:
            self._updates.release(self._holder)
        self._reserved = False

    async def _edit_allowed(self, *, final: bool) -> None:
        if self._updates is None:
            return
        if not final:
            if not await self._updates.try_interim(self._holder):
                raise _Skip
            return
        wait = await self._updates.take_final()
        if wait > 0:
            # Our own accounting says the workspace's minute is spent: back off without a 429.
            raise PlatformRateLimited(wait, method="chat.update")

    async def _sync(self, payloads: list[tuple[str, list[B.Block]]], *, final: bool) -> None:
        """Make the answer's messages show ``payloads``: edit what changed, post what is new.

        Interim calls (``final=False``) raise :class:`_Skip` when a budget says "not now"; what
        was already done is remembered, so the next call continues from there.
        """
        for i, (text, blocks) in enumerate(payloads):
            key = json.dumps([text, blocks], sort_keys=True, ensure_ascii=False)
            if i < len(self._ts):
                if self._shown[i] == key:
                    continue
                await self._edit_allowed(final=final)
                try:
                    await self._api.call(
                        "chat.update",
                        channel=self._channel,
                        ts=self._ts[i],
                        text=text,
                        blocks=blocks,
                    )
                except SlackCallError as e:
                    if e.code not in _GONE:
                        raise
                    # Someone deleted the message: carry on in a new one.
                    log.info("slack.message_gone", code=e.code)
                    self._ts[i] = await self._post(text, blocks, final=final)
                self._shown[i] = key
            else:
                self._ts.append(await self._post(text, blocks, final=final))
                self._shown.append(key)
                self._status.replied()  # Slack clears the status when the app replies
        # The answer got shorter (a moderation replace): remove the messages no longer needed.
        for i in range(len(payloads), len(self._ts)):
            if self._shown[i] != "":
                try:
                    await self._api.call("chat.delete", channel=self._channel, ts=self._ts[i])
                except SlackCallError as e:
                    log.info("slack.delete_failed", code=e.code)
                self._shown[i] = ""

    async def _post(self, text: str, blocks: list[B.Block], *, final: bool = True) -> str:
        if self._posts is not None:
            waited = 0.0
            while (wait := await self._posts.take(self._channel)) > 0:
                if not final:
                    raise _Skip
                if waited >= _FINAL_POST_MAX_WAIT:
                    break  # let Slack decide; a 429 is still handled by the caller
                waited += wait
                await asyncio.sleep(wait)
        data = await self._api.call(
            "chat.postMessage",
            channel=self._channel,
            thread_ts=self._thread_ts,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        ts = data.get("ts")
        if not isinstance(ts, str):
            raise PlatformError("chat.postMessage returned no ts", code="no_ts")
        return ts

    async def _post_quietly(self, text: str) -> None:
        try:
            await self._post(text, [])
        except Exception as e:
            log.warning("slack.notice_failed", error=type(e).__name__)

    # ---------------------------------------------------------------- native streaming

    def _recipient(self) -> dict[str, str]:
        # Required in channels (missing_recipient_* otherwise); DMs do without.
        return (
            {}
            if self._is_dm
            else {
                "recipient_user_id": self._user,
                "recipient_team_id": self._team,
            }
        )

    def _native_stream(self) -> NativeStream:
        if self._stream is None:
            self._stream = NativeStream(
                self._api,
                channel=self._channel,
                thread_ts=self._thread_ts,
                recipient=self._recipient(),
                task_display=self._opt.task_display,
                streams=self._streams,
                appends=self._appends,
            )
        return self._stream

    async def _native_update(self, text: str) -> bool:
        """Show ``text`` through the native stream; False means "use edits from now on"."""
        if self._ts and (self._stream is None or not self._stream.message_ts):
            # A placeholder message exists (streams start a new one): edits instead.
            await self._leave_native()
            return False
        stream = self._native_stream()
        try:
            shown = await stream.show(text, self._steps)
        except SlackCallError as e:
            self._refused(e)
            shown = False
        if not shown:
            await self._leave_native()
            return False
        if stream.message_ts:
            self._status.replied()  # Slack clears the status when the app replies
        return True

    async def _native_finish(self, text: str, extras: ReplyExtras) -> bool:
        if self._ts and (self._stream is None or not self._stream.message_ts):
            await self._leave_native()
            return False
        stream = self._native_stream()
        linked = [s for s in extras.sources if s.url]
        rest = dataclasses.replace(extras, sources=[s for s in extras.sources if not s.url])
        # The feedback buttons of agent messages; suggestions and "New topic" as before.
        tail = B.final_extras_blocks(
            rest,
            feedback=False,
            suggested=self._opt.suggested_questions,
            reset=self._opt.reset_button,
        )
        if self._opt.feedback_buttons and extras.dify_message_id:
            tail.insert(0, B.feedback_buttons_block(extras.dify_message_id, extras.route))
        try:
            done = await stream.finish(text, self._steps, linked, tail)
        except SlackCallError as e:
            self._refused(e)
            done = False
        if not done:
            await self._leave_native()
            return False
        self._native = False
        return True

    def _refused(self, e: SlackCallError) -> None:
        """Slack would not stream here: remember it (for later answers) unless it was passing
        trouble or the stream merely expired."""
        if e.retryable or e.code in _NOT_STREAMING or self._refusals is None:
            log.info("slack.native_stream_unavailable", code=e.code)
            return
        if self._refusals.refuse(self._team, self._is_dm, e.code):
            log.warning(
                "slack.native_streaming_refused",
                code=e.code,
                hint="answers use message edits; turn on the app's agent features "
                "(features.agent_view, scope chat:write) or set native_streaming: off",
            )

    async def _leave_native(self) -> None:
        """Continue with chat.update edits; streamed messages become the messages edited."""
        self._native = False
        stream = self._stream
        if stream is None or not stream.message_ts:
            return
        await stream.stop_quietly()
        # The stream died (~5 min), Slack refused a call, or the text was replaced: the
        # streamed messages are edited from now on (their text is rewritten, none is lost).
        streamed = [ts for ts in stream.message_ts if ts not in self._ts]
        self._ts[:0] = streamed
        self._shown[:0] = ["streamed"] * len(streamed)
        self._stream = None
