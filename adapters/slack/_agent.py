"""Slack's agent messaging experience (``features.agent_view``) around the answers themselves.

* **Suggested prompts.** When someone opens the app's Messages tab (``app_home_opened`` with
  ``tab: "messages"``) or starts a new thread there, the Dify app's own greeting is offered: its
  suggested questions (``GET /parameters`` → ``suggested_questions``) as up to four prompts under
  its opening statement (``assistant.threads.setSuggestedPrompts``). Agent apps send no
  ``thread_ts``: Slack pins the prompts to the tab (with one, the call "silently fails"). Apps
  still on the legacy ``assistant_view`` get them per thread on ``assistant_thread_started``.
* **What the user is looking at.** ``app_context_changed`` lists the entities in view (a channel,
  ...). Only when a route maps the ``viewing`` input is it kept (in Redis, for an hour, per
  person) and passed to Dify with that person's next question.

Everything here is best effort: a failure costs the prompts or the context, never an answer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from adapters.slack._budget import MethodWindow
from adapters.slack._webapi import SlackApi, error_code
from app.errors import BridgeError

if TYPE_CHECKING:
    from app.config.settings import Route
    from app.dify.appcheck import AppParams
    from app.state.platform_store import PlatformStore

log = structlog.get_logger(__name__)

MAX_PROMPTS = 4  # assistant.threads.setSuggestedPrompts
_PROMPT_TITLE = 75
_HEADING = 150
_MESSAGE = 2000
# The tab's prompts are set again at most this often per DM (app_home_opened fires on every
# visit; setSuggestedPrompts is Tier 4 per workspace).
PROMPTS_EVERY = 600.0
# setSuggestedPrompts and setTitle are Tier 4 (100+/min per workspace): stay under it.
PROMPTS_PER_MINUTE = 90
TITLES_PER_MINUTE = 90
# agents.sessions.setStatus: two calls per answer (processing, then active) in a tier we assume
# to be Tier 4.
SESSIONS_PER_MINUTE = 45
VIEWING_TTL = 3600
_VIEWING_MAX = 500


@dataclass(frozen=True, slots=True)
class Prompts:
    heading: str | None
    prompts: tuple[dict[str, str], ...]

    @property
    def digest(self) -> str:
        raw = repr((self.heading, self.prompts)).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


def _title(question: str) -> str:
    q = " ".join(question.split())
    if len(q) <= _PROMPT_TITLE:
        return q
    cut = q[: _PROMPT_TITLE - 1].rsplit(" ", 1)[0] or q[: _PROMPT_TITLE - 1]
    return cut + "…"


def prompts_from(opening_statement: str, questions: tuple[str, ...]) -> Prompts | None:
    """Slack prompts from a Dify app's greeting; None when the app suggests no questions."""
    items = tuple(
        {"title": _title(q), "message": q[:_MESSAGE]} for q in questions[:MAX_PROMPTS] if q.strip()
    )
    if not items:
        return None
    heading = " ".join(opening_statement.split())
    if len(heading) > _HEADING:
        heading = heading[: _HEADING - 1].rsplit(" ", 1)[0] + "…"
    return Prompts(heading or None, items)


def describe_viewing(context: Any) -> str:
    """``app_context_changed``'s ``context.entities`` as one short line for Dify, most relevant
    first: ``slack#/types/channel_id`` C0123 becomes ``channel:C0123``."""
    entities = context.get("entities") if isinstance(context, dict) else None
    out: list[str] = []
    for e in entities if isinstance(entities, list) else []:
        if not isinstance(e, dict) or not isinstance(e.get("value"), str | int):
            continue
        kind = str(e.get("type") or "")
        name = kind.rsplit("/", 1)[-1].removesuffix("_id") or "entity"
        out.append(f"{name}:{e['value']}")
    return ", ".join(out)[:_VIEWING_MAX]


class AgentView:
    """Prompts and viewing context of the agent experience, shared by every Slack listener."""

    def __init__(
        self,
        *,
        store: PlatformStore,
        params: Callable[[Route], Awaitable[AppParams | None]],
        window: Callable[[str], MethodWindow] | None = None,
    ) -> None:
        self._store = store
        self._params = params
        # The workspace's setSuggestedPrompts budget; a burst of tab openings skips the extra.
        self._window = window
        self._offered: dict[tuple[str, str, str], tuple[float, str]] = {}

    async def prompts_for(self, route: Route) -> Prompts | None:
        params = await self._params(route)
        if params is None:
            return None
        return prompts_from(params.opening_statement, params.suggested_questions)

    async def offer_prompts(
        self,
        api: SlackApi,
        route: Route | None,
        *,
        team: str,
        channel: str,
        thread_ts: str | None = None,
        force: bool = False,
    ) -> bool:
        """Set the Dify app's suggested questions as the DM's prompts; True when set now."""
        if route is None or not channel:
            return False
        key = (team, channel, thread_ts or "")
        now = time.monotonic()
        seen = self._offered.get(key)
        if seen is not None and seen[0] > now and not force:
            return False
        prompts = await self.prompts_for(route)
        if prompts is None:
            return False
        if seen is not None and seen[0] > now and seen[1] == prompts.digest:
            return False
        if self._window is not None and not await self._window(team).try_take():
            log.info("slack.prompts_skipped", reason="tier_budget")
            return False
        if len(self._offered) > 50_000:
            self._offered = {k: v for k, v in self._offered.items() if v[0] > now}
        self._offered[key] = (now + PROMPTS_EVERY, prompts.digest)
        try:
            await api.call(
                "assistant.threads.setSuggestedPrompts",
                channel_id=channel,
                thread_ts=thread_ts,
                title=prompts.heading,
                prompts=list(prompts.prompts),
            )
        except BridgeError as e:
            self._offered.pop(key, None)
            log.info("slack.prompts_unavailable", code=error_code(e))
            return False
        return True

    # ------------------------------------------------------------------ viewing context

    def _viewing_key(self, team: str, who: str) -> str:
        return f"viewing:{team}:{who}"

    async def remember_viewing(self, team: str, who: str, context: Any) -> None:
        line = describe_viewing(context)
        key = self._viewing_key(team, who)
        try:
            if line:
                await self._store.set(key, line, ttl=VIEWING_TTL)
            else:
                await self._store.delete(key)
        except Exception as e:  # Redis away: the next question goes without context
            log.info("slack.viewing_not_saved", error=type(e).__name__)

    async def viewing(self, team: str, *whos: str) -> str:
        """What the person was last seen looking at ("" when unknown or older than an hour)."""
        for who in whos:
            if not who:
                continue
            try:
                line = await self._store.get(self._viewing_key(team, who))
            except Exception as e:
                log.info("slack.viewing_unavailable", error=type(e).__name__)
                return ""
            if line:
                return line
        return ""
