"""Async client for Dify's Service API (``/v1``), streaming first.

Rules the stream methods follow (``chat_stream``, ``completion_stream``, ``workflow_stream``):

* They are async generators of :mod:`app.dify.events`. The generator ends right after the first
  terminal event (``MessageEnd``, ``StreamError``, ``WorkflowFinished``, ``WorkflowPaused``) and
  closes the HTTP response itself, because some Dify versions keep it open.
* Terminal events are *yielded*, never raised: a ``StreamError`` is the last event the caller
  sees (``event.to_exception()`` gives the matching ``DifyStreamError`` with its
  ``user_message``). Exceptions are raised only for HTTP, transport and protocol problems, and
  :class:`StreamIncomplete` when the stream ends without a terminal event.
* Retries (exponential backoff, full jitter; ``Retry-After`` honoured) happen only before the
  first event is yielded: connection errors, connect/first-event timeouts, 429
  ``too_many_requests`` and 5xx. Never after anything was yielded, never for other 4xx or for
  ``rate_limit_error`` (plan quota).
* Timeouts: ``connect``; ``first_event`` (request sent -> first SSE event of any kind, pings
  included); ``idle`` (the longest silence between two events).
* The breaker is checked before every attempt and told about every attempt's outcome: HTTP
  failures at once, a started stream when it ends (terminal event, or the error that broke it).
  A stream the caller abandons early reports nothing.

Close a stream you stop reading early with ``contextlib.aclosing`` so the connection is
released at once rather than by the garbage collector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from app.dify.errors import ConversationNotFound, DifyError, DifyProtocolError
from app.dify.stream import EventStream, StreamingTransport
from app.dify.wire import _check_id, _check_token, _check_user, _encode


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One answer as ``GET /messages`` shows it: ``status`` is ``normal`` or ``error``, and
    ``error`` says what failed."""

    answer: str
    status: str
    error: str | None = None
    # Dify's token count of the message (``total_tokens``, else ``message_tokens`` +
    # ``answer_tokens``; newer Dify versions list them), 0 when not given.
    total_tokens: int = 0

    @property
    def ended_normally(self) -> bool:
        """Dify holds a normal, error-free, non-empty answer. Dify writes a message's answer
        when its generation ends (also on a stop), so this is Dify's finished text, unless a
        generation that is still running already shows what it has so far."""
        return self.status == "normal" and self.error is None and bool(self.answer)

    def completes(self, seen: str) -> bool:
        """Whether this is the whole answer of a stream that broke after ``seen`` arrived: it
        ended normally and holds more than had arrived. A copy no longer than what arrived may
        be a generation still under way; it is not taken for the whole answer."""
        return self.ended_normally and len(self.answer) > len(seen)


class DifyClient(StreamingTransport):
    """One Dify app (base URL + API key) over a shared ``httpx.AsyncClient``.

    The client never logs queries, answers or the key. Build it through
    :class:`DifyClientPool` in the service; construct it directly in tests.
    """

    # ----------------------------------------------------------------- streaming

    def chat_stream(
        self,
        *,
        query: str,
        user: str,
        conversation_id: str | None,
        inputs: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]] = (),
        auto_generate_name: bool = False,
    ) -> EventStream:
        """Stream a chat / agent-chat / advanced-chat answer (``POST /chat-messages``)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if conversation_id is not None:
            _check_id("conversation_id", conversation_id)
        body = {
            "query": query,
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "streaming",
            "conversation_id": conversation_id or "",
            "files": [dict(f) for f in files],
            "auto_generate_name": bool(auto_generate_name),
        }
        return self._event_stream("/chat-messages", _encode(body))

    def completion_stream(
        self,
        *,
        query: str,
        user: str,
        inputs: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]] = (),
    ) -> EventStream:
        """Stream a text-generator answer (``POST /completion-messages``)."""
        if not isinstance(query, str):
            raise ValueError("query must be a string")
        body = {
            "query": query,
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "streaming",
            "files": [dict(f) for f in files],
        }
        return self._event_stream("/completion-messages", _encode(body))

    def workflow_stream(
        self,
        *,
        user: str,
        inputs: Mapping[str, Any],
        files: Sequence[Mapping[str, Any]] = (),
    ) -> EventStream:
        """Stream a workflow run (``POST /workflows/run``); text arrives as ``text_chunk``."""
        body = {
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "streaming",
            "files": [dict(f) for f in files],
        }
        return self._event_stream("/workflows/run", _encode(body))

    def run_events(self, workflow_run_id: str, *, user: str) -> EventStream:
        """Re-attach to a chatflow/workflow run (``GET /workflow/{id}/events``), e.g. after a
        Human Input form was submitted. ``user`` must be the one that started the run.

        The stream ends at the run's next terminal event (``workflow_paused`` again, or
        ``message_end`` / ``workflow_finished``). A run that already finished answers one
        ``workflow_finished`` and nothing else: Dify relays live events only (pub/sub), so
        whoever attaches late reads the answer from the stored messages instead.
        """
        _check_id("workflow_run_id", workflow_run_id)
        query = urlencode({"user": _check_user(user)})
        return self._event_stream(f"/workflow/{workflow_run_id}/events?{query}", None, "GET")

    # ------------------------------------------------------------- endpoints

    async def chat_blocking(
        self, *, query: str, user: str, conversation_id: str | None, inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Whole answer in one JSON body (not for agent-chat apps, which only stream)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if conversation_id is not None:
            _check_id("conversation_id", conversation_id)
        body = {
            "query": query,
            "inputs": dict(inputs),
            "user": _check_user(user),
            "response_mode": "blocking",
            "conversation_id": conversation_id or "",
            "auto_generate_name": False,
        }
        # The whole answer is generated before Dify replies: allow the first-event budget.
        wait = max(self._t.request, self._t.first_event)
        return self._as_dict(await self._request("POST", "/chat-messages", json=body, budget=wait))

    async def stop(self, task_id: str, *, user: str, mode: str = "chat") -> None:
        """Ask Dify to stop a running answer; the stream then ends with its partial text."""
        _check_id("task_id", task_id)
        if mode == "completion":
            path = f"/completion-messages/{task_id}/stop"
        elif mode == "workflow":
            path = f"/workflows/tasks/{task_id}/stop"
        elif mode in ("chat", "agent-chat", "advanced-chat"):
            path = f"/chat-messages/{task_id}/stop"
        else:
            raise ValueError(f"unknown app mode {mode!r}")
        await self._request("POST", path, json={"user": _check_user(user)})

    async def feedback(
        self,
        message_id: str,
        *,
        user: str,
        rating: Literal["like", "dislike"] | None,
        content: str | None = None,
    ) -> None:
        """Rate an answer; ``rating=None`` withdraws an earlier rating."""
        _check_id("message_id", message_id)
        if rating not in ("like", "dislike", None):
            raise ValueError("rating must be 'like', 'dislike' or None")
        body: dict[str, Any] = {"rating": rating, "user": _check_user(user)}
        if content is not None:
            body["content"] = content
        await self._request("POST", f"/messages/{message_id}/feedbacks", json=body)

    async def suggested(self, message_id: str, *, user: str) -> list[str]:
        """Follow-up questions for an answer ([] when the app has them switched off)."""
        _check_id("message_id", message_id)
        try:
            obj = await self._request(
                "GET", f"/messages/{message_id}/suggested", params={"user": _check_user(user)}
            )
        except DifyError as e:
            if e.status == 400 and e.code == "bad_request":
                return []  # "Suggested Questions Is Disabled."
            raise
        data = self._as_dict(obj).get("data")
        return [q for q in data if isinstance(q, str)] if isinstance(data, list) else []

    async def submit_form(
        self, form_token: str, *, inputs: Mapping[str, Any], action: str, user: str
    ) -> None:
        """Answer a paused Human Input form (``POST /form/human_input/{token}``); Dify then
        resumes the run: follow it with :meth:`run_events`. Every input of the form must be a
        key of ``inputs`` (send ``""`` for an empty paragraph)."""
        _check_token(form_token)
        if not isinstance(action, str) or not action:
            raise ValueError("action must be the id of one of the form's actions")
        body = {"inputs": dict(inputs), "action": action, "user": _check_user(user)}
        # Not retried: a submit that reached Dify but whose answer was lost must not be sent
        # again (the second would meet "already submitted" and hide the first one's success).
        await self._request_once(
            "POST",
            f"/form/human_input/{form_token}",
            json=body,
            params=None,
            data=None,
            files=None,
            budget=self._t.request,
        )

    async def parameters(self) -> dict[str, Any]:
        """The app's input form, file upload settings and feature switches."""
        return self._as_dict(await self._request("GET", "/parameters"))

    async def info(self) -> dict[str, Any]:
        """Name and ``mode`` of the app."""
        return self._as_dict(await self._request("GET", "/info"))

    async def upload_file(
        self, *, user: str, filename: str, data: bytes, mime_type: str
    ) -> dict[str, Any]:
        """Upload for a later ``files=[{"transfer_method": "local_file", ...}]`` (same ``user``)."""
        self._check_file(filename, data, mime_type)
        obj = await self._request(
            "POST",
            "/files/upload",
            data={"user": _check_user(user)},
            files={"file": (filename, data, mime_type)},
        )
        return self._as_dict(obj)

    async def audio_to_text(self, *, user: str, filename: str, data: bytes, mime_type: str) -> str:
        """Transcribe a voice message (the app must have speech-to-text on)."""
        self._check_file(filename, data, mime_type)
        obj = await self._request(
            "POST",
            "/audio-to-text",
            data={"user": _check_user(user)},
            files={"file": (filename, data, mime_type)},
        )
        text = self._as_dict(obj).get("text")
        if not isinstance(text, str):
            raise DifyProtocolError("audio-to-text answer has no text", code="protocol_error")
        return text

    async def messages(
        self, *, conversation_id: str, user: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Messages of one conversation (as Dify orders them)."""
        _check_id("conversation_id", conversation_id)
        obj = await self._request(
            "GET",
            "/messages",
            params={
                "conversation_id": conversation_id,
                "user": _check_user(user),
                "limit": max(1, min(100, int(limit))),
            },
        )
        return self._data_list(obj)

    async def conversations(self, *, user: str, limit: int = 20) -> list[dict[str, Any]]:
        """The ``user``'s conversations, most recently updated first."""
        obj = await self._request(
            "GET",
            "/conversations",
            params={"user": _check_user(user), "limit": max(1, min(100, int(limit)))},
        )
        return self._data_list(obj)

    async def delete_conversation(self, conversation_id: str, *, user: str) -> None:
        """Delete a conversation (Dify answers 204)."""
        _check_id("conversation_id", conversation_id)
        await self._request(
            "DELETE", f"/conversations/{conversation_id}", json={"user": _check_user(user)}
        )

    async def stored_message(
        self, *, conversation_id: str, message_id: str, user: str
    ) -> StoredMessage | None:
        """After a broken stream: what Dify has stored of the answer (``GET /messages``), or
        None when the conversation or the message is not there."""
        _check_id("message_id", message_id)
        try:
            items = await self.messages(conversation_id=conversation_id, user=user, limit=100)
        except ConversationNotFound:
            return None
        for item in items:
            if item.get("id") == message_id:
                answer, status, error = item.get("answer"), item.get("status"), item.get("error")
                return StoredMessage(
                    answer=answer if isinstance(answer, str) else "",
                    status=status if isinstance(status, str) else "normal",
                    error=error if isinstance(error, str) and error else None,
                    total_tokens=_tokens(item),
                )
        return None

    async def recover_answer(
        self, *, conversation_id: str, message_id: str, user: str
    ) -> str | None:
        """After a broken stream: the stored answer if Dify finished it normally, else None."""
        stored = await self.stored_message(
            conversation_id=conversation_id, message_id=message_id, user=user
        )
        return stored.answer if stored is not None and stored.ended_normally else None


def _tokens(item: Mapping[str, Any]) -> int:
    """A stored message's token count (0 when Dify does not list one)."""

    def count(name: str) -> int:
        v = item.get(name)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    return count("total_tokens") or count("message_tokens") + count("answer_tokens")


__all__ = [
    "DifyClient",
    "EventStream",
    "StoredMessage",
]
