"""The Slack :class:`app.model.Reply` handle: one answer in one thread.

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
import json
from dataclasses import dataclass

import aiohttp
import structlog

from adapters.slack import _blocks as B
from adapters.slack import _forms as F
from adapters.slack._budget import ChannelPacer, MethodWindow, UpdateBudget
from adapters.slack._files import upload_out_files
from adapters.slack._webapi import SlackApi, SlackCallError
from app.errors import PlatformError, PlatformRateLimited
from app.forms import HumanForm
from app.model import ReplyExtras

log = structlog.get_logger(__name__)

# assistant.threads.setStatus clears itself after two minutes without a message.
STATUS_REFRESH_SECONDS = 90.0
# How long fail() waits out rate limits before giving up: the error must land.
_FAIL_MAX_WAIT = 30.0
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_NOT_STREAMING = frozenset({"message_not_in_streaming_state", "streaming_state_conflict"})
_POST_MAX_WAIT = 10.0
# A final text waits its turn in a busy channel (Slack: ~1 post per second per channel) rather
# than draw a 429 it might not recover from; bounded so a stuck clock cannot park an answer.
_FINAL_POST_MAX_WAIT = 300.0


def _defuse(md: str) -> str:
    """Stop ``<!channel>``, ``<!here>`` and ``<@U…>`` in streamed answer text from notifying anyone.

    A zero-width space after ``<`` keeps the text readable. It only inserts after ``<``, so the
    defused text of a longer answer still starts with that of a shorter one (deltas stay deltas).
    """
    return md.replace("<!", "<\u200b!").replace("<@", "<\u200b@") if "<" in md else md


class _Skip(Exception):
    """An interim edit that the budgets cannot afford now: skipped, the next one catches up."""


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    """Per-route switches that shape the answer (from the route's config)."""

    native_streaming: bool = False
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
        self._native = options.native_streaming
        self._stream_ts: str | None = None
        self._streamed = ""
        self._status_task: asyncio.Task[None] | None = None
        self._status_on = False
        self._status_text = ""
        self._updates = updates
        self._posts = posts
        self._reserved = False
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

    @property
    def message_ts(self) -> list[str]:
        """The ts of every message this answer occupies (first is the placeholder)."""
        return list(self._ts)

    # ---------------------------------------------------------------- Reply protocol

    async def start(self, placeholder: str) -> None:
        # Progress on the thread's status line costs no message and no chat.update: the first
        # text then arrives as a new message. Without status support, a placeholder message.
        if await self._set_status(placeholder):
            self._status_task = asyncio.create_task(self._refresh_status())
            return
        self._reserve(force=True)
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
        nothing_shown = not self._ts and self._stream_ts is None
        if nothing_shown and status and self._status_on and status != self._status_text:
            await self._set_status(status)
        if nothing_shown and not text.strip():
            return
        if self._native and await self._stream_update(text):
            return
        if not self._ts and not self._reserve():
            return  # the status line shows progress; the text comes with a later edit
        parts = B.split(text, final=False) if text.strip() else [""]
        payloads = [(B.fallback_text(p, final=False), B.answer_blocks(p)) for p in parts[:-1]]
        payloads.append(
            (
                B.fallback_text(parts[-1] or status or "…", final=False),
                self._streaming_blocks(parts[-1], status),
            )
        )
        try:
            await self._sync(payloads, final=False)
        except _Skip:
            if not self._ts:
                self._unreserve()

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        self._stop_status()
        tail = B.final_extras_blocks(
            extras,
            feedback=self._opt.feedback_buttons,
            suggested=self._opt.suggested_questions,
            reset=self._opt.reset_button,
        )
        if not (self._native and await self._stream_finish(text, tail)):
            parts = B.split(text)
            payloads = [(B.fallback_text(p), B.answer_blocks(p)) for p in parts]
            last_text, last_blocks = payloads[-1]
            payloads[-1] = (last_text, last_blocks + tail)
            await self._sync(payloads, final=True)
        self._unreserve()
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
        self._stop_status()
        payloads: list[tuple[str, list[B.Block]]] = []
        if text.strip():
            payloads += [(B.fallback_text(p), B.answer_blocks(p)) for p in B.split(text)]
        for i, form in enumerate(forms):
            notes = extras.notices if i == 0 else []
            payloads.append((F.fallback(form), F.form_blocks(form, notes)))
        if self._stream_ts is not None:
            await self._leave_native()
        await self._sync(payloads, final=True)
        self._unreserve()
        if self._status_on:
            await self._clear_status()

    async def fail(self, message: str, *, ref: str) -> None:
        self._stop_status()
        if self._status_on:
            await self._clear_status()
        text = f"{message}\n\n(Reference: {ref})"
        parts = B.split(message) if message.strip() else [""]
        payloads = [(B.fallback_text(p), B.answer_blocks(p)) for p in parts[:-1]]
        payloads.append((B.fallback_text(text), B.error_blocks(parts[-1], ref)))
        waited = 0.0
        while True:
            try:
                if self._stream_ts is not None:
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

    def _reserve(self, *, force: bool = False) -> bool:
        """Hold the right to one final chat.update for this answer (see :mod:`._budget`)."""
        if self._reserved or self._updates is None:
            return True
        if force:
            self._updates.force_open()
        elif not self._updates.try_open():
            return False
        self._reserved = True
        return True

    def _unreserve(self) -> None:
        if self._reserved and self._updates is not None:
            self._updates.release()
        self._reserved = False

    def _edit_allowed(self, *, final: bool) -> None:
        if self._updates is None:
            return
        if not final:
            if not self._updates.try_interim():
                raise _Skip
            return
        wait = self._updates.take_final()
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
                self._edit_allowed(final=final)
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
                self._status_on = False  # Slack clears the status when the app replies
                self._stop_status()
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
            while (wait := self._posts.take(self._channel)) > 0:
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

    async def _stream_update(self, text: str) -> bool:
        """Show ``text`` through the native stream; False means "use edits instead"."""
        text = _defuse(text)
        if len(text) > B.PART_LIMIT or (self._stream_ts and not text.startswith(self._streamed)):
            await self._leave_native()
            return False
        try:
            if self._stream_ts is None:
                if self._ts or (self._streams is not None and not self._streams.try_take()):
                    # A placeholder message exists (streams start a new one), or the
                    # workspace's stream starts are spent (Tier 2): edits instead.
                    await self._leave_native()
                    return False
                data = await self._api.call(
                    "chat.startStream",
                    channel=self._channel,
                    thread_ts=self._thread_ts,
                    markdown_text=text or None,
                    **self._recipient(),
                )
                ts = data.get("ts")
                if not isinstance(ts, str):
                    raise PlatformError("chat.startStream returned no ts", code="no_ts")
                self._stream_ts, self._streamed = ts, text
                self._status_on = False  # Slack clears the status when the app replies
                self._stop_status()
                return True
            delta = text[len(self._streamed) :]
            if delta and (self._appends is None or self._appends.try_take()):
                await self._api.call(
                    "chat.appendStream",
                    channel=self._channel,
                    ts=self._stream_ts,
                    markdown_text=delta,
                )
                self._streamed = text
            return True
        except SlackCallError as e:
            log.info("slack.native_stream_unavailable", code=e.code)
            await self._leave_native()
            return False

    async def _stream_finish(self, text: str, tail: list[B.Block]) -> bool:
        text = _defuse(text)
        if self._stream_ts is None and (self._ts or not await self._stream_update(text)):
            return False
        if len(text) > B.PART_LIMIT or not text.startswith(self._streamed):
            await self._leave_native()
            return False
        delta = text[len(self._streamed) :]
        try:
            await self._api.call(
                "chat.stopStream",
                channel=self._channel,
                ts=self._stream_ts,
                markdown_text=delta or None,
                blocks=tail or None,
            )
        except SlackCallError as e:
            if e.code not in _NOT_STREAMING:
                raise
            await self._leave_native()
            return False
        self._streamed = text
        self._stream_ts = None
        self._native = False
        return True

    async def _end_stream(self) -> None:
        ts, self._stream_ts = self._stream_ts, None
        if ts is None:
            return
        try:
            await self._api.call("chat.stopStream", channel=self._channel, ts=ts)
        except SlackCallError as e:
            log.info("slack.stop_stream_failed", code=e.code)

    async def _leave_native(self) -> None:
        """Continue with chat.update edits; a live stream is closed and becomes message one."""
        self._native = False
        ts = self._stream_ts
        if ts is None:
            return
        await self._end_stream()
        # The stream died (~5 min) or the text was replaced: the streamed message is edited now.
        self._ts.insert(0, ts)
        self._shown.insert(0, "streamed")

    # ---------------------------------------------------------------- assistant status

    async def _set_status(self, status: str) -> bool:
        try:
            await self._api.call(
                "assistant.threads.setStatus",
                channel_id=self._channel,
                thread_ts=self._thread_ts,
                status=status,
            )
        except (SlackCallError, PlatformRateLimited) as e:
            log.info("slack.status_unavailable", code=getattr(e, "code", "ratelimited"))
            return False
        self._status_on = bool(status)
        self._status_text = status
        return True

    async def _clear_status(self) -> None:
        await self._set_status("")

    async def _refresh_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_REFRESH_SECONDS)
            if not self._status_on or not await self._set_status(self._status_text):
                return

    def _stop_status(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            self._status_task = None
