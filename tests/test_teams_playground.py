"""Teams stories played in Microsoft's own Teams emulator, the Microsoft 365 Agents Playground.

``dify-bridge serve`` runs as a subprocess in local mode (no app id: loopback serviceUrls only)
against the fake Dify; the Playground (npm, pinned, installed by ``tests/playground.py``) plays
Teams and the Bot Connector and is driven through its own HTTP API. Every story checks what the
user sees at the end and that the emulator accepted every activity the bot sent (and the bot
every activity the emulator sent). Both processes start once for the module.

Offline: ``SKIP_PLAYGROUND=1`` skips these stories; without it, a Playground that cannot be
installed or started fails them with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import base_env
from tests.fakes.dify import Fault
from tests.playground import (
    SKIP_ENV,
    Playground,
    PlaygroundUnavailable,
    Shown,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        os.environ.get(SKIP_ENV, "").lower() in ("1", "true", "yes"),
        reason=f"{SKIP_ENV} is set: the Teams emulator stories are skipped (offline work)",
    ),
]

TABLE_ANSWER = (
    "## Quarterly results\n\n"
    "Revenue grew **12%**; see the [report](https://example.com/q3) for details [1].\n\n"
    "| Region | Revenue |\n|---|---:|\n| EMEA | 4.2 |\n| APAC | 3.1 |\n\n"
    "```python\nprint('hello')\n```\n\n"
    "That is all."
)
SOURCES = [
    {
        "position": 1,
        "dataset_name": "Finance",
        "document_name": "Q3 report.pdf",
        "content": "Revenue grew twelve percent in the third quarter.",
        "score": 0.9,
    }
]
RESET_CLICK = {"difyBridge": "newTopic"}


class Bridge:
    """``dify-bridge serve`` as a subprocess; its stderr is kept for failure messages."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/messages"

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == name:
                out.append(ev)
        return out

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()


async def start_bridge(env: dict[str, str]) -> Bridge:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "0",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(proc.stderr.readline(), 30)
        if not raw:
            break
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "server.started":
            bridge = Bridge(proc, int(event["port"]))
            bridge.log = lines

            async def drain(stream: asyncio.StreamReader) -> None:
                while more := await stream.readline():
                    bridge.log.append(more.decode(errors="replace").rstrip())

            bridge._drain = asyncio.create_task(drain(proc.stderr))
            return bridge
    proc.kill()
    raise RuntimeError("dify-bridge serve did not start: " + " | ".join(lines[-20:]))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def world(redis_url: str, fake_dify: Any) -> AsyncIterator[tuple[Bridge, Playground, Any]]:
    app = fake_dify.add_app("app-pg-" + uuid.uuid4().hex[:8], mode="chat", chunk_size=12,
                            chunk_delay=0.02)
    env = {
        **os.environ,
        **base_env(redis_url, fake_dify.base_url, "pg" + uuid.uuid4().hex[:8]),
        "DIFY_API_KEY": app.api_key,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "TEAMS_ALLOW_UNAUTHENTICATED": "true",
        "EDIT_INTERVAL": "0.5",
    }
    for k in ("MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
              "SLACK_SIGNING_SECRET", "MICROSOFT_TOKEN_URL"):
        env.pop(k, None)
    bridge = await start_bridge(env)
    playground = Playground()
    try:
        await playground.start(bridge.url)
    except PlaygroundUnavailable as e:
        await playground.close()
        await bridge.stop()
        pytest.fail(f"the Teams emulator is unavailable: {e} (set {SKIP_ENV}=1 to skip)")
    try:
        yield bridge, playground, app
    finally:
        await playground.close()
        await bridge.stop()


@pytest.fixture
def pg(world: tuple[Bridge, Playground, Any]) -> Playground:
    return world[1]


@pytest.fixture
def dify(world: tuple[Bridge, Playground, Any]) -> Any:
    app = world[2]
    yield app
    app.answer = None
    app.retriever_resources = []
    app.suggested_questions = None
    app.faults.clear()
    app.chunk_delay = 0.02


def answers_after(pg: Playground, seen: int, conversation: str) -> list[Shown]:
    return pg.bot_messages(conversation)[seen:]


async def finished(pg: Playground, conversation: str, seen: int, needle: str) -> list[Shown]:
    """Wait until a new bot message in ``conversation`` shows ``needle``; the new messages."""
    await pg.wait_for(lambda: any(needle in m.text for m in answers_after(pg, seen, conversation)))
    await asyncio.sleep(0.8)  # anything that would follow (a second message, a late edit)
    return answers_after(pg, seen, conversation)


async def test_explore(pg: Playground, dify: Any) -> None:
    dify.answer = TABLE_ANSWER
    dify.retriever_resources = SOURCES
    seen = len(pg.bot_messages(pg.personal_chat))
    await pg.say(pg.personal_chat, "How did Q3 go?")
    await asyncio.sleep(6)
    for m in pg.bot_messages():
        print(m)
    for c in pg.bot_calls:
        print("CALL", c.activity, c.status, json.dumps(c.request)[:300], c.response)
    for t in pg.to_bot:
        print("TOBOT", t.activity, t.status, t.response)
    seen = len(pg.bot_messages(pg.group_chat))
    await asyncio.sleep(1)
    print("OUT", pg._out[-30:])
    await pg.say(pg.group_chat, "How did Q3 go?", mention=True)
    await asyncio.sleep(6)
    ans = await pg.say(pg.channel, "How did Q3 go?", mention=True)
    print("CHANNEL ANSWER", ans)
    await asyncio.sleep(6)
    for m in pg.bot_messages():
        print(m)
    for c in pg.bot_calls:
        print("CALL", c.activity, c.status, json.dumps(c.request)[:300], c.response)
    for t in pg.to_bot:
        print("TOBOT", t.activity, t.status, t.response, json.dumps(t.request)[:600])
    assert False
