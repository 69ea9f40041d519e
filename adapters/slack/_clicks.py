"""Bolt listeners for clicks: Stop, feedback, suggested questions, New topic, Human Input forms.

The action listeners call ``ack()`` first thing; everything after may take its time. This is the
click half of :class:`adapters.slack._handlers.SlackHandlers`, which inherits it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import structlog
from slack_bolt.context.async_context import AsyncBoltContext

from adapters.slack import _blocks as B
from adapters.slack import _forms as F
from adapters.slack._budget import SlackBudgets
from adapters.slack._ephemeral import ResponseUrlReply
from adapters.slack._normalize import ts_to_time
from adapters.slack._payload import digest as _digest
from adapters.slack._payload import text_at as _s
from adapters.slack._reply import SlackReply
from adapters.slack._webapi import SlackApi, error_code
from adapters.slack.render import escape as slack_escape
from app.errors import BridgeError, UserFacingError
from app.pipeline.forms import FormAnswer, FormResult, Outcome, Responder
from app.pipeline.model import IncomingMessage, Kind, PlatformLimits, Speaker, ThreadKey
from app.texts import RESET_DONE

if TYPE_CHECKING:
    from app.config.settings import Route
    from app.seams.bridge_api import BridgeApi

log = structlog.get_logger(__name__)

PLATFORM = "slack"
_GROUPS_TTL = 300.0

Ack = Callable[..., Awaitable[Any]]


async def _rewrite_clicked(
    api: SlackApi,
    channel: str,
    body: dict[str, Any],
    rewrite: Callable[[list[Any]], list[Any]],
    *,
    failure: str,
) -> None:
    """Replace the blocks of the message whose button was clicked with ``rewrite(blocks)``; a
    failure only costs the visual change (logged as ``failure``), never the click's effect."""
    raw_message = body.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    blocks = message.get("blocks")
    ts = _s(message, "ts")
    if not isinstance(blocks, list) or not ts:
        return
    try:
        await api.call(
            "chat.update",
            channel=channel,
            ts=ts,
            text=_s(message, "text") or B.ANSWER_FALLBACK,
            blocks=rewrite(blocks),
        )
    except BridgeError as e:
        log.info(failure, code=error_code(e))


class ClickHandlers:
    """Button clicks and form submissions; the events half lives in SlackHandlers."""

    _bridge: BridgeApi
    _limits: PlatformLimits
    _session: aiohttp.ClientSession
    _groups: dict[tuple[str, str], tuple[float, frozenset[str]]]
    budgets: SlackBudgets

    if TYPE_CHECKING:  # defined by SlackHandlers

        def api(self, token: str | None) -> SlackApi: ...

        def _route(self, key: ThreadKey) -> Route | None: ...

        def _reply(
            self,
            key: ThreadKey,
            token: str | None,
            user: str,
            route: Route | None,
            *,
            one_shot: bool = False,
        ) -> SlackReply: ...

        async def _speaker(
            self, api: SlackApi, team: str, user: str, route: Route | None
        ) -> Speaker: ...

        async def _first_delivery(self, kind: str, *parts: str) -> bool: ...

    def _action_thread(self, body: dict[str, Any], context: AsyncBoltContext) -> ThreadKey | None:
        team = context.team_id or _s(body, "team", "id") or _s(body, "user", "team_id")
        channel = _s(body, "container", "channel_id") or _s(body, "channel", "id")
        raw_message = body.get("message")
        message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
        thread = _s(message, "thread_ts") or _s(message, "ts") or _s(body, "container", "thread_ts")
        if not (team and channel and thread):
            return None
        return ThreadKey(PLATFORM, team, channel, thread)

    @staticmethod
    def _action(body: dict[str, Any]) -> dict[str, Any]:
        actions = body.get("actions")
        if isinstance(actions, list) and actions and isinstance(actions[0], dict):
            return actions[0]
        return {}

    async def _tell(self, body: dict[str, Any], text: str) -> None:
        """An ephemeral note to the person who clicked (through the click's response_url)."""
        url = _s(body, "response_url")
        if url:
            await ResponseUrlReply(self._session, url).say(text)

    async def on_stop(self, ack: Ack, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        key = self._action_thread(body, context)
        if key is None:
            return
        try:
            stopped = await self._bridge.stop(thread=key)
        except BridgeError as e:
            log.warning("slack.stop_failed", error=type(e).__name__)
            stopped = False
        if not stopped:
            await self._tell(body, "There is no answer to stop any more.")

    async def on_feedback(self, ack: Ack, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        key = self._action_thread(body, context)
        action = self._action(body)
        value = B.parse_value(action.get("value"))
        message_id = value.get("m")
        if key is None or not isinstance(message_id, str) or not message_id:
            return
        native = action.get("action_id") == B.ACTION_FEEDBACK
        rating: Literal["like", "dislike"] = (
            "like"
            if (value.get("v") == "like" if native else action.get("action_id") == B.ACTION_LIKE)
            else "dislike"
        )
        try:
            await self._bridge.feedback(thread=key, message_id=message_id, rating=rating)
        except UserFacingError as e:
            await self._tell(body, e.user_message)
            return
        except Exception as e:
            log.warning("slack.feedback_failed", error=type(e).__name__)
            await self._tell(body, "I couldn't record your feedback. Please try again later.")
            return
        if native:
            return  # Slack's feedback buttons show the choice themselves
        user_id = _s(body, "user", "id")
        await _rewrite_clicked(
            self.api(context.bot_token),
            key.channel,
            body,
            lambda blocks: B.feedback_done_blocks(blocks, rating, user_id),
            failure="slack.feedback_ack_failed",
        )

    async def on_suggestion(
        self, ack: Ack, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await ack()
        key = self._action_thread(body, context)
        action = self._action(body)
        question = B.parse_value(action.get("value")).get("q")
        user = _s(body, "user", "id")
        if key is None or not isinstance(question, str) or not question.strip() or not user:
            return
        action_ts = _s(action, "action_ts")
        if not await self._first_delivery(
            "suggestion", key.channel, action_ts or _digest(body), user
        ):
            return
        action_ts = action_ts or f"{time.time():.6f}"
        token = context.bot_token
        api = self.api(token)
        received = ts_to_time(action_ts) or time.time()
        await self.budgets.wait_post(key.workspace, key.channel)
        try:
            # Show in the thread who asked what, as if they had typed it.
            posted = await api.call(
                "chat.postMessage",
                channel=key.channel,
                thread_ts=key.thread,
                # The question came from the model: it must not notify anyone.
                text=f"<@{user}> asked: {slack_escape(question)}"[:3900],
            )
            received = ts_to_time(_s(posted, "ts")) or received
        except BridgeError as e:
            log.info("slack.suggestion_echo_failed", code=error_code(e))
        route = self._route(key)
        msg = IncomingMessage(
            key=key,
            event_id=f"action:{key.channel}:{action_ts}:{user}",
            speaker=await self._speaker(api, key.workspace, user, route),
            text=question.strip(),
            kind=Kind.THREAD_REPLY,
            received_at=received,
        )
        self._bridge.submit(msg, self._reply(key, token, user, route), self._limits)

    async def on_reset(self, ack: Ack, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """The "New topic" button: the thread's next question starts a new Dify conversation."""
        await ack()
        key = self._action_thread(body, context)
        if key is None:
            return
        user = _s(body, "user", "id")
        action_ts = _s(self._action(body), "action_ts")
        if not await self._first_delivery("reset", key.channel, action_ts or _digest(body), user):
            return
        try:
            await self._bridge.reset(thread=key)
        except Exception as e:  # Redis away: nothing changed, say so
            log.warning("slack.reset_failed", error=type(e).__name__)
            await self._tell(body, "I couldn't start a new topic. Please try again in a minute.")
            return
        api = self.api(context.bot_token)
        # Everyone in the thread shares its conversation: tell them all, in the thread.
        await self.budgets.wait_post(key.workspace, key.channel)
        try:
            await api.call(
                "chat.postMessage",
                channel=key.channel,
                thread_ts=key.thread,
                text=B.fallback_text(RESET_DONE),
                blocks=B.reset_done_blocks(RESET_DONE, user),
            )
        except BridgeError as e:
            log.info("slack.reset_note_failed", code=error_code(e))
            await self._tell(body, RESET_DONE)
        await _rewrite_clicked(
            api,
            key.channel,
            body,
            B.without_reset_button,
            failure="slack.reset_button_update_failed",
        )

    # ------------------------------------------------------------------ Human Input forms

    async def on_form(self, ack: Ack, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """A button of a Dify Human Input form: send the choice (and the typed values), show
        who chose what on the form, stream the rest of the answer into the thread."""
        await ack()
        key = self._action_thread(body, context)
        picked = F.parse_click(self._action(body).get("value"))
        user = _s(body, "user", "id")
        if key is None or picked is None or not user:
            return
        token = context.bot_token
        api = self.api(token)
        route = self._route(key)
        who = Speaker(id=user)
        if (
            route is not None
            and route.config.human_input.answer_by != "anyone"
            and any("@" in a for a in route.config.human_input.allowed)
        ):
            who = await self._look_up(api, user) or who
        click = FormAnswer(
            key=picked[0],
            action_id=picked[1],
            values=F.state_values(body),
            by=Responder(id=user, name=f"<@{user}>", email=who.email),
        )
        try:
            result = await self._bridge.answer_form(
                key,
                click,
                self._reply(key, token, user, route),
                self._limits,
                groups=_SlackGroups(self, api, key.workspace),
            )
        except Exception as e:  # the click must get an answer, never a silent failure
            log.warning("slack.form_failed", error=type(e).__name__)
            await self._tell(body, "I couldn't send your answer. Please try again in a minute.")
            return
        log.info("slack.form_answered", outcome=result.outcome.value)
        if result.closed:
            await _rewrite_clicked(
                api,
                key.channel,
                body,
                lambda blocks: F.closed_blocks(blocks, result),
                failure="slack.form_update_failed",
            )
        if result.outcome is not Outcome.ACCEPTED:
            await self._tell(body, _for_clicker(result))

    async def on_form_field(self, ack: Ack) -> None:
        """A form field's own interaction (none by default): acknowledged, nothing to do."""
        await ack()

    async def _look_up(self, api: SlackApi, user: str) -> Speaker | None:
        """The user's name and e-mail from ``users.info``; None when Slack refuses."""
        try:
            data = await api.call("users.info", user=user)
        except BridgeError as e:
            log.info("slack.users_info_failed", code=error_code(e))
            return None
        u = data.get("user") if isinstance(data.get("user"), dict) else {}
        name = _s(u, "profile", "display_name") or _s(u, "real_name") or _s(u, "name")
        return Speaker(id=user, name=name, email=_s(u, "profile", "email") or None)

    async def group_members(self, api: SlackApi, team: str, group: str) -> frozenset[str]:
        """Members of a Slack user group (``usergroups.users.list``), cached a few minutes."""
        hit = self._groups.get((team, group))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        data = await api.call("usergroups.users.list", usergroup=group)
        users = data.get("users")
        members = (
            frozenset(u for u in users if isinstance(u, str))
            if isinstance(users, list)
            else frozenset()
        )
        if len(self._groups) > 10_000:
            self._groups.clear()
        self._groups[(team, group)] = (time.monotonic() + _GROUPS_TTL, members)
        return members


class _SlackGroups:
    """``human_input.allowed`` entries that are Slack user groups (ids starting with S)."""

    def __init__(self, handlers: ClickHandlers, api: SlackApi, team: str) -> None:
        self._h, self._api, self._team = handlers, api, team

    async def member_of(self, group: str, user_id: str) -> bool:
        if not (group.startswith("S") and group[1:].isalnum()):
            return False
        return user_id in await self._h.group_members(self._api, self._team, group)


def _for_clicker(result: FormResult) -> str:
    if result.outcome is Outcome.ALREADY_DECIDED:
        return f"{result.message} Your choice was not sent."
    return result.message
