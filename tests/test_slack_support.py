"""Fixtures and helpers shared by the Slack tests (no tests in here).

A test gets a started fake Slack (``fake_slack``), a fresh fake Dify app (``dify_app``) and
``slack_bot(...)``: a started service with only the Slack adapter, pointed at both fakes, plus
helpers to send signed events the way Slack does and to wait for the visible answer.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from tests.fakes.slack_api import FakeSlack, Message, Team

SECRET = "test-signing-secret-0123456789"  # noqa: S105 - test value
PAYLOADS = Path(__file__).parent / "payloads" / "slack"
CHANNEL = "C0GENERAL"
USER = "U0USER"


def payload(name: str, **overrides: Any) -> dict[str, Any]:
    """A recorded-style Slack payload from tests/payloads/slack with fields replaced."""
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    data = copy.deepcopy(data)
    data.update(overrides)
    return data


class SlackBot:
    """A running bridge with the Slack adapter, seen from Slack's side."""

    def __init__(
        self,
        service: Any,
        fake: FakeSlack,
        team: Team,
        dify: Any,
        http: aiohttp.ClientSession,
        dify_server: Any = None,
    ) -> None:
        self.dify_server = dify_server
        self.service = service
        self.fake = fake
        self.team = team
        self.dify = dify
        self.http = http

    def dify_requests(self) -> list[Any]:
        """Requests the fake Dify received for this test's app."""
        return [r for r in self.dify_server.requests if r.api_key == self.dify.api_key]

    @property
    def events_url(self) -> str:
        return f"{self.service.base_url}/slack/events"

    async def post(self, body: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        async with self.http.post(self.events_url, data=body.encode(), headers=headers) as r:
            await r.read()
            return r

    async def send(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        team: Team | None = None,
        secret: str = SECRET,
        timestamp: int | None = None,
    ) -> int:
        body, headers = self.fake.event(
            team or self.team,
            event,
            secret=secret,
            event_id=event_id,
            retry_num=retry_num,
            timestamp=timestamp,
        )
        return (await self.post(body, headers)).status

    def mention(
        self,
        text: str,
        *,
        channel: str = CHANNEL,
        user: str = USER,
        thread_ts: str | None = None,
        team: Team | None = None,
    ) -> dict[str, Any]:
        """A person writes ``@bot text``: the message exists in Slack, the event is returned."""
        t = team or self.team
        m = self.fake.user_message(
            t, channel, f"<@{t.bot_user_id}> {text}", user=user, thread_ts=thread_ts
        )
        ev = payload(
            "app_mention",
            text=m.text,
            user=user,
            ts=m.ts,
            event_ts=m.ts,
            channel=channel,
            team=t.id,
        )
        if thread_ts:
            ev["thread_ts"] = thread_ts
        return ev

    def message(
        self,
        text: str,
        *,
        channel: str = CHANNEL,
        user: str = USER,
        thread_ts: str | None = None,
        channel_type: str = "channel",
    ) -> dict[str, Any]:
        m = self.fake.user_message(self.team, channel, text, user=user, thread_ts=thread_ts)
        ev = payload(
            "message_im",
            text=text,
            user=user,
            ts=m.ts,
            event_ts=m.ts,
            channel=channel,
            team=self.team.id,
            channel_type=channel_type,
        )
        if thread_ts:
            ev["thread_ts"] = thread_ts
        return ev

    def answers(self, channel: str, thread_ts: str) -> list[Message]:
        return self.fake.bot_messages(channel, thread_ts)

    async def idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the bridge has no answer in flight (give listeners a moment to submit)."""
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.05)
        while self.service.bridge.active_count:
            if time.monotonic() > deadline:
                raise TimeoutError("answers still running")
            await asyncio.sleep(0.02)

    async def final(
        self,
        channel: str,
        thread_ts: str,
        *,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[Message]:
        """Wait for ``count`` finished bot messages in the thread (no Stop button left)."""

        def done() -> bool:
            msgs = self.answers(channel, thread_ts)
            return (
                len(msgs) >= count
                and not any(_has_stop(m) for m in msgs)
                and not self.service.bridge.active_count
            )

        await asyncio.sleep(0.05)
        await self.fake.wait_for(done, timeout)
        return self.answers(channel, thread_ts)


def _has_stop(m: Message) -> bool:
    return any(b.get("action_id") == "dify_stop" for b in m.buttons()) or m.streaming


MakeBot = Callable[..., Awaitable[SlackBot]]


@pytest_asyncio.fixture(loop_scope="session")
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest_asyncio.fixture(loop_scope="session")
async def slack_bot(
    make_service: Any, fake_slack: FakeSlack, fake_dify: Any, dify_app: Any
) -> AsyncIterator[MakeBot]:
    """``await slack_bot(env=None, bridge_yaml=None)`` -> :class:`SlackBot` (bot-token mode)."""
    sessions: list[aiohttp.ClientSession] = []

    async def factory(
        env: dict[str, str] | None = None,
        *,
        bridge_yaml: str | None = None,
        team: Team | None = None,
    ) -> SlackBot:
        t = team or fake_slack.teams.get("T0001") or fake_slack.add_team("T0001")
        full = {
            "SLACK_BOT_TOKEN": t.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake_slack.api_url,
            "DIFY_API_KEY": dify_app.api_key,
        }
        full.update(env or {})
        service = await make_service(full, bridge_yaml=bridge_yaml, adapters=["slack"])
        http = aiohttp.ClientSession()
        sessions.append(http)
        return SlackBot(service, fake_slack, t, dify_app, http, fake_dify)

    try:
        yield factory
    finally:
        for s in sessions:
            await s.close()
