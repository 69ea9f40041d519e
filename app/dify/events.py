"""Typed Dify stream events.

Every event shares the envelope (:class:`DifyEvent`); the subclasses add what the bridge uses.
Mapping from the wire (see ``shared/docs/dify-api.md`` section 2):

==========================================  =====================
wire ``event``                              class
==========================================  =====================
``message``, ``agent_message``, any event    :class:`TextDelta`
with a str ``answer`` (``message_file``
quirk), workflow ``text_chunk`` (data.text)
``message_replace``, ``text_replace``        :class:`TextReplace`
``agent_thought``                            :class:`AgentThought`
``message_file`` (with ``url``)              :class:`MessageFile`
``message_end``                              :class:`MessageEnd`
``workflow_started``                         :class:`WorkflowStarted`
``node_*``, ``iteration_*``, ``loop_*``      :class:`NodeEvent`
``workflow_finished``                        :class:`WorkflowFinished`
``workflow_paused``                          :class:`WorkflowPaused`
``human_input_required``                     :class:`HumanInputRequired`
``human_input_form_filled``                  :class:`HumanInputFormFilled`
``human_input_form_timeout``                 :class:`HumanInputFormTimeout`
``reasoning_chunk``                          :class:`ReasoningChunk`
``agent_log``                                :class:`AgentLog`
``error``                                    :class:`StreamError`
``ping``                                     :class:`Ping`
anything else (tts, ...)                     :class:`Other`
==========================================  =====================

The classes are slotted but not frozen: they are created once per wire event on the hot path, and
a frozen dataclass's ``__init__`` costs four times as much (``object.__setattr__`` per field),
about half a millisecond per 400-event answer. Treat them as read-only all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.dify.errors import DifyStreamError


@dataclass(slots=True, kw_only=True)
class DifyEvent:
    """The envelope every Dify event carries (fields absent on the wire are ``None``)."""

    event: str
    conversation_id: str | None = None
    message_id: str | None = None
    task_id: str | None = None
    workflow_run_id: str | None = None


@dataclass(slots=True, kw_only=True)
class TextDelta(DifyEvent):
    """A piece of answer text to append."""

    answer: str


@dataclass(slots=True, kw_only=True)
class TextReplace(DifyEvent):
    """The whole answer so far is replaced (output moderation): replace, do not append."""

    answer: str


@dataclass(slots=True, kw_only=True)
class AgentThought(DifyEvent):
    """One agent step; re-sent as it fills in, so upsert by ``id``. Never part of the answer."""

    id: str
    position: int
    thought: str
    tool: str
    tool_input: str
    observation: str


@dataclass(slots=True, kw_only=True)
class MessageFile(DifyEvent):
    """A file the assistant produced (image from a tool, ...)."""

    id: str
    type: str
    url: str
    belongs_to: str


@dataclass(slots=True, kw_only=True)
class MessageEnd(DifyEvent):
    """The answer is complete. ``usage`` prices are decimal strings, as Dify sends them."""

    usage: dict[str, Any] = field(default_factory=dict)
    retriever_resources: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WorkflowStarted(DifyEvent):
    """A chatflow/workflow run began; ``workflow_run_id`` is set."""


@dataclass(slots=True, kw_only=True)
class NodeEvent(DifyEvent):
    """Progress of one workflow node, iteration or loop.

    ``event`` is the wire name (``node_started``, ``iteration_next``, ...); ``phase`` is the part
    after the last underscore (``started``, ``finished``, ``retry``, ``next``, ``completed``).
    """

    phase: str
    node_id: str
    node_type: str
    title: str
    status: str | None = None


@dataclass(slots=True, kw_only=True)
class WorkflowFinished(DifyEvent):
    """End of a run: ``status`` is succeeded, failed, partial-succeeded or stopped."""

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class WorkflowPaused(DifyEvent):
    """The run waits for human input; the stream ends here."""


@dataclass(slots=True, kw_only=True)
class HumanInputRequired(DifyEvent):
    """A Human Input node paused the run on a form (``data`` of the wire event, kept whole:
    :mod:`app.pipeline.forms` reads it). One per paused form, before the ``workflow_paused``."""

    form_id: str
    form_token: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class HumanInputFormFilled(DifyEvent):
    """A paused form was answered (here or elsewhere) and the run goes on."""

    node_title: str
    action_id: str
    action_text: str


@dataclass(slots=True, kw_only=True)
class HumanInputFormTimeout(DifyEvent):
    """A paused form expired unanswered; the run takes the node's timeout branch (or ends)."""

    node_title: str
    expiration_time: int


@dataclass(slots=True, kw_only=True)
class ReasoningChunk(DifyEvent):
    """The model's reasoning (``reasoning_format: separated``): never part of the answer."""

    reasoning: str
    is_final: bool


@dataclass(slots=True, kw_only=True)
class AgentLog(DifyEvent):
    """One step of an Agent node (workflow/chatflow): progress only."""

    label: str
    status: str


@dataclass(slots=True, kw_only=True)
class StreamError(DifyEvent):
    """An ``error`` event: generation failed after the stream started. Always the last event."""

    code: str
    status: int
    message: str

    def to_exception(self) -> DifyStreamError:
        """The same failure as an exception (for ``user_message``, logging, re-raising)."""
        from app.dify.errors import DifyStreamError

        return DifyStreamError(self.message, status=self.status, code=self.code)


@dataclass(slots=True, kw_only=True)
class Ping(DifyEvent):
    """Keep-alive (``event: ping``); Dify sends one about every 10 s."""


@dataclass(slots=True, kw_only=True)
class Other(DifyEvent):
    """Any event the bridge does not interpret; ``data`` is the whole decoded object."""

    data: dict[str, Any] = field(default_factory=dict)


TERMINAL: tuple[type[DifyEvent], ...] = (MessageEnd, StreamError, WorkflowFinished, WorkflowPaused)
"""Events after which the stream is over (the client closes the response itself)."""


def is_terminal(event: DifyEvent) -> bool:
    """True for the event that ends a turn."""
    return isinstance(event, TERMINAL)


__all__ = [
    "TERMINAL",
    "AgentLog",
    "AgentThought",
    "DifyEvent",
    "HumanInputFormFilled",
    "HumanInputFormTimeout",
    "HumanInputRequired",
    "MessageEnd",
    "MessageFile",
    "NodeEvent",
    "Other",
    "Ping",
    "ReasoningChunk",
    "StreamError",
    "TextDelta",
    "TextReplace",
    "WorkflowFinished",
    "WorkflowPaused",
    "WorkflowStarted",
    "is_terminal",
]
