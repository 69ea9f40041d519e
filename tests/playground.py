"""The Microsoft 365 Agents Playground (Microsoft's Teams emulator) as a test referee.

``install()`` puts the pinned npm package in a cache outside the repository; ``Playground`` runs
it headless against a bot endpoint on 127.0.0.1 and drives it through its own HTTP API, the one
its web UI uses:

* ``POST /_conversation/v1/conversations/{id}/messages``: a user sends a message (with the
  mention picker's mentions); ``POST /_conversation/v1/invoke``: a feedback click;
  ``POST /_conversation/v1/submit``: an Adaptive Card ``Action.Submit`` click.
* ``ws /_ws_conversation/v1/conversations/stream``: what the user sees (every message created or
  updated, as the UI renders it).
* ``ws /_ws/log/stream``: the activity log, each bot call with the HTTP status the emulator
  answered, and each activity sent to the bot with the bot's status.

Nothing of the package is committed; it is read from ``node_modules`` at run time.

Also runnable: ``python -m tests.playground install`` (install only, prints the CLI path) and
``python -m tests.playground try`` (``make playground``: the bridge in local mode plus the
Playground, to chat with the bot in a browser).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

PACKAGE = "@microsoft/m365agentsplayground"
VERSION = "0.2.28"
SKIP_ENV = "SKIP_PLAYGROUND"
DIR_ENV = "PLAYGROUND_DIR"
# The emulator's default world (its built-in config, no .m365agentsplayground.yml).
USER_ID = "user-id-0"
BOT_ID = "00000000-0000-0000-0000-00000000000011"
BOT_NAME = "Test Bot"
TENANT_ID = "00000000-0000-0000-0000-0000000000001"
CHANNEL = "team-id"  # the General channel of "My Team"
BOT_LABEL = "User Application"  # how the activity log names the bot side


class PlaygroundUnavailable(RuntimeError):
    """node/npm missing, the install failed, or the emulator did not start."""


def cache_dir() -> Path:
    explicit = os.environ.get(DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "dify-bridge" / f"playground-{VERSION}"


def _cli_path(root: Path) -> Path:
    return root / "node_modules" / PACKAGE / "cli.js"


def _installed_version(root: Path) -> str | None:
    try:
        meta = json.loads((root / "node_modules" / PACKAGE / "package.json").read_text())
    except (OSError, ValueError):
        return None
    v = meta.get("version") if isinstance(meta, dict) else None
    return v if isinstance(v, str) else None


def install(timeout: float = 300.0) -> Path:
    """The pinned Playground's ``cli.js``, installed with npm on first use (blocking)."""
    root = cache_dir()
    if _installed_version(root) == VERSION and _cli_path(root).is_file():
        return _cli_path(root)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise PlaygroundUnavailable(
            f"node and npm are needed to install {PACKAGE}@{VERSION} for the Teams emulator "
            f"tests (or set {SKIP_ENV}=1 to skip them)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other worktrees/sessions may install at the same time
        if _installed_version(root) == VERSION and _cli_path(root).is_file():
            return _cli_path(root)
        (root / "package.json").write_text('{"private": true}\n')
        cmd = [
            npm,
            "install",
            "--prefix",
            str(root),
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--save-exact",
            f"{PACKAGE}@{VERSION}",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - fixed command line
                cmd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise PlaygroundUnavailable(f"npm install {PACKAGE}@{VERSION} timed out") from e
        if done.returncode != 0 or _installed_version(root) != VERSION:
            tail = (done.stderr or done.stdout).strip()[-800:]
            raise PlaygroundUnavailable(
                f"npm install {PACKAGE}@{VERSION} into {root} failed (exit {done.returncode}): "
                f"{tail} (set {SKIP_ENV}=1 to skip the emulator tests when offline)"
            )
    return _cli_path(root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Shown:
    """One message as the emulator shows it (the last version of it)."""

    id: str
    conversation: str  # the chat, or the channel for a post and its replies
    from_bot: bool
    text: str
    attachments: list[dict[str, Any]]
    layout: str
    feedback: bool
    ai: Any
    suggested: list[str]
    post: str | None = None  # the channel post's conversation id when this message starts one
    versions: list[str] = field(default_factory=list)  # every text it showed, in order

    @property
    def cards(self) -> list[dict[str, Any]]:
        return [a.get("content") or {} for a in self.attachments]

    def card_texts(self) -> list[str]:
        """Every text in the message's Adaptive Cards (table cells, buttons)."""
        out: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for k in ("text", "title"):
                    if isinstance(node.get(k), str):
                        out.append(node[k])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(self.cards)
        return out


@dataclass
class BotCall:
    """One call the bot made to the emulator's Bot Connector, with the emulator's answer."""

    verb: str
    activity: str
    conversation: str | None
    status: int
    request: dict[str, Any]
    response: Any


@dataclass
class ToBot:
    """One activity the emulator sent to the bot, with the bot's answer."""

    activity: str
    status: int
    request: dict[str, Any]
    response: Any


class Playground:
    """A running emulator; ``await start(bot_url)``, then drive it like a user."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.shown: dict[str, Shown] = {}
        self.order: list[str] = []
        self.bot_calls: list[BotCall] = []
        self.to_bot: list[ToBot] = []
        self.raw_logs: list[dict[str, Any]] = []
        self.raw_conversation: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tmp = tempfile.mkdtemp(prefix="playground-")
        self._out: list[str] = []
        # Chat ids are made up at each start: read from the emulator's config.
        self.personal_chat = ""
        self.group_chat = ""
        self.channel = CHANNEL
        self.bridge: Any = None  # the bot's process, when a test attaches it (its log)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, bot_url: str, *, within: float = 60.0) -> None:
        cli = await asyncio.to_thread(install)
        node = shutil.which("node")
        if node is None:
            raise PlaygroundUnavailable("node is not on PATH")
        for _attempt in range(3):
            port = _free_port()
            env = {
                **os.environ,
                "TEAMSAPPTESTER_BROWSER": "none",  # never open a browser
                "M365_AGENTS_PLAYGROUND_LOGFILE": os.path.join(self._tmp, "playground.log"),
                "M365_AGENTS_PLAYGROUND_RECORDING_FILE": os.path.join(self._tmp, "events.log"),
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
            self.proc = await asyncio.create_subprocess_exec(
                node,
                str(cli),
                "start",
                "--app-endpoint",
                bot_url,
                "--channel-id",
                "msteams",
                "--port",
                str(port),
                # The bot is told to answer here (loopback, as the bridge's local mode requires).
                "--service-url",
                f"http://127.0.0.1:{port}/_connector",
                "--disable-telemetry",
                "--enable-events-recording",
                cwd=self._tmp,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            listening = await self._wait_listening(within)
            if listening == port:
                break
            await self.stop_process()  # someone took the port meanwhile: try another
        else:
            raise PlaygroundUnavailable(
                f"the Playground did not start; output: {' | '.join(self._out)[-800:]}"
            )
        self.port = port
        # No keep-alive: Node closes idle connections after 5 s, and a reused one then resets.
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        await self._wait_ping(within)
        async with self.http.get(f"{self.base_url}/_internal/v1/config") as r:
            config = (await r.json())["config"]
        self.personal_chat = config["personalChat"]["id"]
        self.group_chat = config["groupChats"][0]["id"]
        self.channel = config["teams"][0]["channels"][0]["id"]
        conv_ws = await self.http.ws_connect(
            f"{self.base_url}/_ws_conversation/v1/conversations/stream"
        )
        log_ws = await self.http.ws_connect(f"{self.base_url}/_ws/log/stream")
        self._tasks = [
            asyncio.create_task(self._read(conv_ws, self._on_conversation)),
            asyncio.create_task(self._read(log_ws, self._on_log)),
        ]

    async def _wait_listening(self, within: float) -> int | None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(
                    self.proc.stdout.readline(), deadline - time.monotonic()
                )
            except TimeoutError:
                break
            if not line:
                break
            text = line.decode(errors="replace").strip()
            self._out.append(text)
            if text.startswith("Listening on "):
                self._tasks.append(asyncio.create_task(self._drain(self.proc.stdout)))
                try:
                    return int(text.split()[-1])
                except ValueError:
                    return None
        return None

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._out.append(line.decode(errors="replace").rstrip())
            del self._out[:-200]

    async def _wait_ping(self, within: float) -> None:
        assert self.http is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(f"{self.base_url}/_debug/ping") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise PlaygroundUnavailable("the Playground did not answer /_debug/ping")

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, handle: Callable[[dict[str, Any]], None]
    ) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                handle(data)
                self.changed.set()

    def _on_conversation(self, data: dict[str, Any]) -> None:
        self.raw_conversation.append(data)
        message = data.get("message")
        if data.get("action") not in ("createMessage", "updateMessage") or not isinstance(
            message, dict
        ):
            return
        mid = str(message.get("messageId"))
        text = str(message.get("text") or "")
        old = self.shown.get(mid)
        actions = (message.get("suggestedActions") or {}).get("actions") or []
        shown = Shown(
            id=mid,
            conversation=str(data.get("actionConversationId")),
            from_bot=(message.get("from") or {}).get("id") == BOT_ID,
            text=text,
            attachments=list(message.get("attachments") or []),
            layout=str(message.get("attachmentLayout") or "list"),
            feedback=bool(message.get("feedbackLoopEnabled")),
            ai=message.get("aiEntity"),
            suggested=[str(a.get("title") or a.get("value")) for a in actions],
            post=message.get("postConversationId") or (old.post if old else None),
            versions=[*(old.versions if old else []), text],
        )
        if old is None:
            self.order.append(mid)
        self.shown[mid] = shown

    def _on_log(self, data: dict[str, Any]) -> None:
        item = data.get("log")
        if not isinstance(item, dict) or item.get("type") != "bot":
            return
        self.raw_logs.append(item)
        response = item.get("response") or {}
        request = (item.get("request") or {}).get("body") or {}
        status = int(response.get("statusCode") or 0)
        if item.get("from") == BOT_LABEL:
            self.bot_calls.append(
                BotCall(
                    verb="",
                    activity=str(item.get("activityName") or ""),
                    conversation=item.get("conversationId"),
                    status=status,
                    request=request if isinstance(request, dict) else {},
                    response=response.get("body"),
                )
            )
        else:
            self.to_bot.append(
                ToBot(
                    activity=str(item.get("activityName") or ""),
                    status=status,
                    request=request if isinstance(request, dict) else {},
                    response=response.get("body"),
                )
            )

    async def stop_process(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        await self.stop_process()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------------ the user's actions
    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.post(f"{self.base_url}{path}", json=body) as r:
            raw = await r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode(errors="replace")

    async def say(self, conversation: str, text: str, *, mention: bool = False) -> dict[str, Any]:
        """The user sends ``text`` (``mention``: picked the bot in the mention picker first).

        Returns the emulator's answer: ``messageId`` and, for a new channel post,
        ``postConversationId`` (the reply chain's conversation)."""
        body: dict[str, Any] = {"from": {"id": USER_ID}, "textFormat": "plain"}
        if mention:
            tag = f"<at>{BOT_NAME}</at>"
            body["text"] = f"{tag} {text}"
            body["mentions"] = [{"mentioned": {"id": BOT_ID}, "text": tag}]
        else:
            body["text"] = text
        path = f"/_conversation/v1/conversations/{conversation}/messages"
        status, answer = await self._post(path, body)
        if status != 200 or not isinstance(answer, dict):
            raise AssertionError(f"the emulator refused the user's message: {status} {answer}")
        return answer

    async def feedback(
        self, conversation: str, reaction: str, comment: str = ""
    ) -> tuple[int, Any]:
        """A click on a thumb, then "Submit" in the feedback dialog (as the UI sends it)."""
        return await self._post(
            "/_conversation/v1/invoke",
            {
                "name": "message/submitAction",
                "from": {"id": USER_ID},
                "conversation": {"id": conversation},
                "value": {
                    "actionName": "feedback",
                    "actionValue": {"reaction": reaction, "feedback": comment},
                },
            },
        )

    async def click(
        self, conversation: str, message_id: str, data: dict[str, Any]
    ) -> tuple[int, Any]:
        """A click on an Adaptive Card ``Action.Submit`` button with ``data``."""
        return await self._post(
            "/_conversation/v1/submit",
            {
                "conversation": {"id": conversation},
                "from": {"id": USER_ID},
                "replyToId": message_id,
                "value": data,
            },
        )

    # ------------------------------------------------------------------ reading what happened
    def bot_messages(self, conversation: str | None = None) -> list[Shown]:
        out = [self.shown[m] for m in self.order if self.shown[m].from_bot]
        if conversation is not None:
            out = [m for m in out if m.conversation == conversation]
        return out

    def rejected(self) -> list[str]:
        """Every bot call the emulator refused, and every activity the bot refused."""
        bad = [
            f"bot -> emulator {c.activity} {c.status} {c.response}"
            for c in self.bot_calls
            if c.status >= 400
        ]
        bad += [
            f"emulator -> bot {t.activity} {t.status} {t.response}"
            for t in self.to_bot
            if t.status >= 400 or t.status == 0
        ]
        return bad

    async def wait_for(self, predicate: Callable[[], bool], within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"not seen in {within}s; bot messages: "
                    f"{[(m.id, m.text[:60]) for m in self.bot_messages()]}; "
                    f"rejected: {self.rejected()}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.1))


def try_it(port: int, playground_port: int) -> int:
    """``make playground``: ``dify-bridge serve`` in local mode on 127.0.0.1:``port`` and the
    Playground in front of it (it opens a browser tab, or prints its URL). Without
    ``DIFY_BASE_URL`` the fake Dify answers ("You said: ..."). Ctrl-C stops everything."""
    cli = install()
    node = shutil.which("node") or "node"
    children: list[subprocess.Popen[bytes]] = []

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # stop the children on SIGTERM as on Ctrl-C
    # Local mode: no app id. Set empty rather than removed, since serve also reads .env and a
    # real (even empty) environment variable wins over it.
    env = dict(os.environ)
    env.update(
        MICROSOFT_APP_ID="", TEAMS_ALLOW_UNAUTHENTICATED="true", NO_PROXY="127.0.0.1,localhost"
    )
    try:
        if not env.get("DIFY_BASE_URL"):
            fake = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.fakes.dify",
                    "--app",
                    "app-playground",
                    "--chunk-delay",
                    "0.05",
                ],
                stdout=subprocess.PIPE,
            )
            children.append(fake)
            assert fake.stdout is not None
            env.update(
                DIFY_BASE_URL=fake.stdout.readline().decode().strip(), DIFY_API_KEY="app-playground"
            )
            print(f"No DIFY_BASE_URL: the fake Dify answers at {env['DIFY_BASE_URL']}")
        children.append(
            subprocess.Popen(  # noqa: S603 - our own CLI
                [
                    sys.executable,
                    "-m",
                    "app.admin.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
            )
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        bot = f"http://127.0.0.1:{port}/api/messages"
        print(f"dify-bridge answers at {bot}; starting the Playground (Ctrl-C to stop)")
        return subprocess.call(  # noqa: S603 - the pinned Playground
            [
                node,
                str(cli),
                "start",
                "--app-endpoint",
                bot,
                "--channel-id",
                "msteams",
                "--port",
                str(playground_port),
                "--service-url",
                f"http://127.0.0.1:{playground_port}/_connector",
                "--disable-telemetry",
            ],
            env={**env, "TEAMSAPPTESTER_BROWSER": os.environ.get("TEAMSAPPTESTER_BROWSER", "")},
        )
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The Microsoft 365 Agents Playground")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install the pinned Playground; print its CLI path")
    trying = sub.add_parser("try", help="run dify-bridge (local mode) and the Playground")
    trying.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3978))
    trying.add_argument("--playground-port", type=int, default=56150)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "install":
            print(install())
            return
        sys.exit(try_it(args.port, args.playground_port))
    except PlaygroundUnavailable as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
