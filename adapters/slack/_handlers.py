"""Bolt listeners: Slack events and the slash command -> the bridge (clicks: ``_clicks.py``).

Bolt acks Events API callbacks before these run (``process_before_response=False``); the command
and action listeners call ``ack()`` first thing. Everything after the ack may take its time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from redis.exceptions import RedisError
from slack_bolt.context.async_context import AsyncBoltContext

from adapters.slack import _blocks as B
from adapters.slack._agent import (
    PROMPTS_PER_MINUTE,
    SESSIONS_PER_MINUTE,
    TITLES_PER_MINUTE,
    AgentView,
    describe_viewing,
)
from adapters.slack._budget import APPENDS_PER_MINUTE, STREAMS_PER_MINUTE, SlackBudgets
from adapters.slack._clicks import ClickHandlers
from adapters.slack._ephemeral import ResponseUrlReply
from adapters.slack._files import attachments_from_event, prefetch
from adapters.slack._native import Refusals
from adapters.slack._normalize import Ignore, classify, slack_to_plain, ts_to_time
from adapters.slack._payload import digest as _digest
from adapters.slack._payload import text_at as _s
from adapters.slack._reply import ReplyOptions, SlackReply
from adapters.slack._webapi import SlackApi, SlackCallError, error_code, make_client
from app.errors import BridgeError, PlatformRateLimited, UserFacingError
from app.pipeline.failures import new_ref
from app.pipeline.model import IncomingMessage, Kind, PlatformLimits, Speaker, ThreadKey
from app.server.tasks import spawn
from app.state.budgets import SharedBudgets

if TYPE_CHECKING:
    from app.config.settings import Route
    from app.seams.bridge_api import BridgeApi
    from app.server.metrics import Metrics
    from app.state.platform_store import PlatformStore

log = structlog.get_logger(__name__)

PLATFORM = "slack"
_CANT_POST = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
_PEOPLE_TTL = 600.0
_SPECIAL_MENTION = re.compile(r"<!([a-z]+)(?:\^[^|>]*)?(?:\|[^>]*)?>")

Ack = Callable[..., Awaitable[Any]]


class SlackHandlers(ClickHandlers):
    """The adapter's behaviour behind bolt's listeners, one method per kind of request."""

    def __init__(
        self,
        *,
        bridge: BridgeApi,
        kv: PlatformStore,
        budgets: SharedBudgets,
        limits: PlatformLimits,
        api_url: str,
        session: aiohttp.ClientSession,
        metrics: Metrics | None,
    ) -> None:
        self._bridge = bridge
        self._kv = kv
        self._limits = limits
        self._api_url = api_url
        self._session = session
        self._metrics = metrics
        self._people: dict[tuple[str, str], tuple[float, Speaker]] = {}
        self._groups: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self.budgets = SlackBudgets(shared=budgets)
        # Where Slack refused native streaming lately (answers there use edits meanwhile).
        self.refusals = Refusals()
        # Where Slack refused agent sessions lately (the app is not declared an agent).
        self.session_refusals = Refusals()
        self.agent = AgentView(
            store=kv,
            params=bridge.app_params,
            window=lambda team: self.budgets.window(
                team, "assistant.threads.setSuggestedPrompts", PROMPTS_PER_MINUTE
            ),
        )

    # ------------------------------------------------------------------ helpers

    def api(self, token: str | None) -> SlackApi:
        return SlackApi(
            make_client(token=token, base_url=self._api_url, session=self._session), self._metrics
        )

    def _route(self, key: ThreadKey) -> Route | None:
        try:
            return self._bridge.route_for(key)
        except Exception as e:  # a broken route is the pipeline's to report, with a ref id
            log.warning("slack.route_resolve_failed", error=type(e).__name__)
            return None

    def _reply(
        self,
        key: ThreadKey,
        token: str | None,
        user: str,
        route: Route | None,
        *,
        one_shot: bool = False,
    ) -> SlackReply:
        """``one_shot``: the answer keeps no Dify conversation (no "New topic" to offer)."""
        cfg = route.config if route is not None else None
        is_dm = key.channel.startswith("D")
        streaming = cfg.native_streaming if cfg is not None else "dm"
        origin = None
        if route is not None:
            # Dify's relative file URLs (/files/...) hang off the API's origin, not /v1.
            origin = route.base_url.removesuffix("/v1")
        return SlackReply(
            self.api(token),
            self._session,
            channel=key.channel,
            thread_ts=key.thread,
            team=key.workspace,
            user=user,
            options=ReplyOptions(
                # Streams are replies to a person's message: not under the slash command's echo.
                native_streaming=streaming == "always" or (streaming == "dm" and is_dm),
                task_display=cfg.task_display if cfg else "timeline",
                feedback_buttons=cfg.feedback_buttons if cfg else True,
                suggested_questions=cfg.suggested_questions if cfg else True,
                # Completion and workflow apps answer each message on its own: nothing to reset.
                reset_button=bool(
                    cfg and cfg.reset_button and cfg.dify.mode.is_chat and not one_shot
                ),
            ),
            dify_origin=origin,
            is_dm=is_dm,
            updates=self.budgets.updates(key.workspace),
            posts=self.budgets.posts(key.workspace),
            streams=self.budgets.window(key.workspace, "streams", STREAMS_PER_MINUTE),
            appends=self.budgets.window(key.workspace, "chat.appendStream", APPENDS_PER_MINUTE),
            refusals=self.refusals,
            session_refusals=self.session_refusals,
            # A session costs two calls (processing, then active or stopStream): half the tier.
            sessions=self.budgets.window(key.workspace, "agents.sessions", SESSIONS_PER_MINUTE),
            titles=self.budgets.window(
                key.workspace, "assistant.threads.setTitle", TITLES_PER_MINUTE
            ),
        )

    async def _speaker(self, api: SlackApi, team: str, user: str, route: Route | None) -> Speaker:
        wanted = set(route.config.inputs.values()) if route is not None else set()
        if not wanted & {"speaker_name", "speaker_email"}:
            return Speaker(id=user)
        hit = self._people.get((team, user))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        speaker = await self._look_up(api, user)
        if speaker is None:
            return Speaker(id=user)  # not cached: the next message asks again
        if len(self._people) > 50_000:
            self._people.clear()
        self._people[(team, user)] = (time.monotonic() + _PEOPLE_TTL, speaker)
        return speaker

    async def _history(
        self,
        api: SlackApi,
        key: ThreadKey,
        before_ts: str,
        route: Route | None,
        bot_user_id: str | None,
    ) -> tuple[str, ...]:
        if route is None or "history" not in route.config.inputs.values():
            return ()
        limit = route.config.history_limit
        if not limit or key.thread == before_ts:
            return ()
        try:
            data = await api.call(
                "conversations.replies", channel=key.channel, ts=key.thread, limit=limit + 1
            )
        except BridgeError as e:
            log.info("slack.history_failed", code=error_code(e))
            return ()
        lines: list[str] = []
        for m in data.get("messages") or []:
            if not isinstance(m, dict) or _s(m, "ts") == before_ts:
                continue
            who = "assistant" if m.get("bot_id") else "user"
            text = slack_to_plain(_s(m, "text"), bot_user_id=bot_user_id)
            if text:
                lines.append(f"{who}: {text}")
        return tuple(lines[-limit:])

    # ------------------------------------------------------------------ events

    async def on_message_event(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """``app_mention`` and ``message`` (channels, groups, DMs, threads)."""
        team = context.team_id or _s(body, "team_id") or context.enterprise_id or ""
        trig = classify(event, team=team, bot_user_id=context.bot_user_id, bot_id=context.bot_id)
        if isinstance(trig, Ignore):
            log.debug("slack.ignored", reason=trig.reason)
            return
        key = ThreadKey(PLATFORM, team, trig.channel, trig.thread_ts)
        route = self._route(key)
        if trig.needs_known_thread:
            if route is not None and not route.config.continue_in_thread:
                return
            try:
                known = await self._bridge.thread_known(key)
            except Exception as e:  # Redis down: we cannot tell, so we stay quiet
                log.warning("slack.thread_lookup_failed", error=type(e).__name__)
                return
            if not known:
                log.debug("slack.ignored", reason="thread_not_ours")
                return
        token = context.bot_token
        api = self.api(token)
        speaker = await self._speaker(api, team, trig.user, route)
        history = await self._history(api, key, trig.ts, route, context.bot_user_id)
        event_id = _s(body, "event_id") or f"{trig.channel}:{trig.ts}"
        # One mention comes as app_mention *and* message: same channel+ts, different ids.
        dedup_name = f"{team}:{trig.channel}:{trig.ts}"
        dedup_keys = (f"{PLATFORM}:{dedup_name}",)
        attachments = attachments_from_event(
            trig.files, token=token, session=self._session, api_url=self._api_url
        )
        if attachments:
            try:
                attachments = await prefetch(attachments)
            except UserFacingError as e:
                await self._refuse(api, key, (event_id, dedup_name), e)
                return
        msg = IncomingMessage(
            key=key,
            event_id=event_id,
            speaker=speaker,
            text=trig.text,
            kind=trig.kind,
            attachments=attachments,
            dedup_keys=dedup_keys,
            received_at=ts_to_time(trig.ts),
            history=history,
            starts_thread=trig.thread_ts == trig.ts,
            viewing=await self._viewing(event, team, trig.user, trig.channel, route),
        )
        self._bridge.submit(msg, self._reply(key, token, trig.user, route), self._limits)
        if trig.kind is Kind.DIRECT and trig.thread_ts == trig.ts:
            # A new thread in the agent DM: the tab's prompts, if not set lately.
            spawn(
                self.agent.offer_prompts(api, route, team=team, channel=trig.channel),
                name="slack-prompts",
            )

    async def _viewing(
        self, event: dict[str, Any], team: str, user: str, channel: str, route: Route | None
    ) -> str:
        """What the person is looking at, for routes that map the ``viewing`` input."""
        if route is None or "viewing" not in route.config.inputs.values():
            return ""
        stamped = event.get("app_context")
        if isinstance(stamped, dict):
            line = describe_viewing(stamped)
            if line:
                return line
        return await self.agent.viewing(team, user, channel)

    async def _refuse(
        self, api: SlackApi, key: ThreadKey, claim: tuple[str, ...], err: UserFacingError
    ) -> None:
        """Answer a message we cannot take (unreadable file) once, even if Slack redelivers it."""
        # The same keys the bridge would claim: a retry of this event is dropped there too.
        if not await self._kv.claim(*claim):
            return
        ref = new_ref()
        log.warning("slack.message_refused", kind=err.kind, ref=ref, thread=key.log_id)
        await self.budgets.wait_post(key.workspace, key.channel)
        try:
            await api.call(
                "chat.postMessage",
                channel=key.channel,
                thread_ts=key.thread,
                text=B.fallback_text(err.user_message),
                blocks=B.error_blocks(err.user_message, ref),
            )
        except BridgeError as e:
            log.warning("slack.refusal_undeliverable", code=error_code(e))

    async def _first_delivery(self, kind: str, *parts: str) -> bool:
        """False if this very request was handled before: a replay of a signed request within
        Slack's five minutes, or a redelivery. Checked before anything visible is posted; the
        pipeline's own de-duplication comes too late for what a handler posts first."""
        try:
            fresh = await self._kv.claim(":".join((kind, *parts)))
        except RedisError as e:  # the pipeline reports Redis trouble to the user
            log.warning("slack.replay_check_failed", error=type(e).__name__)
            return True
        if not fresh:
            log.info("slack.replay_ignored", kind=kind)
        return fresh

    # ------------------------------------------------------------------ agent view

    async def on_home_opened(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """The Messages tab opened (agent view): offer the Dify app's suggested questions."""
        if _s(event, "tab") != "messages":
            return
        team = context.team_id or _s(body, "team_id") or context.enterprise_id or ""
        channel = _s(event, "channel")
        if not (team and channel):
            log.debug("slack.ignored", reason="app_home_opened_without_channel")
            return
        route = self._route(ThreadKey(PLATFORM, team, channel, ""))
        await self.agent.offer_prompts(
            self.api(context.bot_token), route, team=team, channel=channel
        )

    async def on_thread_started(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """Legacy assistant_view: a new assistant thread gets the prompts of its own."""
        thread = event.get("assistant_thread")
        if not isinstance(thread, dict):
            return
        team = context.team_id or _s(body, "team_id") or ""
        channel, thread_ts = _s(thread, "channel_id"), _s(thread, "thread_ts")
        if not (team and channel and thread_ts):
            return
        route = self._route(ThreadKey(PLATFORM, team, channel, thread_ts))
        await self.agent.offer_prompts(
            self.api(context.bot_token), route, team=team, channel=channel, thread_ts=thread_ts
        )

    async def on_session_stopped(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """Slack's own Stop button of an agent session: stop the Dify answer in that thread
        (Slack already stopped its streams; the answer ends with what had arrived)."""
        team = context.team_id or _s(body, "team_id") or context.enterprise_id or ""
        channel, thread_ts = _s(event, "channel"), _s(event, "thread_ts")
        if not (team and channel and thread_ts):
            log.debug("slack.ignored", reason="agent_session_stopped_without_thread")
            return
        try:
            stopped = await self._bridge.stop(thread=ThreadKey(PLATFORM, team, channel, thread_ts))
        except BridgeError as e:
            log.warning("slack.stop_failed", error=type(e).__name__)
            stopped = False
        if not stopped:
            # Nothing runs any more (it just finished): the session must still leave
            # "processing", which Slack does not do by itself.
            try:
                await self.api(context.bot_token).call(
                    "agents.sessions.setStatus",
                    channel_id=channel,
                    thread_ts=thread_ts,
                    status="active",
                )
            except BridgeError as e:
                log.info("slack.agent_session_failed", code=error_code(e))

    async def on_context_changed(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """``app_context_changed``: remembered only when a route passes it to Dify."""
        if not any(
            "viewing" in r.config.inputs.values() and r.config.match.platform in (None, PLATFORM)
            for r in self._bridge.routes
        ):
            return
        team = context.team_id or _s(body, "team_id") or context.enterprise_id or ""
        who = _s(event, "user") or context.user_id or _s(event, "channel")
        if not (team and who):
            log.debug("slack.ignored", reason="app_context_changed_without_user")
            return
        await self.agent.remember_viewing(team, who, event.get("context"))

    async def on_other_event(self) -> None:
        """Events we subscribe to only indirectly (joins, edits, ...): acknowledged and dropped."""
        return None

    # ------------------------------------------------------------------ slash command

    async def on_command(self, ack: Ack, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        raw = _s(body, "text").strip()
        user, channel = _s(body, "user_id"), _s(body, "channel_id")
        team = context.team_id or _s(body, "team_id")
        response_url = _s(body, "response_url")
        trigger_id = _s(body, "trigger_id")
        trigger = trigger_id or f"{channel}:{time.time()}"
        ephemeral = ResponseUrlReply(self._session, response_url) if response_url else None
        if not (user and channel and team):
            return
        question = slack_to_plain(raw)
        if not question:
            if ephemeral:
                await ephemeral.say(
                    f"Ask a question after the command, e.g. `{_s(body, 'command') or '/ask'} "
                    "how do I reset my password?`"
                )
            return
        # trigger_id is unique per invocation; without one (never from Slack), the body itself.
        if not await self._first_delivery("cmd", team, trigger_id or _digest(body)):
            return
        token = context.bot_token
        api = self.api(token)
        echo = _SPECIAL_MENTION.sub(lambda m: f"@{m.group(1)}", raw)  # never ping @channel
        await self.budgets.wait_post(team, channel)
        try:
            posted = await api.call(
                "chat.postMessage", channel=channel, text=f"<@{user}> asked: {echo}"[:3900]
            )
            ts = _s(posted, "ts")
        except (SlackCallError, PlatformRateLimited) as e:
            code = error_code(e)
            if ephemeral is None or (code not in _CANT_POST and code != "ratelimited"):
                log.warning("slack.command_post_failed", code=code)
                if ephemeral is not None:
                    await ephemeral.say("I couldn't post in this channel. Please try again.")
                return
            log.info("slack.command_ephemeral", code=code)
            key = ThreadKey(PLATFORM, team, channel, f"cmd-{trigger}")
            msg = IncomingMessage(
                key=key,
                event_id=f"cmd:{trigger}",
                speaker=Speaker(id=user),
                text=question,
                kind=Kind.COMMAND,
                starts_thread=True,
            )
            # A response_url reply cannot attach a file: an over-long answer is cut instead.
            self._bridge.submit(msg, ephemeral, replace(self._limits, attaches_files=False))
            return
        key = ThreadKey(PLATFORM, team, channel, ts)
        route = self._route(key)
        msg = IncomingMessage(
            key=key,
            event_id=f"cmd:{trigger}",
            speaker=await self._speaker(api, team, user, route),
            text=question,
            kind=Kind.COMMAND,
            received_at=ts_to_time(ts) or time.time(),
            starts_thread=True,  # the question the bot just posted
        )
        # With the answer cache on, slash commands are one-shot: no conversation is stored.
        one_shot = route is not None and route.config.answer_cache_ttl > 0
        self._bridge.submit(
            msg, self._reply(key, token, user, route, one_shot=one_shot), self._limits
        )
