"""Slack agent sessions of one answer: ``agents.sessions.setStatus`` / ``rename``.

An agent's thread is a *session*. While it is ``processing`` Slack shows its own Stop button next
to the loading indicator; a click arrives as ``agent_session_stopped`` (the adapter stops the Dify
answer as the Stop button of the edit path does). The session leaves ``processing`` when the
answer ends: ``chat.stopStream`` does that itself (its ``session_status`` defaults to ``active``),
an answer delivered with edits calls ``setStatus(active)``. The title is the Dify conversation's
name (``agents.sessions.rename``).

Only apps declared as agents have sessions (and only in DMs do we open one): wherever Slack refuses,
the refusal is remembered for the workspace like a streaming refusal, and the answer goes on
without a session (``assistant.threads.setStatus`` still shows the loading state).
"""

from __future__ import annotations

import structlog

from adapters.slack._budget import MethodWindow
from adapters.slack._native import Refusals
from adapters.slack._webapi import SlackApi, SlackCallError
from app.errors import PlatformRateLimited

log = structlog.get_logger(__name__)

_TITLE = 200


class AgentSession:
    """The session of one DM thread while the bridge answers in it."""

    def __init__(
        self,
        api: SlackApi,
        *,
        team: str,
        channel: str,
        thread_ts: str,
        refusals: Refusals | None,
        window: MethodWindow | None = None,
    ) -> None:
        self._api = api
        self._team = team
        self._channel = channel
        self._thread_ts = thread_ts
        self._refusals = refusals
        # Slack documents no tier for agents.sessions.*: we assume Tier 4 and keep under it;
        # an answer beyond it goes without a session (the status line still shows progress).
        self._window = window
        self.open = False  # processing (Slack shows its Stop button)

    def _refused(self) -> bool:
        return self._refusals is not None and self._refusals.refused(self._team, True) is not None

    async def _call(self, method: str, **params: str) -> bool:
        try:
            await self._api.call(
                method, channel_id=self._channel, thread_ts=self._thread_ts, **params
            )
        except SlackCallError as e:
            if (
                not e.retryable
                and self._refusals is not None
                and self._refusals.refuse(self._team, True, e.code)
            ):
                log.warning(
                    "slack.agent_sessions_refused",
                    code=e.code,
                    hint="declare the app as an agent (features.agent_view) for "
                    "Slack's own Stop button and titles",
                )
            else:
                log.info("slack.agent_session_failed", method=method, code=e.code)
            return False
        except PlatformRateLimited:
            log.info("slack.agent_session_failed", method=method, code="ratelimited")
            return False
        return True

    async def begin(self) -> None:
        """The answer starts: ``processing`` (Slack's loading indicator with a Stop button)."""
        if self._refused() or (self._window is not None and not await self._window.try_take()):
            return
        self.open = await self._call("agents.sessions.setStatus", status="processing")

    async def end(self) -> None:
        """The answer ended without ``chat.stopStream`` (edits, an error): back to ``active``."""
        if self.open:
            self.open = False
            await self._call("agents.sessions.setStatus", status="active")

    def ended_by_stream(self) -> None:
        """``chat.stopStream`` moved the session to ``active`` already."""
        self.open = False

    async def rename(self, title: str) -> bool:
        """Title the session; False when there is no session to title."""
        if self._refused():
            return False
        return await self._call("agents.sessions.rename", title=title[:_TITLE])
