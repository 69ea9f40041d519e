"""Fold Dify stream events into one answer: text, live status line, sources, files, outputs.

Every app mode ends up here: chat/agent/chatflow text deltas, workflow ``text_chunk``, agent
thoughts and node starts (status line), ``message_replace`` (moderation), ``message_file`` and
``message_end`` files, and workflow outputs. The pipeline only decides when to show the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app import texts
from app.dify.events import (
    AgentLog,
    AgentThought,
    DifyEvent,
    HumanInputFormTimeout,
    HumanInputRequired,
    MessageEnd,
    MessageFile,
    NodeEvent,
    ReasoningChunk,
    StreamError,
    TextDelta,
    TextReplace,
    WorkflowFinished,
    WorkflowPaused,
)
from app.pipeline.model import OutFile, Source, Step

# Node types whose start is worth a status line; others stay silent.
NODE_STATUS = texts.NODE_STATUS
# Enough of a tool's input or output to recognise it on a task card, not to read it.
_STEP_TEXT = 200
_FAILED = frozenset({"failed", "exception", "stopped"})
THINKING = texts.THINKING


@dataclass
class Answer:
    """One answer as it builds up; ``changed`` says whether the last event altered what shows."""

    text: str = ""
    status: str | None = None
    conversation_id: str | None = None
    message_id: str | None = None
    task_id: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    files: list[OutFile] = field(default_factory=list)
    outputs: dict[str, Any] | None = None
    error: StreamError | None = None
    workflow_status: str | None = None
    first_text_at: float | None = None
    changed: bool = False
    # Known to be incomplete (a broken stream whose end Dify could not confirm).
    partial: bool = False
    # Dify's steps (tool calls, workflow nodes) in the order they began, for replies that show
    # them one by one (app.pipeline.model.ShowsSteps).
    steps: list[Step] = field(default_factory=list)
    # Human Input: the forms the run paused on, and what happened to forms while it ran.
    forms: list[HumanInputRequired] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    # The route shows "Thinking…" while the model reasons (never the reasoning itself).
    thinking_status: bool = False

    def upsert_step(self, step: Step) -> None:
        for i, s in enumerate(self.steps):
            if s.id == step.id:
                if s != step:
                    self.steps[i] = step
                    self.changed = True
                return
        self.steps.append(step)
        self.changed = True

    def end_steps(self, state: str) -> None:
        """Every step still running ends as ``state`` (the answer is complete or failed)."""
        for i, s in enumerate(self.steps):
            if s.state == "running":
                self.steps[i] = Step(s.id, s.title, state, s.detail, s.output)


def _short(text: str | None) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= _STEP_TEXT else t[: _STEP_TEXT - 1] + "…"


def fold(ev: DifyEvent, ans: Answer) -> bool:
    """Apply one event to ``ans``; True when it carried the answer's first text."""
    ans.conversation_id = ev.conversation_id or ans.conversation_id
    ans.message_id = ev.message_id or ans.message_id
    ans.changed = False
    first = False
    if isinstance(ev, TextDelta):
        if ans.first_text_at is None:
            ans.first_text_at = time.monotonic()
            first = True
        ans.text += ev.answer
        ans.changed = True
    elif isinstance(ev, TextReplace):
        # Moderation replaced the answer: what was shown so far must go too.
        ans.text = ev.answer
        ans.changed = True
    elif isinstance(ev, AgentThought):
        if ev.tool:
            ans.status = texts.USING_TOOL.format(tool=ev.tool)
            ans.changed = True
            ans.upsert_step(
                Step(
                    f"thought-{ev.id}",
                    texts.USING_TOOLS_STEP.format(tools=ev.tool.replace(";", ", ")),
                    "done" if ev.observation else "running",
                    detail=_short(ev.tool_input),
                    output=_short(ev.observation),
                )
            )
    elif isinstance(ev, NodeEvent):
        if ev.node_type in NODE_STATUS:
            _node_step(ev, ans)
    elif isinstance(ev, MessageFile):
        if ev.belongs_to != "user" and ev.url:
            ans.files.append(OutFile(url=ev.url, type=ev.type))
    elif isinstance(ev, MessageEnd):
        ans.end_steps("done")
        ans.usage = ev.usage
        ans.sources = sources(ev.retriever_resources)
        for f in ev.files or []:
            url = f.get("url") or f.get("remote_url")
            if url and not any(o.url == url for o in ans.files):
                ans.files.append(
                    OutFile(
                        url=url, type=str(f.get("type", "file")), name=str(f.get("filename", ""))
                    )
                )
    elif isinstance(ev, WorkflowFinished):
        ans.workflow_status = ev.status
        ans.outputs = ev.outputs
        ans.end_steps("failed" if ev.status in _FAILED else "done")
    elif isinstance(ev, StreamError):
        ans.error = ev
        ans.end_steps("failed")
    elif isinstance(ev, WorkflowPaused):
        ans.workflow_status = "paused"
    elif isinstance(ev, ReasoningChunk):
        # Reasoning is never answer text; at most a status line while it lasts.
        if ans.thinking_status and not ev.is_final and ans.status != THINKING:
            ans.status = THINKING
            ans.changed = True
        elif ev.is_final and ans.status == THINKING:
            ans.status = None  # the reasoning is over: no stale "Thinking…" under the text
            ans.changed = True
    elif isinstance(ev, AgentLog):
        if ev.label and ev.status != "success":
            ans.status = texts.WORKING_ON.format(label=ev.label[:80])
            ans.changed = True
    elif isinstance(ev, HumanInputRequired):
        ans.forms.append(ev)
    elif isinstance(ev, HumanInputFormTimeout):
        ans.notices.append(texts.FORM_TIMED_OUT.format(title=ev.node_title or texts.FORM_UNNAMED))
    return first


def _node_step(ev: NodeEvent, ans: Answer) -> None:
    """A workflow node worth a status line: its status line when it starts, a step always."""
    status = NODE_STATUS[ev.node_type].format(title=ev.title or ev.node_type)
    step_id = f"node-{ev.node_id}"
    if ev.phase == "started":
        ans.status = status
        ans.changed = True
        ans.upsert_step(Step(step_id, status.rstrip("…"), "running"))
    elif ev.phase in ("finished", "succeeded", "failed", "exception"):
        state = "failed" if (ev.status in _FAILED or ev.phase in _FAILED) else "done"
        ans.upsert_step(Step(step_id, status.rstrip("…"), state))


def sources(resources: list[dict[str, Any]]) -> list[Source]:
    """Citations from ``retriever_resources`` (malformed entries are skipped)."""
    out: list[Source] = []
    for i, r in enumerate(resources or []):
        if not isinstance(r, dict):
            continue
        meta = r.get("doc_metadata") if isinstance(r.get("doc_metadata"), dict) else {}
        url = (meta or {}).get("url") or (meta or {}).get("source_url")
        score = r.get("score")
        out.append(
            Source(
                position=int(r.get("position") or i + 1),
                title=str(r.get("document_name") or r.get("title") or "Source"),
                snippet=str(r.get("content") or "")[:300],
                url=str(url) if url else None,
                score=float(score) if isinstance(score, int | float) else None,
            )
        )
    return out


def workflow_answer(streamed: str, outputs: dict[str, Any] | None, var: str | None) -> str:
    """A workflow's answer: the chosen output variable, else the streamed text, else every
    output as a Markdown list."""
    if outputs and var:
        value = outputs.get(var)
        if value is not None:
            return value if isinstance(value, str) else str(value)
    if streamed.strip():
        return streamed
    if outputs:
        return "\n".join(f"- **{k}**: {_show(v)}" for k, v in outputs.items())
    return streamed


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
