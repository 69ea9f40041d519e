"""Incremental Server-Sent Events decoder for Dify streams: bytes in, typed events out.

Dify frames each event as ``data: <compact JSON>\\n\\n`` and keep-alives as ``event: ping\\n\\n``.
The decoder follows the SSE framing rules (LF, CRLF or CR line ends, multi-line ``data``,
comments, ``id``/``retry`` ignored) but rejects lines that are not SSE fields at all, so an HTML
page or a JSON body served with the wrong content type fails fast instead of hanging until EOF.

It works on bytes end to end: a multi-byte UTF-8 character split across network chunks is
joined before ``json.loads`` sees it, and each payload is decoded exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app.dify.errors import DifyProtocolError
from app.dify.events import (
    AgentLog,
    AgentThought,
    DifyEvent,
    HumanInputFormFilled,
    HumanInputFormTimeout,
    HumanInputRequired,
    MessageEnd,
    MessageFile,
    NodeEvent,
    Other,
    Ping,
    ReasoningChunk,
    StreamError,
    TextDelta,
    TextReplace,
    WorkflowFinished,
    WorkflowPaused,
    WorkflowStarted,
)

# One event larger than this is not a Dify answer (message_end with many sources is ~100 KB).
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_json_decode = json.JSONDecoder().decode


class SSEDecodeError(DifyProtocolError):
    """The stream is not valid Dify SSE. ``events`` holds what decoded fine before the problem."""

    def __init__(self, message: str, *, events: list[DifyEvent] | None = None) -> None:
        self.events: list[DifyEvent] = events or []
        super().__init__(message, code="protocol_error")


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _int(v: Any, default: int = 0) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return default


def _env(obj: dict[str, Any], ev: str) -> dict[str, Any]:
    return {
        "event": ev,
        "conversation_id": _str(obj.get("conversation_id")),
        "message_id": _str(obj.get("message_id")),
        "task_id": _str(obj.get("task_id")),
        "workflow_run_id": _str(obj.get("workflow_run_id")),
    }


def _delta(obj: dict[str, Any], ev: str) -> DifyEvent:
    # The hot path (hundreds of these per answer): no helper calls, no **kwargs.
    g = obj.get
    answer = g("answer")
    if answer.__class__ is str:
        c, m, t, w = g("conversation_id"), g("message_id"), g("task_id"), g("workflow_run_id")
        return TextDelta(
            event=ev,
            answer=answer,
            conversation_id=c if c.__class__ is str else None,
            message_id=m if m.__class__ is str else None,
            task_id=t if t.__class__ is str else None,
            workflow_run_id=w if w.__class__ is str else None,
        )
    if isinstance(answer, str):  # a str subclass: still text
        return TextDelta(answer=str(answer), **_env(obj, ev))
    return Other(data=obj, **_env(obj, ev))


def _text_chunk(obj: dict[str, Any], ev: str) -> DifyEvent:
    text = _dict(obj.get("data")).get("text")
    if isinstance(text, str):
        return TextDelta(answer=text, **_env(obj, ev))
    return Other(data=obj, **_env(obj, ev))


def _message_replace(obj: dict[str, Any], ev: str) -> DifyEvent:
    answer = obj.get("answer")
    if isinstance(answer, str):
        return TextReplace(answer=answer, **_env(obj, ev))
    return Other(data=obj, **_env(obj, ev))


def _text_replace(obj: dict[str, Any], ev: str) -> DifyEvent:
    text = _dict(obj.get("data")).get("text")
    if isinstance(text, str):
        return TextReplace(answer=text, **_env(obj, ev))
    return Other(data=obj, **_env(obj, ev))


def _agent_thought(obj: dict[str, Any], ev: str) -> DifyEvent:
    return AgentThought(
        id=_text(obj.get("id")),
        position=_int(obj.get("position")),
        thought=_text(obj.get("thought")),
        tool=_text(obj.get("tool")),
        tool_input=_text(obj.get("tool_input")),
        observation=_text(obj.get("observation")),
        **_env(obj, ev),
    )


def _message_file(obj: dict[str, Any], ev: str) -> DifyEvent:
    # Dify quirk: once a message owns a file, later text deltas arrive as `message_file`.
    if isinstance(obj.get("answer"), str):
        return _delta(obj, ev)
    return MessageFile(
        id=_text(obj.get("id")),
        type=_text(obj.get("type")),
        url=_text(obj.get("url")),
        belongs_to=_text(obj.get("belongs_to")),
        **_env(obj, ev),
    )


def _message_end(obj: dict[str, Any], ev: str) -> DifyEvent:
    meta = _dict(obj.get("metadata"))
    return MessageEnd(
        usage=_dict(meta.get("usage")),
        retriever_resources=[
            r for r in _list(meta.get("retriever_resources")) if isinstance(r, dict)
        ],
        files=[f for f in _list(obj.get("files")) if isinstance(f, dict)],
        **_env(obj, ev),
    )


def _workflow_started(obj: dict[str, Any], ev: str) -> DifyEvent:
    env = _env(obj, ev)
    if env["workflow_run_id"] is None:
        env["workflow_run_id"] = _str(_dict(obj.get("data")).get("id"))
    return WorkflowStarted(**env)


def _node(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return NodeEvent(
        phase=ev.rpartition("_")[2],
        node_id=_text(data.get("node_id")),
        node_type=_text(data.get("node_type")),
        title=_text(data.get("title")),
        status=_str(data.get("status")),
        **_env(obj, ev),
    )


def _workflow_finished(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return WorkflowFinished(
        status=_text(data.get("status")),
        outputs=_dict(data.get("outputs")),
        error=_str(data.get("error")),
        **_env(obj, ev),
    )


def _workflow_paused(obj: dict[str, Any], ev: str) -> DifyEvent:
    return WorkflowPaused(**_env(obj, ev))


def _human_input_required(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return HumanInputRequired(
        form_id=_text(data.get("form_id")),
        # null: the form is delivered by e-mail only and the Service API cannot answer it.
        form_token=_str(data.get("form_token")) or None,
        data=data,
        **_env(obj, ev),
    )


def _form_filled(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return HumanInputFormFilled(
        node_title=_text(data.get("node_title")),
        action_id=_text(data.get("action_id")),
        action_text=_text(data.get("action_text")),
        **_env(obj, ev),
    )


def _form_timeout(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return HumanInputFormTimeout(
        node_title=_text(data.get("node_title")),
        expiration_time=_int(data.get("expiration_time")),
        **_env(obj, ev),
    )


def _reasoning(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return ReasoningChunk(
        reasoning=_text(data.get("reasoning")),
        is_final=data.get("is_final") is True,
        **_env(obj, ev),
    )


def _agent_log(obj: dict[str, Any], ev: str) -> DifyEvent:
    data = _dict(obj.get("data"))
    return AgentLog(
        label=_text(data.get("label")), status=_text(data.get("status")), **_env(obj, ev)
    )


def _error(obj: dict[str, Any], ev: str) -> DifyEvent:
    return StreamError(
        code=_text(obj.get("code")) or "unknown_error",
        status=_int(obj.get("status"), 500),
        message=_text(obj.get("message")),
        **_env(obj, ev),
    )


def _ping(obj: dict[str, Any], ev: str) -> DifyEvent:
    return Ping(**_env(obj, ev))


_Parser = Callable[[dict[str, Any], str], DifyEvent]

_PARSERS: dict[str, _Parser] = {
    "message": _delta,
    "agent_message": _delta,
    "text_chunk": _text_chunk,
    "message_replace": _message_replace,
    "text_replace": _text_replace,
    "agent_thought": _agent_thought,
    "message_file": _message_file,
    "message_end": _message_end,
    "workflow_started": _workflow_started,
    "workflow_finished": _workflow_finished,
    "workflow_paused": _workflow_paused,
    "human_input_required": _human_input_required,
    "human_input_form_filled": _form_filled,
    "human_input_form_timeout": _form_timeout,
    "reasoning_chunk": _reasoning,
    "agent_log": _agent_log,
    "error": _error,
    "ping": _ping,
}
for _prefix in ("node", "iteration", "loop"):
    for _phase in ("started", "finished", "retry", "next", "completed", "succeeded", "failed"):
        _PARSERS.setdefault(f"{_prefix}_{_phase}", _node)

_NOT_DELTA = frozenset({"message_replace", "message_end"})


def parse_event(obj: dict[str, Any]) -> DifyEvent:
    """Turn one decoded Dify JSON object into a typed event.

    Raises :class:`DifyProtocolError` only when ``obj`` has no string ``event``. Wrongly typed
    fields degrade to empty values rather than failing the whole answer.
    """
    if not isinstance(obj, dict):
        raise DifyProtocolError("event payload is not a JSON object", code="protocol_error")
    ev = obj.get("event")
    if not isinstance(ev, str) or not ev:
        raise DifyProtocolError("event payload has no 'event' name", code="protocol_error")
    parser = _PARSERS.get(ev)
    if parser is not None:
        return parser(obj, ev)
    if ev not in _NOT_DELTA and isinstance(obj.get("answer"), str):
        return _delta(obj, ev)
    return Other(data=obj, **_env(obj, ev))


class SSEDecoder:
    """Feed raw bytes as they arrive; get back every event completed so far.

    Call :meth:`close` at EOF to flush an event that lacked its final blank line.
    Raises :class:`SSEDecodeError` (a :class:`DifyProtocolError`) on input that is not Dify SSE.
    """

    __slots__ = ("_data", "_event", "_max", "_parts", "_pending", "_started")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._parts: list[bytes] = []  # an unfinished line, in pieces (avoids quadratic joins)
        self._pending = 0  # bytes held in _parts plus the current event's data lines
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._started = False

    def feed(self, chunk: bytes) -> list[DifyEvent]:
        """Decode ``chunk``; returns the events it completed (often none, often several)."""
        if not chunk:
            return []
        if not self._started:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if b"\n" not in chunk and b"\r" not in chunk:
            self._parts.append(chunk)
            self._pending += len(chunk)
            if self._pending > self._max:
                raise SSEDecodeError(f"event larger than {self._max} bytes")
            return []
        if self._parts:
            self._parts.append(chunk)
            buf = b"".join(self._parts)
            self._parts.clear()
        else:
            buf = chunk
        tail = b""
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across chunks.
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._parts.append(buf + tail)
            self._pending = len(buf) + len(tail)
            return []
        rest = buf[cut + 1 :] + tail
        if rest:
            self._parts.append(rest)
        out: list[DifyEvent] = []
        self._lines(buf[:cut].split(b"\n"), out)
        self._pending = len(rest) + sum(len(d) for d in self._data)
        if self._pending > self._max:
            raise SSEDecodeError(f"event larger than {self._max} bytes", events=out)
        return out

    def close(self) -> list[DifyEvent]:
        """Flush at EOF: a final event without its blank line still counts."""
        out: list[DifyEvent] = []
        if self._parts:
            buf = b"".join(self._parts).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            self._parts.clear()
            self._lines(buf.split(b"\n"), out)
        self._lines([b""], out)
        self._pending = 0
        return out

    def _lines(self, lines: list[bytes], out: list[DifyEvent]) -> None:
        data = self._data
        for line in lines:
            if not line:
                if data or self._event is not None:
                    try:
                        ev = self._dispatch()
                    except DifyProtocolError as e:
                        raise SSEDecodeError(e.message, events=out) from e
                    if ev is not None:
                        out.append(ev)
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
            elif line[:1] == b":" or line.startswith((b"id:", b"retry:")):
                continue
            elif line == b"data":
                data.append(b"")
            elif line in (b"id", b"retry", b"event"):
                continue
            else:
                raise SSEDecodeError("body is not an event stream (unexpected line)", events=out)

    def _dispatch(self) -> DifyEvent | None:
        data, name = self._data, self._event
        self._event = None
        if not data:
            if not name:
                return None
            ev = name.decode("utf-8", "replace")
            return Ping(event=ev) if ev == "ping" else Other(event=ev)
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        data.clear()  # in place: _lines holds a reference to this list
        try:
            # Same as json.loads(bytes) minus its encoding sniffing: Dify sends UTF-8.
            obj = _json_decode(payload.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise DifyProtocolError(f"event data is not valid JSON ({e.__class__.__name__})") from e
        if not isinstance(obj, dict):
            raise DifyProtocolError("event data is not a JSON object")
        if name and "event" not in obj:
            obj["event"] = name.decode("utf-8", "replace")
        return parse_event(obj)


__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecodeError", "SSEDecoder", "parse_event"]
