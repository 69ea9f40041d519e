"""A fake Slack Web API (plus file hosting, response_url and Socket Mode) for tests and benchmarks.

A real aiohttp server on ``127.0.0.1``, port 0. Point the code under test at ``fake.api_url``
(``SLACK_API_URL``); it is talked to through slack_sdk's normal clients. It answers with Slack's
JSON shapes and error codes, keeps the messages it was sent (editable, so a test can read the
final visible text of a thread), enforces per-method per-workspace rate limits as Slack documents
them, and records every call.

Quick start::

    fake = FakeSlack()
    await fake.start()
    team = fake.add_team("T1")  # team.bot_token, team.bot_user_id
    body, headers = fake.event(team, {"type": "app_mention", ...}, secret="s3cret")
    await http.post(service_url + "/slack/events", data=body, headers=headers)
    fake.fail_next("chat.update", "ratelimited", retry_after=1)
    assert fake.thread_texts("C1", ts)[-1] == "..."
    await fake.close()

Helpers: ``add_team``, ``add_app_token`` (Socket Mode), ``add_oauth_code`` (OAuth install),
``add_user`` (users.info), ``host_file`` (a user's attachment, served only with the team's bot
token; others get Slack's 200 HTML sign-in page), ``response_url()``, ``fail_next(method, error,
retry_after=..., times=...)``, ``delete_message``, ``expire_stream``, ``missing_channels`` /
``not_in_channels``; ``event`` / ``form`` / ``interaction`` / ``block_action`` build signed
requests; ``send_envelope`` / ``wait_ack`` drive Socket Mode. Records: ``calls`` (method, params,
team, time, token, error, thread, visible), ``ratelimited``, ``messages``, ``statuses``,
``uploads``, ``responses``; ``GET /_fake/calls`` serves the record to another process.

Rate limits (on by default, ``fake.enforce_limits = False`` to turn off): Tier 2 = 20/min,
Tier 3 = 50/min, Tier 4 = 100/min per (team, method) in a sliding 60 s window; ``chat.postMessage``
1/s per channel with a burst of 3 (``fake.channel_posts``, a token bucket counted on arrival) and
300/min per workspace. Over a limit: HTTP 429,
``Retry-After`` (whole seconds) and ``{"ok": false, "error": "ratelimited"}``.

Sizes: ``msg_too_long`` for ``text`` over 4,000 characters, ``markdown`` blocks over 12,000
characters together, or a single section text over 3,000 (``invalid_blocks``); more than 50 blocks
is ``invalid_blocks``.

slack_sdk is the referee for arguments and Block Kit (``tests/fakes/referees.py``): a call whose
arguments do not fit the matching ``AsyncWebClient`` method's signature (a required one missing,
an unknown one given) answers ``invalid_arguments``, blocks and streaming chunks that slack_sdk's
models reject answer ``invalid_blocks`` / ``invalid_chunks``; each case is also kept in
``fake.contract_errors`` (and fails the test, see ``tests/conftest.py``).

The agent messaging experience (``features.agent_view``): ``assistant.threads.setStatus``
(``statuses``; ``loading_messages`` ≤ 10), ``assistant.threads.setSuggestedPrompts`` (``prompts``;
≤ 4 prompts; with a ``thread_ts`` in an agent-view DM Slack "silently fails": recorded with
``shown=False``), ``assistant.threads.setTitle`` (``titles``), agent sessions
(``agents.sessions.setStatus`` / ``rename``: ``sessions``; ``not_an_agent`` for a team with
``agent_view=False``), native streaming with
``markdown_text``, ``task_update`` / ``plan_update`` / ``markdown_text`` / ``blocks`` chunks
(``Message.tasks``, ``Message.plan_title``), ``stopStream`` blocks (feedback buttons). Slack's
refusals last until lifted: ``refuse(method, error)`` (e.g. ``feature_not_enabled`` for
``chat.startStream``), ``allow(method)``. Event builders: ``home_opened_event``,
``context_changed_event``, ``thread_started_event``, ``session_stopped_event`` (Slack's Stop
button: the thread's live streams end).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import BodyPartReader, WSMsgType, web

from tests.fakes import referees

TIER2, TIER3, TIER4 = 20, 50, 100

# method -> calls per minute per workspace (sliding 60 s window). Slack's own tier table.
METHOD_TIERS: dict[str, int] = {
    "auth.test": TIER4 * 10,  # "Special": effectively unlimited
    "chat.update": TIER3,
    "chat.delete": TIER3,
    "chat.postEphemeral": TIER4,
    "chat.startStream": TIER2,
    "chat.appendStream": TIER4,
    "chat.stopStream": TIER2,
    "assistant.threads.setStatus": 600,  # "Special"
    "assistant.threads.setSuggestedPrompts": TIER4,
    "assistant.threads.setTitle": TIER4,
    # No tier is documented for agent sessions: we assume Tier 4.
    "agents.sessions.setStatus": TIER4,
    "agents.sessions.rename": TIER4,
    "conversations.replies": TIER3,
    "users.info": TIER4,
    "files.info": TIER4,
    "files.getUploadURLExternal": TIER4,
    "files.completeUploadExternal": TIER4,
    "apps.connections.open": TIER3,
    "oauth.v2.access": TIER4,
}
POST_PER_CHANNEL_RATE = 1.0  # per second
POST_PER_CHANNEL_BURST = 3.0  # "short bursts"
POST_PER_WORKSPACE = 300  # per minute

TEXT_LIMIT = 4000
MARKDOWN_LIMIT = 12000
SECTION_LIMIT = 3000
MAX_BLOCKS = 50
MAX_PROMPTS = 4
MAX_LOADING_MESSAGES = 10
SESSION_STATUSES = frozenset({"processing", "active", "suspended", "closed"})


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with a request: ``v0=`` HMAC-SHA256 of ``v0:{ts}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{ts}:{body}".encode()
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/json",
    }


@dataclass
class Team:
    id: str
    name: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    app_id: str = "A0FAKEAPP"
    enterprise_id: str | None = None
    # The app's manifest has features.agent_view (DMs are agent threads).
    agent_view: bool = True


@dataclass
class Call:
    """One Web API call as the fake saw it (params decoded from JSON or form)."""

    method: str
    params: dict[str, Any]
    team: str | None
    time: float
    token: str | None
    status: int = 200
    error: str | None = None
    # The thread the call wrote into, and whether it put answer text on screen.
    thread: str | None = None
    visible: bool = False


@dataclass
class Message:
    ts: str
    channel: str
    team: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    user: str | None = None
    bot_id: str | None = None
    edits: int = 0
    streaming: bool = False
    markdown: str = ""  # accumulated native-stream text
    files: list[str] = field(default_factory=list)
    deleted: bool = False
    # Native streaming: task cards by id (the latest task_update of each), the plan's title.
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan_title: str = ""
    task_display_mode: str = "timeline"

    def visible_text(self) -> str:
        """What a person reads: the markdown of the stream, else block text, else ``text``."""
        if self.markdown:
            return self.markdown
        parts: list[str] = []
        for b in self.blocks:
            t = b.get("type")
            if t == "markdown":
                parts.append(str(b.get("text", "")))
            elif t == "section":
                txt = b.get("text") or {}
                parts.append(str(txt.get("text", "")))
            elif t == "rich_text":
                parts.append(json.dumps(b.get("elements", [])))
        return "\n".join(parts) if parts else self.text

    def context_text(self) -> str:
        out: list[str] = []
        for b in self.blocks:
            if b.get("type") == "context":
                out.extend(str(e.get("text", "")) for e in b.get("elements", []))
        return "\n".join(out)

    def buttons(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for b in self.blocks:
            if b.get("type") == "actions":
                out.extend(e for e in b.get("elements", []) if e.get("type") == "button")
        return out

    def feedback_buttons(self) -> dict[str, Any] | None:
        """The ``feedback_buttons`` element of a ``context_actions`` block, if any."""
        for b in self.blocks:
            if b.get("type") == "context_actions":
                for e in b.get("elements", []):
                    if e.get("type") == "feedback_buttons":
                        return dict(e)
        return None


def _state_values(blocks: list[dict[str, Any]], typed: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for b in blocks:
        if b.get("type") != "input":
            continue
        el = b.get("element") or {}
        block_id, action_id = b.get("block_id", ""), el.get("action_id", "")
        if el.get("type") == "static_select":
            want = typed.get(block_id)
            opt = next((o for o in el.get("options", []) if o.get("value") == want), None)
            values[block_id] = {
                action_id: {
                    "type": "static_select",
                    "selected_option": opt or el.get("initial_option"),
                }
            }
        else:
            value = typed.get(block_id, el.get("initial_value"))
            values[block_id] = {action_id: {"type": el.get("type"), "value": value}}
    return values


def _input_error(b: dict[str, Any]) -> str | None:
    """Block Kit's rules for an input block (the ones our forms could break)."""
    label = b.get("label") or {}
    el = b.get("element") or {}
    if label.get("type") != "plain_text" or not 0 < len(str(label.get("text", ""))) <= 2000:
        return "invalid_blocks"
    if len(str(b.get("block_id", ""))) > 255 or len(str(el.get("action_id", ""))) > 255:
        return "invalid_blocks"
    kind = el.get("type")
    if kind == "plain_text_input":
        if len(str(el.get("initial_value", ""))) > 3000:
            return "invalid_blocks"
    elif kind == "static_select":
        opts = el.get("options") or []
        if not 0 < len(opts) <= 100:
            return "invalid_blocks"
        for o in opts:
            if (
                len(str((o.get("text") or {}).get("text", ""))) > 75
                or len(str(o.get("value", ""))) > 150
            ):
                return "invalid_blocks"
    else:
        return "invalid_blocks"
    return None


@dataclass
class Fault:
    method: str
    error: str
    status: int = 200
    retry_after: float | None = None
    team: str | None = None


@dataclass
class UploadedFile:
    id: str
    name: str
    length: int
    data: bytes = b""
    channel: str | None = None
    thread_ts: str | None = None
    title: str = ""
    completed: bool = False


@dataclass
class HostedFile:
    """A file a user 'attached': served at ``url`` only with the owning team's bot token."""

    id: str
    team: str
    name: str
    mimetype: str
    data: bytes
    url: str = ""

    def to_event(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.name,
            "mimetype": self.mimetype,
            "filetype": self.name.rsplit(".", 1)[-1],
            "size": len(self.data),
            "mode": "hosted",
            "url_private": self.url,
            "url_private_download": self.url + "?download=1",
        }


class ChannelPostLimit:
    """``chat.postMessage`` per channel, as Slack keeps it: a token bucket of ``rate`` posts per
    second and a short ``burst``, counted at arrival (Slack's clock, not the caller's)."""

    def __init__(
        self, rate: float = POST_PER_CHANNEL_RATE, burst: float = POST_PER_CHANNEL_BURST
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def _level(self, channel: tuple[str, str], now: float) -> float:
        tokens, last = self._buckets.get(channel, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def check(self, channel: tuple[str, str], now: float) -> float | None:
        """Seconds until ``channel`` may post again, or None if it may now."""
        tokens = self._level(channel, now)
        return None if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, channel: tuple[str, str], now: float) -> None:
        self._buckets[channel] = (self._level(channel, now) - 1.0, now)


class FakeSlack:
    """The fake Slack: Web API, file hosting, response_url, OAuth and Socket Mode, one server."""

    def __init__(self, *, enforce_limits: bool = True, referee: bool = True) -> None:
        self.enforce_limits = enforce_limits
        # slack_sdk's method signatures and Block Kit and chunk models judge every call
        # (tests/fakes/referees.py); what they refuse is answered as Slack would and kept in
        # contract_errors.
        self.referee = referee
        self.teams: dict[str, Team] = {}
        self._by_token: dict[str, Team] = {}
        self.app_tokens: set[str] = set()
        self.calls: list[Call] = []
        self.messages: dict[str, list[Message]] = defaultdict(list)
        self.faults: deque[Fault] = deque()
        self.missing_channels: set[str] = set()
        self.not_in_channels: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}
        # Slack user groups (id -> member user ids), for usergroups.users.list.
        self.usergroups: dict[str, list[str]] = {}
        self.hosted: dict[str, HostedFile] = {}
        self.uploads: dict[str, UploadedFile] = {}
        self.responses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.oauth_codes: dict[str, Team] = {}
        self.oauth_client: tuple[str, str] | None = None
        self.statuses: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.titles: dict[tuple[str, str], str] = {}
        # Agent sessions by (channel, thread_ts): {"status", "title", "history": [statuses]}.
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.refusals: dict[str, str] = {}
        self.contract_errors: list[str] = []
        self.ratelimited: list[Call] = []
        self.ws_acks: dict[str, dict[str, Any]] = {}
        self._ack_events: dict[str, asyncio.Event] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ready = asyncio.Event()
        self._windows: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self.channel_posts = ChannelPostLimit()
        self._last_us = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/_fake/calls", self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ setup helpers

    def add_team(
        self,
        team_id: str = "T0001",
        *,
        name: str = "Acme",
        token: str | None = None,
        bot_user_id: str = "U0BOT",
    ) -> Team:
        team = Team(
            id=team_id,
            name=name,
            bot_token=token or f"xoxb-{team_id}-{uuid.uuid4().hex[:12]}",
            bot_user_id=bot_user_id,
            bot_id="B" + team_id[1:],
        )
        self.teams[team_id] = team
        self._by_token[team.bot_token] = team
        return team

    def add_app_token(self) -> str:
        token = f"xapp-1-A0FAKE-{uuid.uuid4().hex[:10]}"
        self.app_tokens.add(token)
        return token

    def add_oauth_code(self, team_id: str, *, client_id: str, client_secret: str) -> str:
        """A one-time ``code`` that oauth.v2.access exchanges for a new team's bot token."""
        self.oauth_client = (client_id, client_secret)
        team = Team(
            id=team_id,
            name=f"Workspace {team_id}",
            bot_token=f"xoxb-{team_id}-{uuid.uuid4().hex[:12]}",
            bot_user_id="U0BOT" + team_id[-2:],
            bot_id="B" + team_id[1:],
        )
        code = uuid.uuid4().hex
        self.oauth_codes[code] = team
        return code

    def add_user(self, user_id: str, *, name: str, email: str | None = None) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name.lower().replace(" ", "."),
            "real_name": name,
            "profile": {"display_name": name, "real_name": name, "email": email},
        }

    def host_file(self, team: Team, name: str, mimetype: str, data: bytes) -> HostedFile:
        fid = f"F{next(self._ids):08d}"
        f = HostedFile(fid, team.id, name, mimetype, data)
        f.url = f"{self.base_url}/files-pri/{fid}/{name}"
        self.hosted[fid] = f
        return f

    def response_url(self) -> str:
        return f"{self.base_url}/response/{uuid.uuid4().hex}"

    def fail_next(
        self,
        method: str,
        error: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        team: str | None = None,
        times: int = 1,
    ) -> None:
        """Force the next ``times`` calls of ``method`` to fail with ``error``."""
        st = status if status is not None else (429 if error == "ratelimited" else 200)
        for _ in range(times):
            self.faults.append(Fault(method, error, st, retry_after, team))

    def refuse(self, method: str, error: str = "feature_not_enabled") -> None:
        """Slack refuses ``method`` (every call, every team) with ``error`` until :meth:`allow`."""
        self.refusals[method] = error

    def allow(self, method: str) -> None:
        self.refusals.pop(method, None)

    def new_ts(self) -> str:
        """Strictly increasing message ts (seconds.microseconds), like Slack's."""
        self._last_us = max(int(time.time() * 1_000_000), self._last_us + 1)
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    def user_message(
        self,
        team: Team,
        channel: str,
        text: str,
        *,
        user: str = "U0USER",
        thread_ts: str | None = None,
    ) -> Message:
        """A message a person wrote (so threads read naturally in assertions)."""
        m = Message(
            ts=self.new_ts(),
            channel=channel,
            team=team.id,
            text=text,
            thread_ts=thread_ts,
            user=user,
        )
        self.messages[channel].append(m)
        return m

    # ------------------------------------------------------------------ event payload helpers

    def event_body(self, team: Team, event: dict[str, Any], *, event_id: str | None = None) -> str:
        """An Events API ``event_callback`` envelope, as Slack posts it."""
        body = {
            "token": "verification-token-unused",
            "team_id": team.id,
            "api_app_id": team.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team.id,
                    "user_id": team.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + uuid.uuid4().hex[:20],
        }
        return json.dumps(body)

    def home_opened_event(
        self, team: Team, user: str, channel: str, *, tab: str = "messages"
    ) -> dict[str, Any]:
        """``app_home_opened``: someone opened the app's Messages (or Home) tab."""
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": channel,
            "tab": tab,
            "event_ts": self.new_ts(),
        }

    def context_changed_event(
        self, team: Team, user: str, entities: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        """``app_context_changed`` (agent view only): what ``user`` looks at, most relevant
        first (``context: {}`` when nothing). Slack's example shows no ``user``; ours has one."""
        ctx: dict[str, Any] = {"entities": entities} if entities else {}
        return {
            "type": "app_context_changed",
            "user": user,
            "context": ctx,
            "event_ts": self.new_ts(),
        }

    def session_stopped_event(
        self, team: Team, user: str, channel: str, thread_ts: str
    ) -> dict[str, Any]:
        """Someone clicked Slack's Stop button of an agent session: Slack stops the app's live
        streams in that thread (listed in ``streaming_message_ts``) and sends this event."""
        stopped = [m.ts for m in self.thread(channel, thread_ts) if m.streaming]
        for ts in stopped:
            self.expire_stream(channel, ts)
        return {
            "type": "agent_session_stopped",
            "user": user,
            "channel": channel,
            "thread_ts": thread_ts,
            "streaming_message_ts": stopped,
            "event_ts": self.new_ts(),
        }

    def thread_started_event(self, team: Team, user: str, channel: str) -> dict[str, Any]:
        """Legacy ``assistant_view``: ``assistant_thread_started`` with its thread."""
        return {
            "type": "assistant_thread_started",
            "event_ts": self.new_ts(),
            "assistant_thread": {
                "user_id": user,
                "channel_id": channel,
                "thread_ts": self.new_ts(),
                "context": {},
            },
        }

    def event(
        self,
        team: Team,
        event: dict[str, Any],
        *,
        secret: str,
        event_id: str | None = None,
        retry_num: int | None = None,
        timestamp: int | None = None,
    ) -> tuple[str, dict[str, str]]:
        body = self.event_body(team, event, event_id=event_id)
        headers = sign(secret, body, timestamp)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return body, headers

    def form(self, fields: dict[str, Any], *, secret: str) -> tuple[str, dict[str, str]]:
        """A form-encoded request (slash command, or ``payload=`` for interactivity), signed."""
        body = urlencode(fields)
        headers = sign(secret, body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return body, headers

    def interaction(self, payload: dict[str, Any], *, secret: str) -> tuple[str, dict[str, str]]:
        return self.form({"payload": json.dumps(payload)}, secret=secret)

    def block_action(
        self,
        team: Team,
        message: Message,
        button: dict[str, Any],
        *,
        user: str = "U0USER",
        inputs: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` clicks ``button``.

        ``inputs``: what the user typed or picked in the message's input blocks (by block id);
        the payload's ``state.values`` then holds every input block of the message, as Slack
        sends it (untouched inputs with their initial value, or null)."""
        payload = self._block_action(team, message, button, user=user)
        if any(b.get("type") == "input" for b in message.blocks):
            payload["state"] = {"values": _state_values(message.blocks, inputs or {})}
        return payload

    def _block_action(
        self, team: Team, message: Message, button: dict[str, Any], *, user: str
    ) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "name": "someone", "team_id": team.id},
            "api_app_id": team.app_id,
            "token": "verification-token-unused",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
                "thread_ts": message.thread_ts,
            },
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:8]}",
            "team": {"id": team.id, "domain": "acme"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": "general"},
            "message": {
                "type": "message",
                "user": team.bot_user_id,
                "bot_id": team.bot_id,
                "text": message.text,
                "ts": message.ts,
                "thread_ts": message.thread_ts,
                "blocks": message.blocks,
                "team": team.id,
            },
            "response_url": self.response_url(),
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": "b",
                    "text": button.get("text"),
                    "value": button.get("value"),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def feedback_click(
        self, team: Team, message: Message, *, positive: bool, user: str = "U0USER"
    ) -> dict[str, Any]:
        """The ``block_actions`` payload of a click on a ``feedback_buttons`` element: the
        action's ``value`` is the clicked button's value."""
        element = message.feedback_buttons()
        if element is None:
            raise AssertionError("the message has no feedback buttons")
        button = element["positive_button" if positive else "negative_button"]
        payload = self.block_action(team, message, {"action_id": element["action_id"]}, user=user)
        payload["actions"] = [
            {
                "type": "feedback_buttons",
                "action_id": element["action_id"],
                "block_id": "dify_feedback",
                "value": button["value"],
                "action_ts": f"{time.time():.6f}",
            }
        ]
        return payload

    # ------------------------------------------------------------------ assertions helpers

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """Every live message of a thread, root first, in ts order."""
        out = [
            m
            for m in self.messages.get(channel, [])
            if not m.deleted and (m.ts == thread_ts or m.thread_ts == thread_ts)
        ]
        return sorted(out, key=lambda m: float(m.ts))

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        msgs = self.messages.get(channel, [])
        return sorted(
            (
                m
                for m in msgs
                if m.bot_id and not m.deleted and (thread_ts is None or m.thread_ts == thread_ts)
            ),
            key=lambda m: float(m.ts),
        )

    def calls_to(self, method: str, *, ok_only: bool = False) -> list[Call]:
        return [c for c in self.calls if c.method == method and (not ok_only or c.error is None)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true (re-checked on every call the fake serves)."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("condition not reached on the fake Slack")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ rate limits

    def _limited(self, team: str, method: str, params: dict[str, Any]) -> float | None:
        """Seconds to wait if this call is over a limit, else None (and the call is counted)."""
        if not self.enforce_limits:
            return None
        now = time.monotonic()
        if method == "chat.postMessage":
            channel = (team, str(params.get("channel", "")))
            wait = self.channel_posts.check(channel, now)
            if wait is None:
                wait = self._window(team, method, POST_PER_WORKSPACE, now)
            if wait is not None:
                return wait
            self.channel_posts.take(channel, now)
            return None
        per_min = METHOD_TIERS.get(method)
        if per_min is None:
            return None
        return self._window(team, method, per_min, now)

    def _window(self, team: str, method: str, per_min: int, now: float) -> float | None:
        q = self._windows[(team, method)]
        while q and now - q[0] >= 60.0:
            q.popleft()
        if len(q) >= per_min:
            return 60.0 - (now - q[0])
        q.append(now)
        return None

    # ------------------------------------------------------------------ the Web API

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if request.method == "POST" and request.can_read_body:
            if ctype == "application/json":
                try:
                    data = await request.json()
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    params.update(data)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for k, v in form.items():
                    params[k] = v if isinstance(v, str) else getattr(v, "filename", "")
        # Form-encoded clients send structures as JSON strings.
        for k in ("blocks", "files", "chunks", "loading_messages", "metadata"):
            raw = params.get(k)
            if isinstance(raw, str) and raw[:1] in "[{":
                with contextlib.suppress(ValueError):
                    params[k] = json.loads(raw)
        return params

    def _token(self, request: web.Request, params: dict[str, Any]) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if auth.lower().startswith("basic "):
            # oauth.v2.access: client credentials as HTTP Basic auth.
            with contextlib.suppress(ValueError):
                cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
                params.setdefault("client_id", cid)
                params.setdefault("client_secret", secret)
        tok = params.pop("token", None)
        return tok if isinstance(tok, str) else None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = self._token(request, params)
        team = self._by_token.get(token or "")
        call = Call(method, params, team.id if team else None, time.time(), token)
        self.calls.append(call)
        try:
            status, body, headers = self._dispatch(method, params, token, team, call)
        except Exception as e:  # a bug in the fake must show up in the test, not hang it
            status, body, headers = 500, {"ok": False, "error": f"fake_error:{e!r}"}, {}
        call.status = status
        if not body.get("ok"):
            call.error = str(body.get("error"))
        else:
            self._annotate(call, body)
        if call.error == "ratelimited":
            self.ratelimited.append(call)
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _annotate(self, call: Call, body: dict[str, Any]) -> None:
        p = call.params
        channel = str(p.get("channel") or p.get("channel_id") or "")
        if call.method in ("chat.postMessage", "chat.startStream"):
            call.thread = p.get("thread_ts") or body.get("ts")
        elif call.method in ("chat.update", "chat.appendStream", "chat.stopStream"):
            m = self._find(channel, str(p.get("ts", "")))
            call.thread = (m.thread_ts or m.ts) if m is not None else None
        blocks = p["blocks"] if isinstance(p.get("blocks"), list) else []
        chunks = p["chunks"] if isinstance(p.get("chunks"), list) else []
        call.visible = (
            bool(p.get("markdown_text"))
            or any(
                isinstance(b, dict) and b.get("type") == "markdown" and b.get("text")
                for b in blocks
            )
            or any(
                isinstance(c, dict) and c.get("type") == "markdown_text" and c.get("text")
                for c in chunks
            )
        )

    async def _record(self, request: web.Request) -> web.Response:
        """Every call so far, for a benchmark running this fake in another process."""
        calls = [
            {
                "method": c.method,
                "team": c.team,
                "time": c.time,
                "status": c.status,
                "error": c.error,
                "thread": c.thread,
                "visible": c.visible,
            }
            for c in self.calls
        ]
        return web.json_response({"calls": calls, "ratelimited": len(self.ratelimited)})

    def _dispatch(
        self, method: str, params: dict[str, Any], token: str | None, team: Team | None, call: Call
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "oauth.v2.access":
            return self._oauth_access(params)
        if method == "apps.connections.open":
            if token not in self.app_tokens:
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            ticket = uuid.uuid4().hex
            return (
                200,
                {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"},
                {},
            )
        if team is None:
            return 200, {"ok": False, "error": "not_authed" if not token else "invalid_auth"}, {}
        for i, f in enumerate(self.faults):
            if f.method == method and (f.team is None or f.team == team.id):
                del self.faults[i]
                headers = (
                    {"Retry-After": str(int(f.retry_after or 1))}
                    if f.error == "ratelimited"
                    else {}
                )
                return f.status, {"ok": False, "error": f.error}, headers
        refusal = self.refusals.get(method)
        if refusal is not None:
            return 200, {"ok": False, "error": refusal}, {}
        refused = referees.slack_refusal(method, params) if self.referee else None
        if refused is not None:
            # What Slack answers for arguments it cannot use; the referee's reasons ride along
            # as Slack's own response_metadata.messages do.
            error, problems = refused
            self.contract_errors.extend(problems)
            referees.VIOLATIONS.extend(f"Slack {p}" for p in problems)
            messages = [f"[ERROR] {p}" for p in problems]
            body = {"ok": False, "error": error, "response_metadata": {"messages": messages}}
            return 200, body, {}
        wait = self._limited(team.id, method, params)
        if wait is not None:
            return (
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        status, body = handler(params, team)
        return status, body, {}

    # --- method handlers: (params, team) -> (status, body)

    def _m_auth_test(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        return 200, {
            "ok": True,
            "url": f"https://{team.name.lower()}.slack.com/",
            "team": team.name,
            "user": "difybot",
            "team_id": team.id,
            "user_id": team.bot_user_id,
            "bot_id": team.bot_id,
            "is_enterprise_install": False,
        }

    def _channel_error(self, channel: str) -> str | None:
        if not channel:
            return "channel_not_found"
        if channel in self.missing_channels:
            return "channel_not_found"
        if channel in self.not_in_channels:
            return "not_in_channel"
        return None

    def _size_error(self, p: dict[str, Any]) -> str | None:
        text = p.get("text") or ""
        if not isinstance(text, str):
            return "invalid_arguments"
        if len(text) > TEXT_LIMIT:
            return "msg_too_long"
        blocks = p.get("blocks") or []
        if not isinstance(blocks, list):
            return "invalid_blocks_format"
        if len(blocks) > MAX_BLOCKS:
            return "invalid_blocks"
        md_total = 0
        for b in blocks:
            if not isinstance(b, dict) or "type" not in b:
                return "invalid_blocks"
            if b["type"] == "markdown":
                md_total += len(str(b.get("text", "")))
            if (
                b["type"] == "section"
                and len(str((b.get("text") or {}).get("text", ""))) > SECTION_LIMIT
            ):
                return "invalid_blocks"
            if b["type"] == "actions" and not b.get("elements"):
                return "invalid_blocks"
            if b["type"] == "input" and (err := _input_error(b)):
                return err
        if md_total > MARKDOWN_LIMIT:
            return "msg_too_long"
        if not text and not blocks:
            return "no_text"
        return None

    def _find(self, channel: str, ts: str) -> Message | None:
        for m in self.messages.get(channel, []):
            if m.ts == ts and not m.deleted:
                return m
        return None

    def _m_chat_postMessage(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel = str(p.get("channel", ""))
        err = self._channel_error(channel) or self._size_error(p)
        if err:
            return 200, {"ok": False, "error": err}
        thread_ts = p.get("thread_ts") or None
        if thread_ts is not None and not isinstance(thread_ts, str):
            return 200, {"ok": False, "error": "invalid_thread_ts"}
        m = Message(
            ts=self.new_ts(),
            channel=channel,
            team=team.id,
            text=str(p.get("text") or ""),
            blocks=list(p.get("blocks") or []),
            thread_ts=thread_ts,
            bot_id=team.bot_id,
            user=team.bot_user_id,
        )
        self.messages[channel].append(m)
        return 200, {"ok": True, "channel": channel, "ts": m.ts, "message": self._msg_json(m)}

    def _msg_json(self, m: Message) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "message", "text": m.text, "ts": m.ts, "team": m.team}
        if m.bot_id:
            d.update(bot_id=m.bot_id, user=m.user, app_id="A0FAKEAPP")
        elif m.user:
            d["user"] = m.user
        if m.blocks:
            d["blocks"] = m.blocks
        if m.thread_ts:
            d["thread_ts"] = m.thread_ts
        return d

    def _m_chat_update(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        m = self._find(channel, ts)
        if m is None:
            return 200, {"ok": False, "error": "message_not_found"}
        if m.bot_id != team.bot_id:
            return 200, {"ok": False, "error": "cant_update_message"}
        err = self._size_error(p)
        if err:
            return 200, {"ok": False, "error": err}
        m.text = str(p.get("text") or "")
        if "blocks" in p:
            m.blocks = list(p.get("blocks") or [])
        m.markdown = ""
        m.streaming = False
        m.edits += 1
        return 200, {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": m.text,
            "message": self._msg_json(m),
        }

    def _m_chat_delete(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
        m = self._find(channel, ts)
        if m is None:
            return 200, {"ok": False, "error": "message_not_found"}
        m.deleted = True
        return 200, {"ok": True, "channel": channel, "ts": ts}

    def delete_message(self, channel: str, ts: str) -> None:
        """A person deletes a message (the bot's next chat.update gets message_not_found)."""
        m = self._find(channel, ts)
        if m is not None:
            m.deleted = True

    def _m_chat_postEphemeral(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel = str(p.get("channel", ""))
        err = self._channel_error(channel) or self._size_error(p)
        if err:
            return 200, {"ok": False, "error": err}
        if not p.get("user"):
            return 200, {"ok": False, "error": "user_not_in_channel"}
        return 200, {"ok": True, "message_ts": self.new_ts()}

    def _stream_chunks(self, p: dict[str, Any], m: Message | None) -> tuple[str, str | None]:
        """Apply ``markdown_text`` and ``chunks`` of a stream call: (markdown added, error)."""
        text = p.get("markdown_text")
        if text is not None and not isinstance(text, str):
            return "", "invalid_arguments"
        md = text or ""
        if len(md) > MARKDOWN_LIMIT:
            return "", "msg_too_long"
        chunks = p.get("chunks")
        if chunks is None:
            return md, None
        for c in chunks:
            if c["type"] == "markdown_text":
                md += str(c["text"])
            elif m is not None and c["type"] == "task_update":
                m.tasks[str(c["id"])] = dict(c)
            elif m is not None and c["type"] == "plan_update":
                m.plan_title = str(c["title"])
            elif m is not None and c["type"] == "blocks":
                m.blocks = [*m.blocks, *c["blocks"]]
        return md, None

    def _m_chat_startStream(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel = str(p.get("channel", ""))
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        if not p.get("thread_ts"):
            return 200, {"ok": False, "error": "invalid_arguments"}
        if not channel.startswith("D"):
            if not p.get("recipient_user_id"):
                return 200, {"ok": False, "error": "missing_recipient_user_id"}
            if not p.get("recipient_team_id"):
                return 200, {"ok": False, "error": "missing_recipient_team_id"}
        mode = p.get("task_display_mode", "timeline")
        if mode not in ("timeline", "plan"):
            return 200, {"ok": False, "error": "invalid_arguments"}
        m = Message(
            ts=self.new_ts(),
            channel=channel,
            team=team.id,
            thread_ts=str(p["thread_ts"]),
            bot_id=team.bot_id,
            user=team.bot_user_id,
            streaming=True,
            task_display_mode=str(mode),
        )
        md, err = self._stream_chunks(p, m)
        if err:
            return 200, {"ok": False, "error": err}
        m.markdown = md
        self.messages[channel].append(m)
        return 200, {"ok": True, "channel": channel, "ts": m.ts}

    def _m_chat_appendStream(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
        m = self._find(channel, ts)
        if m is None:
            return 200, {"ok": False, "error": "message_not_found"}
        if not m.streaming:
            return 200, {"ok": False, "error": "message_not_in_streaming_state"}
        if p.get("markdown_text") is None and p.get("chunks") is None:
            return 200, {"ok": False, "error": "invalid_arguments"}
        delta, err = self._stream_chunks(p, m)
        if err:
            return 200, {"ok": False, "error": err}
        if len(m.markdown) + len(delta) > MARKDOWN_LIMIT:
            # One streamed message renders as one markdown block: 12,000 characters.
            return 200, {"ok": False, "error": "msg_too_long"}
        m.markdown += delta
        m.edits += 1
        return 200, {"ok": True, "channel": channel, "ts": ts}

    def expire_stream(self, channel: str, ts: str) -> None:
        """Slack ends streams after ~5 minutes: later appends get message_not_in_streaming_state."""
        m = self._find(channel, ts)
        if m is not None:
            m.streaming = False

    def _m_chat_stopStream(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
        m = self._find(channel, ts)
        if m is None:
            return 200, {"ok": False, "error": "message_not_found"}
        if not m.streaming:
            return 200, {"ok": False, "error": "message_not_in_streaming_state"}
        blocks = p.get("blocks")
        if blocks is not None and (not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS):
            return 200, {"ok": False, "error": "invalid_blocks"}
        status = p.get("session_status")
        if status is not None and status not in ("active", "processing", "suspended", "closed"):
            return 200, {"ok": False, "error": "invalid_arguments"}
        delta, err = self._stream_chunks(p, m)
        if err:
            return 200, {"ok": False, "error": err}
        if len(m.markdown) + len(delta) > MARKDOWN_LIMIT:
            return 200, {"ok": False, "error": "msg_too_long"}
        m.markdown += delta
        if isinstance(blocks, list):
            m.blocks = [*m.blocks, *blocks]
        m.streaming = False
        m.text = m.markdown
        session = self.sessions.get((channel, str(m.thread_ts)))
        if session is not None:  # stopStream moves the thread's session on (default: active)
            self._session_status(session, str(status or "active"))
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": self._msg_json(m)}

    @staticmethod
    def _session_status(session: dict[str, Any], status: str) -> None:
        session["status"] = status
        session["history"].append(status)

    def _m_agents_sessions_setStatus(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        channel, thread_ts = str(p.get("channel_id", "")), p.get("thread_ts")
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        status = p.get("status")
        if status not in SESSION_STATUSES or not thread_ts:
            return 200, {"ok": False, "error": "invalid_arguments"}
        if not team.agent_view:
            return 200, {"ok": False, "error": "not_an_agent"}
        session = self.sessions.setdefault(
            (channel, str(thread_ts)), {"status": None, "title": p.get("title"), "history": []}
        )
        self._session_status(session, str(status))
        return 200, {"ok": True, "status": status, "title": session["title"]}

    def _m_agents_sessions_rename(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        channel, thread_ts = str(p.get("channel_id", "")), str(p.get("thread_ts") or "")
        session = self.sessions.get((channel, thread_ts))
        if session is None:
            return 200, {"ok": False, "error": "session_not_found"}
        title = p.get("title")
        if not isinstance(title, str) or not 0 < len(title) <= 200:
            return 200, {"ok": False, "error": "invalid_arguments"}
        session["title"] = title
        return 200, {"ok": True, "title": title}

    def _m_assistant_threads_setStatus(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        channel = str(p.get("channel_id", ""))
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        if not p.get("thread_ts") or "status" not in p:
            return 200, {"ok": False, "error": "invalid_arguments"}
        loading = p.get("loading_messages")
        if loading is not None and (
            not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES
        ):
            return 200, {"ok": False, "error": "invalid_arguments"}
        self.statuses.append(
            {
                "channel": channel,
                "thread_ts": p["thread_ts"],
                "status": p["status"],
                "loading_messages": loading,
                "time": time.time(),
            }
        )
        return 200, {"ok": True}

    def _m_assistant_threads_setSuggestedPrompts(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        channel = str(p.get("channel_id", ""))
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        prompts = p.get("prompts")
        if (
            not isinstance(prompts, list)
            or not 1 <= len(prompts) <= MAX_PROMPTS
            or not all(
                isinstance(x, dict)
                and isinstance(x.get("title"), str)
                and x["title"]
                and isinstance(x.get("message"), str)
                and x["message"]
                for x in prompts
            )
        ):
            return 200, {"ok": False, "error": "invalid_arguments"}
        thread_ts = p.get("thread_ts")
        # Agent apps: prompts belong to the Messages tab; with a thread_ts the call "silently
        # fails" (ok, but nothing shows).
        shown = not (team.agent_view and channel.startswith("D") and thread_ts)
        self.prompts.append(
            {
                "channel": channel,
                "thread_ts": thread_ts,
                "title": p.get("title"),
                "prompts": prompts,
                "shown": shown,
                "time": time.time(),
            }
        )
        return 200, {"ok": True}

    def _m_assistant_threads_setTitle(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        channel = str(p.get("channel_id", ""))
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        title = p.get("title")
        if not p.get("thread_ts") or not isinstance(title, str) or not title:
            return 200, {"ok": False, "error": "invalid_arguments"}
        self.titles[(channel, str(p["thread_ts"]))] = title
        return 200, {"ok": True}

    def _m_conversations_replies(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
        err = self._channel_error(channel)
        if err:
            return 200, {"ok": False, "error": err}
        msgs = self.thread(channel, ts)
        if not msgs:
            return 200, {"ok": False, "error": "thread_not_found"}
        limit = int(p.get("limit") or 1000)
        return 200, {
            "ok": True,
            "messages": [self._msg_json(m) for m in msgs[:limit]],
            "has_more": len(msgs) > limit,
        }

    def _m_users_info(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        u = self.users.get(str(p.get("user", "")))
        if u is None:
            return 200, {"ok": False, "error": "user_not_found"}
        return 200, {"ok": True, "user": {**u, "team_id": team.id, "is_bot": False}}

    def _m_usergroups_users_list(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        group = self.usergroups.get(str(p.get("usergroup", "")))
        if group is None:
            return 200, {"ok": False, "error": "no_such_subteam"}
        return 200, {"ok": True, "users": list(group)}

    def _m_files_info(self, p: dict[str, Any], team: Team) -> tuple[int, dict[str, Any]]:
        f = self.hosted.get(str(p.get("file", "")))
        if f is None or f.team != team.id:
            return 200, {"ok": False, "error": "file_not_found"}
        return 200, {"ok": True, "file": f.to_event()}

    def _m_files_getUploadURLExternal(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        name = str(p.get("filename") or "")
        try:
            length = int(p.get("length") or 0)
        except (TypeError, ValueError):
            length = 0
        if not name or length <= 0:
            return 200, {"ok": False, "error": "invalid_arguments"}
        fid = f"F{next(self._ids):08d}"
        self.uploads[fid] = UploadedFile(fid, name, length)
        return 200, {"ok": True, "upload_url": f"{self.base_url}/upload/v1/{fid}", "file_id": fid}

    def _m_files_completeUploadExternal(
        self, p: dict[str, Any], team: Team
    ) -> tuple[int, dict[str, Any]]:
        files = p.get("files")
        if not isinstance(files, list) or not files:
            return 200, {"ok": False, "error": "invalid_arguments"}
        channel = p.get("channel_id")
        if channel:
            err = self._channel_error(str(channel))
            if err:
                return 200, {"ok": False, "error": err}
        out = []
        for f in files:
            up = self.uploads.get(str(f.get("id", ""))) if isinstance(f, dict) else None
            if up is None or len(up.data) != up.length:
                return 200, {
                    "ok": False,
                    "error": "file_not_found" if up is None else "file_upload_size_mismatch",
                }
            up.completed, up.title = True, str(f.get("title") or up.name)
            up.channel, up.thread_ts = (str(channel) if channel else None), p.get("thread_ts")
            if channel:
                m = Message(
                    ts=self.new_ts(),
                    channel=str(channel),
                    team=team.id,
                    thread_ts=up.thread_ts,
                    bot_id=team.bot_id,
                    user=team.bot_user_id,
                    files=[up.id],
                )
                self.messages[str(channel)].append(m)
            out.append({"id": up.id, "title": up.title})
        return 200, {"ok": True, "files": out}

    def _oauth_access(self, p: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        code = str(p.get("code", ""))
        cid, secret = p.get("client_id"), p.get("client_secret")
        if self.oauth_client is None or (cid, secret) != self.oauth_client:
            return 200, {"ok": False, "error": "invalid_client_id"}, {}
        team = self.oauth_codes.pop(code, None)
        if team is None:
            return 200, {"ok": False, "error": "invalid_code"}, {}
        self.teams[team.id] = team
        self._by_token[team.bot_token] = team
        return (
            200,
            {
                "ok": True,
                "access_token": team.bot_token,
                "token_type": "bot",
                "scope": "app_mentions:read,chat:write,commands",
                "bot_user_id": team.bot_user_id,
                "app_id": team.app_id,
                "team": {"id": team.id, "name": team.name},
                "enterprise": None,
                "is_enterprise_install": False,
                "authed_user": {"id": "U0INSTALLER"},
            },
            {},
        )

    # ------------------------------------------------------------------ files and response_url

    async def _download(self, request: web.Request) -> web.Response:
        f = self.hosted.get(request.match_info["file_id"])
        auth = request.headers.get("Authorization", "")
        team = self._by_token.get(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
        if f is None:
            return web.Response(status=404, text="Not Found")
        if team is None or team.id != f.team:
            # What Slack really does without a valid token: a 200 HTML sign-in page.
            return web.Response(
                status=200, text="<!DOCTYPE html><html>Sign in</html>", content_type="text/html"
            )
        return web.Response(body=f.data, content_type=f.mimetype)

    async def _upload(self, request: web.Request) -> web.Response:
        up = self.uploads.get(request.match_info["file_id"])
        if up is None:
            return web.Response(status=404, text="Not Found")
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            part = await reader.next()
            data = await part.read() if isinstance(part, BodyPartReader) else b""
        else:
            data = await request.read()
        up.data = bytes(data)
        await self._notify()
        return web.Response(text=f"OK - {len(data)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        rid = request.match_info["rid"]
        if len(self.responses[rid]) >= 5:
            return web.Response(status=404, text="used_url")
        self.responses[rid].append(body)
        await self._notify()
        return web.Response(text="ok")

    def all_responses(self) -> list[dict[str, Any]]:
        return [b for bodies in self.responses.values() for b in bodies]

    # ------------------------------------------------------------------ Socket Mode

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A0FAKEAPP"},
            }
        )
        self._socket_ready.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                eid = data.get("envelope_id") if isinstance(data, dict) else None
                if isinstance(eid, str):
                    self.ws_acks[eid] = data
                    ev = self._ack_events.get(eid)
                    if ev is not None:
                        ev.set()
                    await self._notify()
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_ready.clear()
        return ws

    async def drop_sockets(self) -> None:
        """Close every Socket Mode connection from Slack's side (a network blip, a restart)."""
        for ws in list(self._sockets):
            await ws.close()

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's notice that it will close the connection (it rotates them every few hours)."""
        await self._sockets[-1].send_json({"type": "disconnect", "reason": reason})

    async def wait_socket(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self._socket_ready.wait(), timeout)

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0
    ) -> str:
        """Send one Socket Mode envelope (``events_api``, ``interactive``, ``slash_commands``)."""
        eid = str(uuid.uuid4())
        self._ack_events[eid] = asyncio.Event()
        env = {
            "envelope_id": eid,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "" if not retry_attempt else "timeout",
        }
        await self._sockets[-1].send_str(json.dumps(env))
        return eid

    async def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        await asyncio.wait_for(self._ack_events[envelope_id].wait(), timeout)
        return self.ws_acks[envelope_id]


async def _main() -> None:  # pragma: no cover - used by the benchmark's helper process
    import argparse
    import signal
    import sys

    ap = argparse.ArgumentParser(description="fake Slack Web API")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--team", default="T0001")
    ap.add_argument("--token", default="xoxb-bench")
    ap.add_argument("--no-limits", action="store_true")
    args = ap.parse_args()
    fake = FakeSlack(enforce_limits=not args.no_limits)
    await fake.start(port=args.port)
    fake.add_team(args.team, token=args.token)
    sys.stdout.write(fake.api_url + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.close()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
