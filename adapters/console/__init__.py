"""The console adapter: try a Dify app and a route in a terminal, and the core's test harness.

``TerminalReply`` shows the answer growing in place as it streams; ``MemoryReply`` records every
call the pipeline makes, for tests (errbot's TestBot idea: an in-memory backend as a first-class
harness).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from app.pipeline.forms import FormAnswer, FormResult, HumanForm, Outcome, Responder
from app.pipeline.model import (
    IncomingMessage,
    Kind,
    PlatformLimits,
    Reply,
    ReplyExtras,
    Speaker,
    ThreadKey,
)
from app.seams.context import AdapterContext
from app.seams.plugin import Platform, Subcommands


class FormSender(Protocol):
    """The one call the console's form prompt makes (``BridgeApi.answer_form``)."""

    async def answer_form(
        self, thread: ThreadKey, click: FormAnswer, reply: Reply, limits: PlatformLimits
    ) -> FormResult: ...


CONSOLE_LIMITS = PlatformLimits(
    max_message_chars=100_000,
    min_edit_interval=0.2,
    workspace_edits_per_minute=6000,
    placeholder="…",
)


@dataclass
class MemoryReply:
    """Records what the pipeline did with one answer. ``done`` is set by finish or fail."""

    events: list[tuple[str, object]] = field(default_factory=list)
    text: str = ""
    status: str | None = None
    final: str | None = None
    extras: ReplyExtras | None = None
    error: str | None = None
    ref: str | None = None
    forms: list[HumanForm] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, placeholder: str) -> None:
        self.events.append(("start", placeholder))

    async def update(self, text: str, *, status: str | None = None) -> None:
        self.text, self.status = text, status
        self.events.append(("update", text))

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        self.final, self.extras = text, extras
        self.events.append(("finish", text))
        self.done.set()

    def resume_token(self) -> Mapping[str, str] | None:
        """Held in memory: no other replica could finish it."""
        return None

    async def fail(self, message: str, *, ref: str) -> None:
        self.error, self.ref = message, ref
        self.events.append(("fail", message))
        self.done.set()

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        self.final, self.extras, self.forms = text, extras, list(forms)
        self.events.append(("ask", text))
        self.done.set()

    @property
    def updates(self) -> list[str]:
        return [str(v) for k, v in self.events if k == "update"]


class TerminalReply:
    """Prints the answer as it grows; rewrites only when Dify replaced earlier text."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._shown = ""
        #: Forms the answer paused on (see :func:`answer_forms`); set by ``ask``.
        self.forms: list[HumanForm] = []
        self.done = asyncio.Event()

    def _show(self, text: str) -> None:
        if text.startswith(self._shown):
            self._out.write(text[len(self._shown) :])
        else:
            self._out.write("\n[answer revised]\n" + text)
        self._shown = text
        self._out.flush()

    async def start(self, placeholder: str) -> None:
        self._out.write("bot> ")
        self._out.flush()

    async def update(self, text: str, *, status: str | None = None) -> None:
        self._show(text)

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        self._show(text)
        lines = ["\n"]
        for s in extras.sources:
            lines.append(f"  [{s.position}] {s.title}" + (f" <{s.url}>" if s.url else "") + "\n")
        for f in extras.files:
            lines.append(f"  file: {f.url}\n")
        for n in extras.notices:
            lines.append(f"  note: {n}\n")
        if extras.suggested:
            lines.append("  try: " + " | ".join(extras.suggested) + "\n")
        self._out.write("".join(lines))
        self._out.flush()
        self._shown = ""
        self.done.set()

    def resume_token(self) -> None:
        """A terminal belongs to this process: no other replica could finish it."""
        return None

    async def fail(self, message: str, *, ref: str) -> None:
        self._out.write(f"\n[error] {message} (ref {ref})\n")
        self._out.flush()
        self._shown = ""
        self.done.set()

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        if text.strip():
            self._show(text)
        out = ["\n"]
        for n in extras.notices:
            out.append(f"  note: {n}\n")
        for form in forms:
            out.append(f"\n== {form.title} ==\n")
            if form.content:
                out.append(form.content + "\n")
            if form.blocked:
                out.append(f"  ({form.blocked})\n")
        self._out.write("".join(out))
        self._out.flush()
        self._shown = ""
        self.forms = [f for f in forms if f.answerable]
        self.done.set()


async def answer_forms(
    bridge: FormSender,
    thread: ThreadKey,
    reply: TerminalReply,
    read: Callable[[str], Awaitable[str]],
    *,
    user: str = "console-user",
    out: TextIO = sys.stdout,
) -> None:
    """The console's form prompt: while the answer waits on forms, ask for each field and the
    action, send the choice, and show the rest of the answer (which may ask again)."""
    while reply.forms:
        form = reply.forms.pop(0)
        values: dict[str, str] = {}
        for f in form.fields:
            hint = f" [{'/'.join(f.options)}]" if f.options else ""
            default = f" (default: {f.default})" if f.default else ""
            got = (await read(f"{f.label}{hint}{default}: ")).strip()
            values[f.name] = got or f.default
        choices = ", ".join(f"{i}={a.title}" for i, a in enumerate(form.actions, start=1))
        while True:
            picked = (await read(f"Choose {choices}: ")).strip()
            action = None
            if picked.isdigit() and 1 <= int(picked) <= len(form.actions):
                action = form.actions[int(picked) - 1]
            action = action or next(
                (a for a in form.actions if picked.lower() in (a.id.lower(), a.title.lower())),
                None,
            )
            if action is not None:
                break
            out.write("  (pick one of the numbers shown)\n")
        nxt = TerminalReply(out)
        result: FormResult = await bridge.answer_form(
            thread,
            FormAnswer(form.key, action.id, values, Responder(user, user)),
            nxt,
            CONSOLE_LIMITS,
        )
        out.write(f"  [{result.message}]\n")
        out.flush()
        if result.outcome is Outcome.INVALID:
            reply.forms.insert(0, form)  # still open: ask again
            continue
        if result.outcome is Outcome.ACCEPTED:
            await nxt.done.wait()
            reply.forms.extend(nxt.forms)


def console_message(
    text: str, *, session: str, seq: int, user: str = "console-user"
) -> IncomingMessage:
    """An IncomingMessage from the terminal; one session is one thread."""
    return IncomingMessage(
        key=ThreadKey("console", "local", "terminal", session),
        event_id=f"{session}-{seq}",
        speaker=Speaker(id=user, name=user),
        text=text,
        kind=Kind.DIRECT,
        received_at=time.time(),
    )


def new_session() -> str:
    return uuid.uuid4().hex[:12]


def _not_served(ctx: AdapterContext) -> None:
    """The console has no HTTP side: it runs in ``dify-bridge chat`` only."""
    return None


def _add_commands(sub: Subcommands[Any]) -> None:
    from adapters.console.chat import add_commands

    add_commands(sub)


PLATFORM = Platform(name="console", create=_not_served, commands=_add_commands)
