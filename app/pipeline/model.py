"""The platform-neutral message model and the seams between adapters and the core.

Adapters (one package per platform, and the console) turn platform events into
:class:`IncomingMessage` and hand the core a :class:`Reply` handle to drive.
Nothing here imports a platform SDK.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aiohttp import web

    from app.pipeline.forms import HumanForm


class Kind(StrEnum):
    """How the message reached the bot; routes may treat them differently."""

    MENTION = "mention"
    DIRECT = "direct"
    THREAD_REPLY = "thread_reply"
    COMMAND = "command"


def _short_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """Identity of one remote thread: everything else (conversation, lock, pseudonyms) hangs off it.

    ``thread`` is the thread root (the platform's id of the thread's first message, or of the
    chat when the platform has no threads). For DMs
    ``channel`` is the DM channel, so two people never share a key.
    """

    platform: str
    workspace: str
    channel: str
    thread: str

    @property
    def canonical(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"

    @property
    def hashed(self) -> str:
        """Stable hash used in Redis keys and logs: never the raw ids (they can be long)."""
        return _short_hash(self.canonical, 24)

    @property
    def log_id(self) -> str:
        return self.hashed[:12]

    def dify_user(self) -> str:
        """Dify's ``user`` for this thread.

        A Dify conversation belongs to the user who created it, so the *thread* is the user: a
        second person replying in the thread continues the same conversation.
        """
        raw = self.canonical
        return raw if len(raw) <= 200 else f"{self.platform}:{_short_hash(raw, 32)}"


@dataclass(frozen=True, slots=True)
class Speaker:
    id: str
    name: str = ""
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file the user attached. ``fetch`` downloads it with the platform's credentials."""

    name: str
    mime_type: str
    size: int
    fetch: Callable[[], Awaitable[bytes]] | None = None
    url: str | None = None
    is_audio: bool = False


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message for the bot, already stripped of the bot mention and platform markup."""

    key: ThreadKey
    event_id: str
    speaker: Speaker
    text: str
    kind: Kind
    attachments: tuple[Attachment, ...] = ()
    # Extra idempotency keys beyond event_id (a platform may deliver one mention as two events
    # with different ids: a key naming the message itself catches the second).
    dedup_keys: tuple[str, ...] = ()
    channel_name: str | None = None
    permalink: str | None = None
    received_at: float = field(default_factory=time.time)
    # Earlier messages of the thread (oldest first), for routes that pass context to Dify.
    history: tuple[str, ...] = ()
    # The message is its thread's first (a top-level message or channel post):
    # nothing written earlier can be on its way in the same thread, so the thread lock need not
    # wait for one.
    starts_thread: bool = False
    # What the person is looking at in their client (a platform's agent view reports it),
    # e.g. "channel:C0123"; only filled when a route maps the ``viewing`` input.
    viewing: str = ""


@dataclass(frozen=True, slots=True)
class Source:
    """A citation from Dify's ``retriever_resources``."""

    position: int
    title: str
    snippet: str = ""
    url: str | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class OutFile:
    """A file Dify produced (``message_file``), for the adapter to put in the thread."""

    url: str
    type: str
    name: str = ""


@dataclass(slots=True)
class ReplyExtras:
    """What comes with a finished answer besides its text."""

    dify_message_id: str | None = None
    conversation_id: str | None = None
    conversation_name: str | None = None
    sources: list[Source] = field(default_factory=list)
    suggested: list[str] = field(default_factory=list)
    files: list[OutFile] = field(default_factory=list)
    stopped: bool = False
    # The answer is known to be incomplete (its stream broke off and Dify could not confirm
    # the end): a notice says so, and there is no message id, hence no feedback buttons.
    partial: bool = False
    # The whole answer as Markdown, when the text given to ``finish`` was cut to fit the thread
    # and the platform attaches files: the reply puts it in the thread as a file.
    full_text_file: str | None = None
    notices: list[str] = field(default_factory=list)
    # Route the answer came from, so buttons (feedback, suggestions, stop) find the Dify app again.
    route: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One thing Dify does on the way to an answer (a tool call, a workflow node, retrieval).

    ``state``: ``running``, ``done`` or ``failed``. ``detail`` is a short line (the tool's
    input); ``output`` what it returned, shortened (a tool's observation).
    """

    id: str
    title: str
    state: str = "running"
    detail: str = ""
    output: str = ""


@runtime_checkable
class ShowsSteps(Protocol):
    """A reply that can show Dify's steps one by one (e.g. as task cards), not only the latest
    as a status line. The pipeline hands over the steps before each ``update`` and ``finish``;
    the reply shows them with its next call to the platform."""

    def show_steps(self, steps: tuple[Step, ...]) -> None:
        """Remember ``steps`` (all of them so far, oldest first) for the next update."""


@runtime_checkable
class Reply(Protocol):
    """The handle the pipeline drives for one answer. Adapters implement it.

    Calls arrive in order: ``start`` once, ``update`` any number of times, then exactly one of
    ``finish``, ``ask`` or ``fail`` (``fail`` may also come without ``start``). The edit
    scheduler guarantees at most one call in flight per reply. ``update`` and ``finish`` may raise
    :class:`app.errors.PlatformRateLimited` so the scheduler slows down and retries; a message that
    vanished (deleted, ``message_not_found``) is the handle's own business: post a new one.
    """

    async def start(self, placeholder: str) -> None:
        """Show progress at once (placeholder message, typing status, stream start)."""

    async def update(self, text: str, *, status: str | None = None) -> None:
        """Show ``text`` (the whole answer so far, Markdown) under an optional live status line
        ("Using tool: web_search"); ``status=None`` means no status line."""

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        """Deliver the final answer (split across messages if needed) with sources and buttons."""

    async def fail(self, message: str, *, ref: str) -> None:
        """Replace progress with a readable error; ``ref`` is the id that appears in the logs.
        ``message`` may carry partial answer text already shown, followed by the error."""

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        """The run paused on Human Input forms: show the answer so far (``text``, may be empty)
        and each form with its content, fields and one button per action (a form whose
        ``blocked`` is set is shown with that explanation instead of inputs and buttons).
        A click comes back through the adapter as ``BridgeApi.answer_form``."""

    def resume_token(self) -> Mapping[str, str] | None:
        """What the adapter's :meth:`Adapter.resume` needs to finish this answer's message from
        another replica if this one dies mid-answer (the message's ids), or None when the reply
        cannot be resumed (nothing posted yet, or a platform without resumption)."""


@dataclass(frozen=True, slots=True)
class PlatformLimits:
    """What the edit scheduler and renderer must respect on one platform."""

    max_message_chars: int
    min_edit_interval: float
    # Edits per minute shared by every answer in one workspace (a platform's edit rate limit).
    workspace_edits_per_minute: float
    placeholder: str = "Thinking…"
    # The reply can put a file in the thread: an answer too long for the thread's messages
    # then comes whole as a file (ReplyExtras.full_text_file) instead of being cut.
    attaches_files: bool = False


class Adapter(Protocol):
    """A platform connector: mounts its HTTP routes and feeds messages to the core."""

    name: str
    limits: PlatformLimits

    def mount(self, app: web.Application) -> None:
        """Add the platform's routes to the shared aiohttp application."""

    async def start(self) -> None:
        """Open long-lived connections (Socket Mode); called once the server runs."""

    async def stop(self) -> None:
        """Close connections; in-flight answers are the pipeline's to finish."""

    async def resume(self, token: Mapping[str, str], text: str) -> None:
        """Put ``text`` in the message a reply's :meth:`Reply.resume_token` names: the core calls
        it for answers a replica died in the middle of. A platform whose replies give no token
        is never called and may do nothing."""


JSONDict = dict[str, Any]
