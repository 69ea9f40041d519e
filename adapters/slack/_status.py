"""The thread's status line and title in Slack's agent view, for one answer.

``assistant.threads.setStatus`` shows progress without a message; Slack clears it after two
minutes without one, so it is set again before then, and Slack clears it itself when the app
replies in the thread.
"""

from __future__ import annotations

import asyncio

import structlog

from adapters.slack._budget import MethodWindow
from adapters.slack._session import AgentSession
from adapters.slack._webapi import SlackApi, SlackCallError, error_code
from app.errors import PlatformRateLimited

log = structlog.get_logger(__name__)

# assistant.threads.setStatus clears itself after two minutes without a message.
STATUS_REFRESH_SECONDS = 90.0


class ThreadStatus:
    """The status line ("Thinking…", "Using tool: …") and title of one thread."""

    def __init__(
        self, api: SlackApi, *, channel: str, thread_ts: str, titles: MethodWindow | None
    ) -> None:
        self._api = api
        self._channel = channel
        self._thread_ts = thread_ts
        self._titles = titles
        self._task: asyncio.Task[None] | None = None
        self.on = False
        self.text = ""

    async def set(self, status: str) -> bool:
        """Show ``status`` ("" clears it); False when Slack refused (no agent features here)."""
        try:
            await self._api.call(
                "assistant.threads.setStatus",
                channel_id=self._channel,
                thread_ts=self._thread_ts,
                status=status,
            )
        except (SlackCallError, PlatformRateLimited) as e:
            log.info("slack.status_unavailable", code=error_code(e))
            return False
        self.on = bool(status)
        self.text = status
        return True

    def keep_alive(self) -> None:
        """Set the status again before Slack clears it, until :meth:`stop`."""
        self._task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(STATUS_REFRESH_SECONDS)
            if not self.on or not await self.set(self.text):
                return

    async def clear(self) -> None:
        if self.on:
            await self.set("")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def replied(self) -> None:
        """The app posted in the thread: Slack cleared the status itself."""
        self.on = False
        self.stop()

    async def set_title(self, title: str, session: AgentSession | None) -> None:
        """The thread's title in the agent view's Messages tab (best effort): the agent
        session's title where there is one (``session``, once begun), else the assistant
        thread's."""
        if self._titles is not None and not await self._titles.try_take():
            log.info("slack.title_skipped", reason="tier_budget")
            return
        if session is not None and await session.rename(title):
            return
        try:
            await self._api.call(
                "assistant.threads.setTitle",
                channel_id=self._channel,
                thread_ts=self._thread_ts,
                title=title[:100],
            )
        except (SlackCallError, PlatformRateLimited) as e:
            log.info("slack.title_unavailable", code=error_code(e))
