"""A fake Dify Service API server that speaks the real wire format (for every team's tests).

It is a real aiohttp server on ``127.0.0.1``, port 0; point the code under test at
``fake.base_url`` ("http://127.0.0.1:<port>/v1") and it is talked to through the normal clients.
Facts it follows are in ``shared/docs/dify-api.md`` (Dify 1.14.1): compact JSON
(``separators=(",", ":")``, ``ensure_ascii=False``), ``data: ...\\n\\n`` framing, bare
``event: ping\\n\\n``, Dify's ``{"code","message","status"}`` error bodies and exact messages.

Quick start::

    fake = FakeDify()
    await fake.start()
    app = fake.add_app("app-test", mode="chat", answer="Hello there", chunk_size=3)
    ...  # DIFY_BASE_URL=fake.base_url, DIFY_API_KEY="app-test"
    app.faults.append(Fault.http(429, "too_many_requests", "Too many requests."))
    app.faults.append(Fault.drop(after_chunks=2))
    assert fake.requests[-1].json["conversation_id"] == ""
    await fake.close()

API
---
``FakeDify``
    ``start()`` / ``close()``; ``base_url``; ``add_app(api_key, *, mode="chat", name="Fake app",
    **knobs) -> FakeApp``; ``app(api_key)``; ``requests: list[RecordedRequest]`` (every call, in
    order, also rejected ones); ``requests_to(path_suffix)``; ``clear_requests()``.

``RecordedRequest``
    ``method``, ``path`` (after ``/v1``, e.g. ``"/chat-messages"``), ``json`` (decoded body or
    None), ``query`` (dict), ``headers`` (dict), ``user`` (from body, query or form),
    ``api_key``, ``form`` (multipart text fields), ``files`` (multipart file names).

``FakeApp`` knobs (mutable attributes; also accepted by ``add_app``)
    ``mode``: chat | advanced-chat | agent-chat | completion | workflow.
    ``answer``: str, or ``callable(query, FakeConversation) -> str`` (the conversation holds the
    earlier turns: ``conv.queries``, ``conv.messages``); default echoes
    ``"You said: <query>"``. Workflow apps read the query from ``inputs[query_variable]``.
    ``chunk_size`` (chars per text event, default 8), ``chunk_delay`` (s between text events),
    ``first_byte_delay`` (s before response headers, every call), ``initial_ping`` (send
    ``event: ping`` first; always on for advanced-chat/workflow as Dify does).
    ``retriever_resources`` (list of dicts for ``message_end.metadata``), ``message_files``
    (list of ``{"type","url"}`` emitted as ``message_file`` events before the end),
    ``suggested_questions`` (list, or None = disabled: 400 bad_request "Suggested Questions Is
    Disabled."), ``user_input_form`` (Dify's form list; ``required`` variables are enforced on
    every call), ``file_upload`` (dict for /parameters; ``{"enabled": False}`` makes chat calls
    ignore ``files`` as Dify does), ``speech_to_text`` (bool), ``transcript`` (audio-to-text
    text), ``opening_statement`` and ``opening_questions`` (/parameters ``suggested_questions``),
    ``workflow_outputs`` (dict; default ``{output_variable:
    answer}``), ``output_variable`` (default "answer"), ``query_variable`` (default "query"),
    ``agent_thoughts`` (list of ``{"tool","tool_input","observation"}``: one tool round each),
    ``replace_with`` (str: send ``message_replace`` with this text before the end),
    ``workflow_status`` (final workflow_finished status, default "succeeded"; "failed" ends
    chatflow/workflow runs as Dify does: ``workflow_finished`` failed with ``workflow_error``,
    then for chatflow an ``error`` event "Run failed: ...", and no ``message_end``),
    ``max_upload_bytes`` (default 15 MB), ``keep_open_seconds`` (cap for ``Fault.keep_open``),
    ``gzip`` (compress streams, as a proxy with gzip on would).
    ``faults``: deque of one-shot :class:`Fault`; each generation call (stream *or* blocking)
    pops one. ``endpoint_faults[name]`` (or ``fail_endpoint(name, fault)``): faults for other
    endpoints, ``name`` one of
    ``stop``, ``feedbacks``, ``suggested``, ``messages``, ``conversations``, ``parameters``,
    ``info``, ``files/upload``, ``audio-to-text``, ``form`` (a Human Input submit; only
    ``http``, ``garbage`` and ``slow_first_byte`` make sense there).
    ``human_input`` (dict): the run pauses on a Human Input form; the form endpoints, the
    re-attach stream and the test helpers are in ``tests/fakes/dify_hitl.py``. Requests to them
    are checked against Dify's OpenAPI; breaches land in ``FakeDify.spec_violations``.
    State: ``requests`` (this app's calls only: handy with a session-wide fake),
    ``conversations`` (id -> :class:`FakeConversation`), ``messages`` (id ->
    :class:`FakeMessage`), ``uploads`` (id -> :class:`FakeUpload`), ``running`` (task ids of
    live streams), ``stopped`` (task ids stopped via the API), ``delete_conversation(id)``,
    ``conversation(id)``, ``wait_running(timeout)`` (waits until a stream is live, returns
    its task id), ``hung`` (task ids of ``Fault.pings`` streams whose client left: Dify's task
    runs on until stopped through the API).

``Fault`` helpers
    ``Fault.http(status, code, message, retry_after=None)`` Dify error body instead of a stream;
    ``Fault.error_event(after_chunks, code="completion_request_error", status=400, message=...)``;
    ``Fault.drop(after_chunks, stored="complete")`` abrupt close, no terminal event; ``stored``
    says what ``GET /messages`` shows afterwards: ``complete`` (Dify finished generating after
    the disconnect), ``partial`` (status normal, the text so far), ``error`` (status error with
    ``error`` set) or ``none`` (an empty answer);
    ``Fault.garbage(body, content_type="text/html", status=200)``;
    ``Fault.stall(after_chunks, seconds)`` silence mid-stream; ``Fault.slow_first_byte(seconds)``;
    ``Fault.keep_open()`` terminal event sent, connection left open;
    ``Fault.pings(after_chunks=0, interval=0.05)`` nothing but pings after some text, until the
    task is stopped through the API or the client leaves (a hung model).

Conversations are scoped to (app, user) exactly as Dify does: another user's or an unknown id
gives 404 ``not_found`` "Conversation Not Exists.". Messages are persisted, so ``GET /messages``
recovers an answer after a dropped stream (newest page, oldest first within it). A new
conversation's ``name`` is the query cut to 47 characters + "..." when ``auto_generate_name``
is true (Dify's fallback when naming fails), else "New conversation"; ``POST
/conversations/{id}/name`` renames, ``DELETE /conversations/{id}`` answers 204. ``POST .../stop``
really ends the running stream (``message_end`` with the partial answer; chatflow/workflow:
``workflow_finished`` "stopped"); a stop from a user who does not own the task is ignored but
still answers success, as in Dify.

Standalone (multi-process tests, benchmarks)::

    python -m tests.fakes.dify --port 0 --app app-key[:mode] [--answer TEXT] [--chunk-size N]

prints the base URL on stdout, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from tests.fakes import dify_hitl, referees

MODES = ("chat", "advanced-chat", "agent-chat", "completion", "workflow")
CHAT_MODES = ("chat", "advanced-chat", "agent-chat")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_AUDIO_TYPES = {"mp3", "m4a", "wav", "amr", "mpga", "mpeg", "webm", "x-wav", "mp4", "ogg"}


def dumps(obj: Any) -> str:
    """Dify's wire JSON: compact, raw UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(obj: dict[str, Any]) -> bytes:
    """One ``data:`` frame."""
    return f"data: {dumps(obj)}\n\n".encode()


PING = b"event: ping\n\n"


@dataclass
class RecordedRequest:
    method: str
    path: str
    json: Any
    query: dict[str, str]
    headers: dict[str, str]
    user: str | None
    api_key: str | None
    form: dict[str, str] | None = None
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fault:
    """A one-shot misbehaviour; build with the static helpers."""

    kind: str
    status: int = 200
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    after_chunks: int = 0
    seconds: float = 0.0
    body: bytes = b""
    content_type: str = ""
    stored: str = "complete"

    @staticmethod
    def http(status: int, code: str, message: str, retry_after: float | None = None) -> Fault:
        return Fault("http", status=status, code=code, message=message, retry_after=retry_after)

    @staticmethod
    def error_event(
        after_chunks: int,
        code: str = "completion_request_error",
        status: int = 400,
        message: str = "[openai] Rate Limit Error",
    ) -> Fault:
        return Fault(
            "error_event", after_chunks=after_chunks, code=code, status=status, message=message
        )

    @staticmethod
    def drop(after_chunks: int, stored: str = "complete") -> Fault:
        """Close the connection abruptly; ``stored`` is what ``GET /messages`` then shows:
        ``complete`` (Dify finished generating after the disconnect: the whole answer, status
        normal), ``partial`` (the text so far, status normal: a generation still under way),
        ``error`` (the text so far, status error, ``error`` set: it failed after the
        disconnect) or ``none`` (an empty answer: Dify saves the answer only at the end, and
        the generation died with the connection)."""
        if stored not in ("complete", "partial", "error", "none"):
            raise ValueError(f"unknown stored outcome {stored!r}")
        return Fault("drop", after_chunks=after_chunks, stored=stored)

    @staticmethod
    def garbage(body: bytes | str, content_type: str = "text/html", status: int = 200) -> Fault:
        raw = body.encode() if isinstance(body, str) else body
        return Fault("garbage", body=raw, content_type=content_type, status=status)

    @staticmethod
    def stall(after_chunks: int, seconds: float) -> Fault:
        return Fault("stall", after_chunks=after_chunks, seconds=seconds)

    @staticmethod
    def slow_first_byte(seconds: float) -> Fault:
        return Fault("slow_first_byte", seconds=seconds)

    @staticmethod
    def keep_open() -> Fault:
        return Fault("keep_open")

    @staticmethod
    def pings(after_chunks: int = 0, interval: float = 0.05) -> Fault:
        """After ``after_chunks`` text events, nothing but ``event: ping`` every ``interval``
        seconds, until the task is stopped through the API or the client goes away (a hung
        model: Dify keeps pinging until its own 20-minute limit)."""
        return Fault("pings", after_chunks=after_chunks, seconds=interval)


@dataclass
class FakeMessage:
    id: str
    conversation_id: str | None
    user: str
    query: str
    inputs: dict[str, Any]
    answer: str = ""
    status: str = "normal"
    error: str | None = None
    feedback: dict[str, Any] | None = None
    retriever_resources: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = field(default_factory=lambda: int(time.time()))
    # Set when the answer is saved at its end, as Dify does (0 while none is saved).
    message_tokens: int = 0
    answer_tokens: int = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "parent_message_id": None,
            "inputs": self.inputs,
            "query": self.query,
            "answer": self.answer,
            "status": self.status,
            "error": self.error,
            "message_files": [],
            "feedback": self.feedback,
            "retriever_resources": self.retriever_resources,
            "agent_thoughts": [],
            "created_at": self.created_at,
            "message_tokens": self.message_tokens,
            "answer_tokens": self.answer_tokens,
            "total_tokens": self.message_tokens + self.answer_tokens,
        }


@dataclass
class FakeConversation:
    id: str
    user: str
    name: str = "New conversation"
    inputs: dict[str, Any] = field(default_factory=dict)
    messages: list[FakeMessage] = field(default_factory=list)
    created_at: int = field(default_factory=lambda: int(time.time()))
    updated_at: int = field(default_factory=lambda: int(time.time()))
    deleted: bool = False

    @property
    def queries(self) -> list[str]:
        """Earlier questions, oldest first (in ``answer`` callables the current one is not in)."""
        return [m.query for m in self.messages]

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "inputs": self.inputs,
            "status": "normal",
            "introduction": "",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class FakeUpload:
    id: str
    user: str
    name: str
    mime_type: str
    data: bytes


_KNOBS: dict[str, Any] = {
    "answer": None,
    "chunk_size": 8,
    "chunk_delay": 0.0,
    "first_byte_delay": 0.0,
    "initial_ping": False,
    "retriever_resources": [],
    "message_files": [],
    "suggested_questions": ["Tell me more", "Give an example", "What else?"],
    "user_input_form": [],
    "file_upload": {"enabled": True, "image": {"enabled": True, "number_limits": 3}},
    "speech_to_text": False,
    "transcript": "This is a transcript.",
    "opening_statement": "",
    "opening_questions": [],
    "workflow_outputs": None,
    "output_variable": "answer",
    "query_variable": "query",
    "agent_thoughts": [],
    "replace_with": None,
    "workflow_status": "succeeded",
    "max_upload_bytes": 15 * 1024 * 1024,
    "keep_open_seconds": 30.0,
    "gzip": False,
    "workflow_error": "Node LLM run failed: model timeout",
    # Human Input (advanced-chat, workflow): see tests/fakes/dify_hitl.py.
    "human_input": None,
}


class FakeApp:
    """One Dify app behind one API key; see the module docstring for the knobs."""

    def __init__(self, api_key: str, *, mode: str = "chat", name: str = "Fake app", **knobs: Any):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        unknown = set(knobs) - set(_KNOBS)
        if unknown:
            raise TypeError(f"unknown FakeApp knobs: {sorted(unknown)}")
        self.api_key = api_key
        self.mode = mode
        self.name = name
        self.id = str(uuid.uuid4())
        for k, default in _KNOBS.items():
            value = knobs.get(k, default)
            setattr(self, k, list(value) if isinstance(value, list) else value)
        self.answer: str | Callable[[str, FakeConversation], str] | None
        self.chunk_size: int
        self.chunk_delay: float
        self.first_byte_delay: float
        self.initial_ping: bool
        self.retriever_resources: list[dict[str, Any]]
        self.message_files: list[dict[str, Any]]
        self.suggested_questions: list[str] | None
        self.user_input_form: list[dict[str, Any]]
        self.file_upload: dict[str, Any]
        self.speech_to_text: bool
        self.transcript: str
        self.opening_statement: str
        self.opening_questions: list[str]
        self.workflow_outputs: dict[str, Any] | None
        self.output_variable: str
        self.query_variable: str
        self.agent_thoughts: list[dict[str, Any]]
        self.replace_with: str | None
        self.workflow_status: str
        self.max_upload_bytes: int
        self.keep_open_seconds: float
        self.gzip: bool
        self.workflow_error: str
        self.human_input: dict[str, Any] | None
        # Human Input state, attached by dify_hitl.state() (FakeDify.add_app calls it).
        self.hitl: dify_hitl.HitlState
        self.runs: dict[str, dify_hitl.FakeRun]
        self.forms: dict[str, dify_hitl.FakeForm]
        self.form_submissions: list[dict[str, Any]]
        self.faults: deque[Fault] = deque()
        self.endpoint_faults: dict[str, deque[Fault]] = {}
        self.conversations: dict[str, FakeConversation] = {}
        self.messages: dict[str, FakeMessage] = {}
        self.uploads: dict[str, FakeUpload] = {}
        self.running: dict[str, tuple[str, asyncio.Event]] = {}
        self.stopped: list[str] = []
        # Tasks of Fault.pings streams whose client left: still running in "Dify" until stopped.
        self.hung: dict[str, tuple[str, asyncio.Event]] = {}
        self.requests: list[RecordedRequest] = []
        self._running_changed = asyncio.Event()

    def compute_answer(self, query: str, conv: FakeConversation) -> str:
        if self.answer is None:
            return f"You said: {query}"
        if callable(self.answer):
            return self.answer(query, conv)
        return self.answer

    def conversation(self, conversation_id: str) -> FakeConversation | None:
        c = self.conversations.get(conversation_id)
        return None if c is None or c.deleted else c

    def delete_conversation(self, conversation_id: str) -> None:
        """Forget a conversation, as if deleted in Dify (later use gives 404)."""
        c = self.conversations.get(conversation_id)
        if c is not None:
            c.deleted = True

    def fail_endpoint(self, name: str, fault: Fault) -> None:
        self.endpoint_faults.setdefault(name, deque()).append(fault)

    async def wait_running(self, timeout: float = 5.0) -> str:  # noqa: ASYNC109 - test helper
        """Wait until a stream is being served; returns its task id."""
        async with asyncio.timeout(timeout):
            while not self.running:
                self._running_changed.clear()
                await self._running_changed.wait()
        return next(iter(self.running))


_REC = web.RequestKey("rec", RecordedRequest)
_BODY = web.RequestKey("body", object)
_APP = web.RequestKey("app", FakeApp)
# Why Dify's OpenAPI refuses this request, for handlers that answer such a request themselves.
SPEC_PROBLEM = web.RequestKey("spec_problem", str)


class _HTTPFail(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    h = dict(headers or {})
    if status == 401:
        h.setdefault("WWW-Authenticate", 'Bearer realm="api"')
    return web.Response(
        status=status,
        text=dumps({"code": code, "message": message, "status": status}),
        content_type="application/json",
        headers=h,
    )


def _require_chat_app(app: FakeApp) -> None:
    """Dify's guard on the chat-only routes (controllers/service_api/app/error.py)."""
    if app.mode not in CHAT_MODES:
        raise _HTTPFail(
            400, "not_chat_app", "Please check if your app mode matches the right API route."
        )


def _closing(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


class _Gen:
    """State of one generation call (stream or blocking)."""

    def __init__(self, app: FakeApp, user: str, query: str, inputs: dict[str, Any]) -> None:
        self.app = app
        self.user = user
        self.query = query
        self.inputs = inputs
        self.task_id = str(uuid.uuid4())
        self.message_id = str(uuid.uuid4())
        self.workflow_run_id = str(uuid.uuid4())
        self.created_at = int(time.time())
        self.conv: FakeConversation | None = None
        self.message: FakeMessage | None = None
        self.answer = ""
        self.stop = asyncio.Event()

    def env(self, event: str) -> dict[str, Any]:
        mode = self.app.mode
        if mode == "workflow":
            return {
                "event": event,
                "task_id": self.task_id,
                "workflow_run_id": self.workflow_run_id,
            }
        d: dict[str, Any] = {"event": event}
        if mode != "completion":
            d["conversation_id"] = self.conv.id if self.conv else None
        d["message_id"] = self.message_id
        d["created_at"] = self.created_at
        d["task_id"] = self.task_id
        return d

    def usage(self, completion_tokens: int) -> dict[str, Any]:
        prompt = max(1, len(self.query.split()))
        return {
            "prompt_tokens": prompt,
            "prompt_unit_price": "0.15",
            "prompt_price_unit": "0.000001",
            "prompt_price": f"{prompt * 0.00000015:.7f}",
            "completion_tokens": completion_tokens,
            "completion_unit_price": "0.6",
            "completion_price_unit": "0.000001",
            "completion_price": f"{completion_tokens * 0.0000006:.7f}",
            "total_tokens": prompt + completion_tokens,
            "total_price": f"{prompt * 0.00000015 + completion_tokens * 0.0000006:.7f}",
            "currency": "USD",
            "latency": 0.5,
            "time_to_first_token": 0.1,
            "time_to_generate": 0.4,
        }


class FakeDify:
    """The fake server; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, referee: bool = True) -> None:
        self.host = host
        self.port = port
        self.apps: dict[str, FakeApp] = {}
        self.requests: list[RecordedRequest] = []
        # Dify's OpenAPI document judges every request (tests/fakes/referees.py); what it
        # refuses is kept here and in referees.VIOLATIONS (and fails the test).
        self.referee = referees.dify_spec() if referee else None
        self.spec_violations: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        webapp = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        r = webapp.router
        r.add_post("/v1/chat-messages", self._chat)
        r.add_post("/v1/chat-messages/{task_id}/stop", self._stop)
        r.add_post("/v1/completion-messages", self._completion)
        r.add_post("/v1/completion-messages/{task_id}/stop", self._stop)
        r.add_post("/v1/workflows/run", self._workflow)
        r.add_post("/v1/workflows/tasks/{task_id}/stop", self._stop)
        r.add_post("/v1/messages/{message_id}/feedbacks", self._feedback)
        r.add_get("/v1/messages/{message_id}/suggested", self._suggested)
        r.add_get("/v1/messages", self._messages)
        r.add_get("/v1/conversations", self._conversations)
        r.add_delete("/v1/conversations/{conversation_id}", self._delete_conversation)
        r.add_post("/v1/conversations/{conversation_id}/name", self._rename)
        r.add_get("/v1/parameters", self._parameters)
        r.add_get("/v1/info", self._info)
        r.add_post("/v1/files/upload", self._upload)
        r.add_post("/v1/audio-to-text", self._audio)
        dify_hitl.install(self, r)
        self._runner = web.AppRunner(
            webapp, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        # A deep accept backlog: tests open hundreds of streams at once.
        site = web.TCPSite(self._runner, self.host, self.port, backlog=2048)
        await site.start()
        port = self._runner.addresses[0][1]
        self.port = port
        self.base_url = f"http://{self.host}:{port}/v1"

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for app in self.apps.values():
            for _, ev in app.running.values():
                ev.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDify:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add_app(
        self, api_key: str, *, mode: str = "chat", name: str = "Fake app", **knobs: Any
    ) -> FakeApp:
        app = FakeApp(api_key, mode=mode, name=name, **knobs)
        dify_hitl.state(app)
        self.apps[api_key] = app
        return app

    async def submit_elsewhere(self, app: FakeApp, token: str, action: str) -> None:
        """A Human Input form is answered outside the bridge (Dify's own web form)."""
        await dify_hitl.submit_elsewhere(self, app, token, action)

    async def expire_form(self, app: FakeApp, token: str) -> None:
        """A Human Input form's timeout fires (``human_input_form_timeout``)."""
        await dify_hitl.expire_form(self, app, token)

    def app(self, api_key: str) -> FakeApp:
        return self.apps[api_key]

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        """Recorded requests whose path ends with ``suffix`` (e.g. ``"/chat-messages"``)."""
        return [r for r in self.requests if r.path.endswith(suffix)]

    def clear_requests(self) -> None:
        self.requests.clear()

    # ----------------------------------------------------------------- plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body: Any = None
        raw = b""
        if request.content_type == "application/json" and request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        user = None
        if isinstance(body, dict) and isinstance(body.get("user"), str):
            user = body["user"]
        elif "user" in request.query:
            user = request.query["user"]
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        rec = RecordedRequest(
            method=request.method,
            path=request.path.removeprefix("/v1"),
            json=body,
            query=dict(request.query),
            headers=dict(request.headers),
            user=user,
            api_key=key,
        )
        self.requests.append(rec)
        request[_REC] = rec
        request[_BODY] = body
        try:
            if not auth:
                raise _HTTPFail(
                    401,
                    "unauthorized",
                    "Authorization header must be provided and start with 'Bearer'",
                )
            if key is None:
                raise _HTTPFail(401, "unauthorized", "Authorization scheme must be 'Bearer'")
            app = self.apps.get(key)
            if app is None:
                raise _HTTPFail(401, "unauthorized", "Access token is invalid")
            request[_APP] = app
            app.requests.append(rec)
            self._referee(request, raw)
            return await handler(request)
        except _HTTPFail as e:
            return _error_response(e.status, e.code, e.message, e.headers)

    def _referee(self, request: web.Request, raw: bytes) -> None:
        if self.referee is None:
            return
        path = request.path.removeprefix("/v1")
        problem = self.referee.problem(
            request.method,
            path,
            query=dict(request.query),
            headers=dict(request.headers),
            content_type=request.content_type,
            body=raw or None,
        )
        if problem is not None:
            # Noted, not answered: the handlers answer in Dify's own words (a missing user is
            # "Arg user must be provided."), and the test fails on the note either way.
            line = f"Dify {request.method} {path}: {problem}"
            self.spec_violations.append(line)
            referees.VIOLATIONS.append(line)
            request[SPEC_PROBLEM] = problem

    async def _endpoint_fault(self, request: web.Request, name: str) -> web.StreamResponse | None:
        app: FakeApp = request[_APP]
        q = app.endpoint_faults.get(name)
        if not q:
            return None
        fault = q.popleft()
        return await self._apply_early_fault(request, fault)

    async def _apply_early_fault(
        self, request: web.Request, fault: Fault | None
    ) -> web.StreamResponse | None:
        if fault is None:
            return None
        if fault.kind == "slow_first_byte":
            await self._sleep_watching(request, fault.seconds)
            return None
        if fault.kind == "http":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return _error_response(fault.status, fault.code, fault.message, headers)
        if fault.kind == "garbage":
            return web.Response(
                status=fault.status,
                body=fault.body,
                headers={"Content-Type": fault.content_type or "application/octet-stream"},
            )
        return None

    async def _sleep_watching(self, request: web.Request, seconds: float) -> None:
        """Sleep, but stop early when the client went away or the server closes."""
        deadline = time.monotonic() + seconds
        while not self._closing and not _closing(request):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    @staticmethod
    def _body(request: web.Request) -> dict[str, Any]:
        body = request[_BODY]
        if not isinstance(body, dict):
            raise _HTTPFail(
                400,
                "bad_request",
                "The browser (or proxy) sent a request that this server could not understand.",
            )
        return body

    @staticmethod
    def _user(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise _HTTPFail(400, "invalid_param", "Arg user must be provided.")
        return value

    @staticmethod
    def _check_inputs(app: FakeApp, inputs: Any) -> dict[str, Any]:
        if not isinstance(inputs, dict):
            raise _HTTPFail(400, "invalid_param", "inputs: Input should be a valid dictionary")
        for item in app.user_input_form:
            for spec in item.values():
                if not isinstance(spec, dict):
                    continue
                var = spec.get("variable")
                if spec.get("required") and (inputs.get(var) in (None, "")):
                    raise _HTTPFail(400, "invalid_param", f"{var} is required in input form")
                ml = spec.get("max_length")
                if isinstance(inputs.get(var), str) and ml and len(inputs[var]) > ml:
                    raise _HTTPFail(
                        400,
                        "invalid_param",
                        f"{var} in input form must be less than {ml} characters",
                    )
        return inputs

    @staticmethod
    def _check_files(app: FakeApp, user: str, files: Any) -> None:
        if files in (None, []):
            return
        if not app.file_upload.get("enabled", False):
            return  # Dify silently ignores files when the app has uploads off
        if not isinstance(files, list):
            raise _HTTPFail(400, "invalid_param", "files: Input should be a valid list")
        for f in files:
            if not isinstance(f, dict) or f.get("transfer_method") not in (
                "remote_url",
                "local_file",
            ):
                raise _HTTPFail(400, "invalid_param", "Invalid file transfer method")
            if f["transfer_method"] == "local_file":
                up = app.uploads.get(str(f.get("upload_file_id")))
                if up is None or up.user != user:
                    raise _HTTPFail(400, "invalid_param", "Invalid upload file")

    # -------------------------------------------------------------- generation

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        _require_chat_app(app)
        body = self._body(request)
        user = self._user(body.get("user"))
        inputs = self._check_inputs(app, body.get("inputs"))
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _HTTPFail(400, "invalid_param", "query is required")
        mode = body.get("response_mode", "blocking")
        if mode not in ("blocking", "streaming"):
            raise _HTTPFail(400, "invalid_param", "response_mode must be blocking or streaming")
        cid = body.get("conversation_id") or ""
        conv: FakeConversation | None = None
        if cid:
            if not isinstance(cid, str) or not _UUID_RE.match(cid):
                raise _HTTPFail(400, "invalid_param", "conversation_id must be a valid UUID")
            conv = app.conversation(cid)
            if conv is None or conv.user != user:
                raise _HTTPFail(404, "not_found", "Conversation Not Exists.")
        self._check_files(app, user, body.get("files"))
        if mode == "blocking" and app.mode == "agent-chat":
            raise _HTTPFail(400, "invalid_param", "Agent Chat App does not support blocking mode.")
        fault = app.faults.popleft() if app.faults else None
        early = await self._apply_early_fault(request, fault)
        if early is not None:
            return early
        if app.first_byte_delay:
            await self._sleep_watching(request, app.first_byte_delay)
        gen = _Gen(app, user, query, inputs)
        if conv is None:
            auto = body.get("auto_generate_name", True)
            name = (query[:47] + "...") if len(query) > 47 else query
            conv = FakeConversation(
                id=str(uuid.uuid4()),
                user=user,
                name=name if auto else "New conversation",
                inputs=inputs,
            )
            app.conversations[conv.id] = conv
        gen.conv = conv
        gen.answer = app.compute_answer(query, conv)
        gen.message = FakeMessage(
            id=gen.message_id,
            conversation_id=conv.id,
            user=user,
            query=query,
            inputs=inputs,
            retriever_resources=list(app.retriever_resources),
        )
        conv.messages.append(gen.message)
        conv.updated_at = int(time.time())
        app.messages[gen.message_id] = gen.message
        if mode == "blocking":
            return self._blocking(gen, fault)
        return await self._run_stream(request, gen, fault)

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        if app.mode != "completion":
            raise _HTTPFail(
                400, "app_unavailable", "App unavailable, please check your app configurations."
            )
        body = self._body(request)
        user = self._user(body.get("user"))
        inputs = self._check_inputs(app, body.get("inputs"))
        query = body.get("query", "")
        if not isinstance(query, str):
            raise _HTTPFail(400, "invalid_param", "query: Input should be a valid string")
        self._check_files(app, user, body.get("files"))
        mode = body.get("response_mode", "blocking")
        fault = app.faults.popleft() if app.faults else None
        early = await self._apply_early_fault(request, fault)
        if early is not None:
            return early
        if app.first_byte_delay:
            await self._sleep_watching(request, app.first_byte_delay)
        gen = _Gen(app, user, query, inputs)
        scratch = FakeConversation(id="", user=user, inputs=inputs)
        gen.answer = app.compute_answer(query, scratch)
        gen.message = FakeMessage(
            id=gen.message_id, conversation_id=None, user=user, query=query, inputs=inputs
        )
        app.messages[gen.message_id] = gen.message
        if mode == "blocking":
            return self._blocking(gen, fault)
        return await self._run_stream(request, gen, fault)

    async def _workflow(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        if app.mode != "workflow":
            raise _HTTPFail(
                400,
                "not_workflow_app",
                "Please check if your app mode matches the right API route.",
            )
        body = self._body(request)
        user = self._user(body.get("user"))
        inputs = self._check_inputs(app, body.get("inputs"))
        self._check_files(app, user, body.get("files"))
        mode = body.get("response_mode", "blocking")
        fault = app.faults.popleft() if app.faults else None
        early = await self._apply_early_fault(request, fault)
        if early is not None:
            return early
        if app.first_byte_delay:
            await self._sleep_watching(request, app.first_byte_delay)
        query = inputs.get(app.query_variable)
        query = query if isinstance(query, str) else ""
        gen = _Gen(app, user, query, inputs)
        gen.answer = app.compute_answer(query, FakeConversation(id="", user=user, inputs=inputs))
        if mode == "blocking":
            return self._blocking(gen, fault)
        return await self._run_stream(request, gen, fault)

    def _outputs(self, gen: _Gen) -> dict[str, Any]:
        if gen.app.workflow_outputs is not None:
            return dict(gen.app.workflow_outputs)
        return {gen.app.output_variable: gen.answer}

    def _blocking(self, gen: _Gen, fault: Fault | None) -> web.Response:
        app = gen.app
        if fault is not None and fault.kind == "error_event":
            if gen.message:
                gen.message.status, gen.message.error = "error", fault.message
            return _error_response(fault.status, fault.code, fault.message)
        if app.mode == "workflow":
            now = int(time.time())
            return web.json_response(
                {
                    "task_id": gen.task_id,
                    "workflow_run_id": gen.workflow_run_id,
                    "data": {
                        "id": gen.workflow_run_id,
                        "workflow_id": app.id,
                        "status": app.workflow_status,
                        "outputs": self._outputs(gen),
                        "error": None,
                        "elapsed_time": 0.5,
                        "total_tokens": 10,
                        "total_steps": 3,
                        "created_at": now,
                        "finished_at": now,
                    },
                },
                dumps=dumps,
            )
        assert gen.message is not None
        text = app.replace_with if app.replace_with is not None else gen.answer
        gen.message.answer = text
        out: dict[str, Any] = {
            "event": "message",
            "task_id": gen.task_id,
            "id": gen.message_id,
            "message_id": gen.message_id,
            "mode": app.mode,
            "answer": text,
            "metadata": {
                "annotation_reply": None,
                "retriever_resources": list(app.retriever_resources),
                "usage": gen.usage(len(text.split())),
            },
            "created_at": gen.created_at,
        }
        if app.mode != "completion":
            out["conversation_id"] = gen.conv.id if gen.conv else None
        return web.json_response(out, dumps=dumps)

    def _plan(self, gen: _Gen) -> Iterator[tuple[str, Any]]:
        """The stream as steps: ("text", chunk) or ("event", dict) or ("raw", bytes)."""
        app = gen.app
        mode = app.mode
        size = max(1, int(app.chunk_size))
        chunks = [gen.answer[i : i + size] for i in range(0, len(gen.answer), size)]
        if mode in ("advanced-chat", "workflow") or app.initial_ping:
            yield "raw", PING
        if mode in ("advanced-chat", "workflow"):
            yield "event", self._wf_started(gen)
            yield from self._node(gen, "start", "start", "Start", None)
            yield "event", self._node_ev(gen, "node_started", "llm", "llm", "LLM", None)
        if mode == "agent-chat":
            for i, step in enumerate(app.agent_thoughts, start=1):
                tid = str(uuid.uuid4())
                yield "event", self._thought(gen, tid, i, "", "", "", "")
                yield (
                    "event",
                    self._thought(
                        gen,
                        tid,
                        i,
                        "",
                        str(step.get("tool", "")),
                        str(step.get("tool_input", "")),
                        "",
                    ),
                )
                yield (
                    "event",
                    self._thought(
                        gen,
                        tid,
                        i,
                        "",
                        str(step.get("tool", "")),
                        str(step.get("tool_input", "")),
                        str(step.get("observation", "")),
                    ),
                )
            final_tid = str(uuid.uuid4())
            final_pos = len(app.agent_thoughts) + 1
            yield "event", self._thought(gen, final_tid, final_pos, "", "", "", "")
        for c in chunks:
            yield "text", c
        yield "end_of_text", None
        if mode == "agent-chat":
            yield "event", self._thought(gen, final_tid, final_pos, gen.answer, "", "", "")
        if mode in ("advanced-chat", "workflow"):
            yield (
                "event",
                self._node_ev(
                    gen, "node_finished", "llm", "llm", "LLM", "succeeded", {"text": gen.answer}
                ),
            )
            last = (
                ("answer", "answer", "Answer") if mode == "advanced-chat" else ("end", "end", "End")
            )
            yield from self._node(gen, *last, {"answer": gen.answer})
        if mode in CHAT_MODES:
            for f in app.message_files:
                ev = gen.env("message_file")
                ev.update(
                    {
                        "id": str(uuid.uuid4()),
                        "type": f.get("type", "image"),
                        "belongs_to": "assistant",
                        "url": f.get("url", ""),
                    }
                )
                yield "event", ev
        if app.replace_with is not None and mode != "workflow":
            ev = gen.env("message_replace")
            ev.update({"answer": app.replace_with, "reason": "output_moderation"})
            yield "event", ev
        if app.workflow_status == "failed" and mode in ("advanced-chat", "workflow"):
            # Dify: workflow_finished(failed), then (chatflow) an error event; no message_end.
            if gen.message is not None:
                gen.message.status, gen.message.error = "error", app.workflow_error
            yield "event", self._wf_finished(gen, "failed", app.workflow_error)
            if mode == "advanced-chat":
                ev = gen.env("error")
                ev.pop("task_id", None)
                ev.update(
                    {
                        "code": "invalid_param",
                        "status": 400,
                        "message": f"Run failed: {app.workflow_error}",
                    }
                )
                yield "event", ev
            return
        if mode != "workflow":
            yield "event", self._message_end(gen, len(chunks))
        if mode in ("advanced-chat", "workflow"):
            yield "event", self._wf_finished(gen, app.workflow_status, None)

    def _wf_started(self, gen: _Gen) -> dict[str, Any]:
        ev = gen.env("workflow_started")
        ev["workflow_run_id"] = gen.workflow_run_id
        ev["data"] = {
            "id": gen.workflow_run_id,
            "workflow_id": gen.app.id,
            "inputs": {**gen.inputs, "sys.query": gen.query, "sys.user_id": gen.user},
            "created_at": gen.created_at,
            "reason": "initial",
        }
        return ev

    def _wf_finished(self, gen: _Gen, status: str, error: str | None) -> dict[str, Any]:
        ev = gen.env("workflow_finished")
        ev["workflow_run_id"] = gen.workflow_run_id
        now = int(time.time())
        ev["data"] = {
            "id": gen.workflow_run_id,
            "workflow_id": gen.app.id,
            "status": status,
            "outputs": self._outputs(gen) if status != "stopped" else {},
            "error": error,
            "elapsed_time": 0.5,
            "total_tokens": 10,
            "total_steps": 3,
            "created_by": {"id": str(uuid.uuid4()), "user": gen.user},
            "created_at": gen.created_at,
            "finished_at": now,
            "exceptions_count": 0,
            "files": [],
        }
        return ev

    def _node_ev(
        self,
        gen: _Gen,
        event: str,
        node_id: str,
        node_type: str,
        title: str,
        status: str | None,
        outputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ev = gen.env(event)
        ev["workflow_run_id"] = gen.workflow_run_id
        data: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "node_id": node_id,
            "node_type": node_type,
            "title": title,
            "index": 1,
            "predecessor_node_id": None,
            "inputs": None,
            "created_at": gen.created_at,
            "extras": {},
            "iteration_id": None,
            "loop_id": None,
        }
        if event == "node_finished":
            data.update(
                {
                    "status": status,
                    "error": None,
                    "elapsed_time": 0.01,
                    "outputs": outputs,
                    "process_data": None,
                    "execution_metadata": None,
                    "finished_at": gen.created_at,
                }
            )
        ev["data"] = data
        return ev

    def _node(
        self, gen: _Gen, node_id: str, node_type: str, title: str, outputs: dict[str, Any] | None
    ) -> Iterator[tuple[str, Any]]:
        yield "event", self._node_ev(gen, "node_started", node_id, node_type, title, None)
        yield (
            "event",
            self._node_ev(gen, "node_finished", node_id, node_type, title, "succeeded", outputs),
        )

    def _thought(
        self, gen: _Gen, tid: str, pos: int, thought: str, tool: str, tool_input: str, obs: str
    ) -> dict[str, Any]:
        ev = gen.env("agent_thought")
        ev.update(
            {
                "id": tid,
                "position": pos,
                "thought": thought,
                "observation": obs,
                "tool": tool,
                "tool_labels": {},
                "tool_input": tool_input,
                "message_files": [],
            }
        )
        return ev

    def _message_end(self, gen: _Gen, n_chunks: int) -> dict[str, Any]:
        ev = gen.env("message_end")
        ev["id"] = gen.message_id
        ev["metadata"] = {
            "annotation_reply": None,
            "retriever_resources": list(gen.app.retriever_resources),
            "usage": gen.usage(n_chunks),
        }
        ev["files"] = None
        return ev

    def _text_event(self, gen: _Gen, chunk: str) -> bytes:
        if gen.app.mode == "workflow":
            ev = gen.env("text_chunk")
            ev["data"] = {"text": chunk, "from_variable_selector": ["llm", "text"]}
        else:
            ev = gen.env("agent_message" if gen.app.mode == "agent-chat" else "message")
            ev["id"] = gen.message_id
            ev["answer"] = chunk
            if gen.app.mode != "agent-chat":
                ev["from_variable_selector"] = (
                    ["llm", "text"] if gen.app.mode == "advanced-chat" else None
                )
        return sse(ev)

    async def _run_stream(
        self, request: web.Request, gen: _Gen, fault: Fault | None
    ) -> web.StreamResponse:
        app = gen.app
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        if app.gzip:
            # As a proxy with gzip on for text/event-stream would (nginx `gzip_types`).
            resp.enable_compression(web.ContentCoding.gzip)
        await resp.prepare(request)
        app.running[gen.task_id] = (gen.user, gen.stop)
        app._running_changed.set()
        sent_text = 0
        partial: list[str] = []
        mid = (
            fault
            if fault is not None and fault.kind in ("stall", "error_event", "drop", "pings")
            else None
        )
        try:
            steps = dify_hitl.plan(self, gen) if dify_hitl.applies(app) else self._plan(gen)
            for kind, payload in steps:
                if (
                    kind in ("text", "end_of_text")
                    and mid is not None
                    and mid.after_chunks <= sent_text
                ):
                    fault_done = await self._mid_fault(request, resp, gen, mid, "".join(partial))
                    mid = None
                    if fault_done:
                        return resp
                if gen.stop.is_set() and not self._closing:
                    await self._finish_stopped(resp, gen, "".join(partial), sent_text)
                    return resp
                if self._closing:
                    return resp
                if kind == "text":
                    await resp.write(self._text_event(gen, payload))
                    partial.append(payload)
                    sent_text += 1
                    if gen.message is not None:
                        gen.message.answer = "".join(partial)
                    if app.chunk_delay:
                        await asyncio.sleep(app.chunk_delay)
                    else:
                        await asyncio.sleep(0)
                elif kind == "event":
                    await resp.write(sse(payload))
                elif kind == "raw":
                    await resp.write(payload)
            self._store_final(gen)
            if fault is not None and fault.kind == "keep_open":
                await self._sleep_watching(request, app.keep_open_seconds)
            await resp.write_eof()
        except asyncio.CancelledError:
            # The client went away: Dify keeps generating and stores the whole answer.
            self._store_final(gen)
            raise
        except ConnectionError:
            self._store_final(gen)
        finally:
            app.running.pop(gen.task_id, None)
            app._running_changed.set()
        return resp

    def _store_final(self, gen: _Gen) -> None:
        if gen.message is not None and gen.message.status == "normal":
            text = gen.app.replace_with if gen.app.replace_with is not None else gen.answer
            gen.message.answer = text
            usage = gen.usage(max(1, -(-len(gen.answer) // max(1, int(gen.app.chunk_size)))))
            gen.message.message_tokens = usage["prompt_tokens"]
            gen.message.answer_tokens = usage["completion_tokens"]

    async def _mid_fault(
        self, request: web.Request, resp: web.StreamResponse, gen: _Gen, fault: Fault, partial: str
    ) -> bool:
        """Apply a mid-stream fault; True when the stream is over."""
        if fault.kind == "stall":
            await self._sleep_watching(request, fault.seconds)
            return _closing(request)
        if fault.kind == "error_event":
            if gen.message is not None:
                gen.message.answer = partial
                gen.message.status, gen.message.error = "error", fault.message
            env = gen.env("error")
            env.pop("task_id", None)  # Dify's error events carry no task_id
            if gen.app.mode == "workflow":
                env.pop("workflow_run_id", None)
            env.update({"code": fault.code, "status": fault.status, "message": fault.message})
            await resp.write(sse(env))
            await resp.write_eof()
            return True
        if fault.kind == "drop":
            if fault.stored == "complete":
                self._store_final(gen)
            elif gen.message is not None:
                gen.message.answer = "" if fault.stored == "none" else partial
                if fault.stored == "error":
                    gen.message.status = "error"
                    gen.message.error = "[openai] Connection error"
            if request.transport is not None:
                request.transport.abort()
            return True
        if fault.kind == "pings":
            try:
                while not gen.stop.is_set() and not self._closing and not _closing(request):
                    await resp.write(PING)
                    await asyncio.sleep(fault.seconds)
            except (ConnectionError, asyncio.CancelledError):
                # The client left; the hung task lives on in Dify until it is stopped.
                gen.app.hung[gen.task_id] = (gen.user, gen.stop)
                raise
            if not gen.stop.is_set():
                gen.app.hung[gen.task_id] = (gen.user, gen.stop)
            elif not self._closing and not _closing(request):
                await self._finish_stopped(resp, gen, partial, fault.after_chunks)
            return True
        return False

    async def _finish_stopped(
        self, resp: web.StreamResponse, gen: _Gen, partial: str, n_chunks: int
    ) -> None:
        if gen.message is not None:
            gen.message.answer = partial
        mode = gen.app.mode
        if mode in ("advanced-chat", "workflow"):
            await resp.write(sse(self._wf_finished(gen, "stopped", "Stopped by user.")))
        if mode != "workflow":
            await resp.write(sse(self._message_end(gen, n_chunks)))
        await resp.write_eof()

    # ------------------------------------------------------------ other endpoints

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "stop")
        if early is not None:
            return early
        path = request.path
        if "/completion-messages/" in path and app.mode != "completion":
            raise _HTTPFail(
                400, "app_unavailable", "App unavailable, please check your app configurations."
            )
        if "/chat-messages/" in path and app.mode not in CHAT_MODES:
            raise _HTTPFail(
                400, "not_chat_app", "Please check if your app mode matches the right API route."
            )
        if "/workflows/" in path and app.mode != "workflow":
            raise _HTTPFail(
                400,
                "not_workflow_app",
                "Please check if your app mode matches the right API route.",
            )
        body = self._body(request)
        user = self._user(body.get("user"))
        task_id = request.match_info["task_id"]
        running = app.running.get(task_id) or app.hung.get(task_id)
        # Dify silently ignores a stop from another user but still answers success.
        if running is not None and (
            running[0] == user or app.mode in ("advanced-chat", "workflow")
        ):
            running[1].set()
            app.stopped.append(task_id)
            app.hung.pop(task_id, None)
        return web.json_response({"result": "success"})

    def _find_message(self, app: FakeApp, message_id: str, user: str | None) -> FakeMessage:
        m = app.messages.get(message_id)
        if m is None or (user is not None and m.user != user):
            raise _HTTPFail(404, "not_found", "Message Not Exists.")
        return m

    async def _feedback(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "feedbacks")
        if early is not None:
            return early
        body = self._body(request)
        user = self._user(body.get("user"))
        rating = body.get("rating")
        if rating not in ("like", "dislike", None):
            raise _HTTPFail(400, "invalid_param", "rating must be like, dislike or null")
        m = self._find_message(app, request.match_info["message_id"], user)
        feedback = None if rating is None else {"rating": rating}
        if feedback is not None and isinstance(body.get("content"), str):
            feedback["content"] = body["content"]
        m.feedback = feedback
        return web.json_response({"result": "success"})

    async def _suggested(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "suggested")
        if early is not None:
            return early
        _require_chat_app(app)
        user = self._user(request.query.get("user"))
        self._find_message(app, request.match_info["message_id"], user)
        if app.suggested_questions is None:
            raise _HTTPFail(400, "bad_request", "Suggested Questions Is Disabled.")
        return web.json_response({"result": "success", "data": list(app.suggested_questions)})

    @staticmethod
    def _limit(request: web.Request) -> int:
        raw = request.query.get("limit", "20")
        try:
            limit = int(raw)
        except ValueError:
            raise _HTTPFail(
                400, "invalid_param", "limit: Input should be a valid integer"
            ) from None
        if not 1 <= limit <= 100:
            raise _HTTPFail(400, "invalid_param", "limit must be between 1 and 100")
        return limit

    def _owned_conversation(self, app: FakeApp, cid: str, user: str) -> FakeConversation:
        conv = app.conversation(cid)
        if conv is None or conv.user != user:
            raise _HTTPFail(404, "not_found", "Conversation Not Exists.")
        return conv

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "messages")
        if early is not None:
            return early
        _require_chat_app(app)
        user = request.query.get("user", "DEFAULT-USER")
        cid = request.query.get("conversation_id")
        if not cid:
            raise _HTTPFail(400, "invalid_param", "conversation_id is required")
        limit = self._limit(request)
        conv = self._owned_conversation(app, cid, user)
        # Dify returns the newest page, oldest first within it.
        page = conv.messages[-limit:]
        return web.json_response(
            {
                "limit": limit,
                "has_more": len(conv.messages) > limit,
                "data": [m.to_api() for m in page],
            },
            dumps=dumps,
        )

    async def _conversations(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "conversations")
        if early is not None:
            return early
        _require_chat_app(app)
        user = request.query.get("user", "DEFAULT-USER")
        limit = self._limit(request)
        mine = [c for c in app.conversations.values() if c.user == user and not c.deleted]
        mine.sort(key=lambda c: c.updated_at, reverse=True)
        return web.json_response(
            {
                "limit": limit,
                "has_more": len(mine) > limit,
                "data": [c.to_api() for c in mine[:limit]],
            },
            dumps=dumps,
        )

    async def _delete_conversation(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        raw = request[_BODY]
        body = raw if isinstance(raw, dict) else {}
        user = body.get("user") or request.query.get("user") or "DEFAULT-USER"
        conv = self._owned_conversation(app, request.match_info["conversation_id"], user)
        conv.deleted = True
        return web.Response(status=204)

    async def _rename(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        body = self._body(request)
        user = body.get("user") or "DEFAULT-USER"
        conv = self._owned_conversation(app, request.match_info["conversation_id"], user)
        if body.get("auto_generate"):
            conv.name = conv.queries[0][:47] if conv.queries else conv.name
        else:
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise _HTTPFail(400, "invalid_param", "name is required")
            conv.name = name
        return web.json_response(conv.to_api(), dumps=dumps)

    async def _parameters(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "parameters")
        if early is not None:
            return early
        return web.json_response(
            {
                "opening_statement": app.opening_statement,
                "suggested_questions": list(app.opening_questions),
                "suggested_questions_after_answer": {
                    "enabled": app.suggested_questions is not None
                },
                "speech_to_text": {"enabled": app.speech_to_text},
                "text_to_speech": {"enabled": False},
                "retriever_resource": {"enabled": bool(app.retriever_resources)},
                "annotation_reply": {"enabled": False},
                "more_like_this": {"enabled": False},
                "user_input_form": app.user_input_form,
                "sensitive_word_avoidance": {"enabled": False},
                "file_upload": app.file_upload,
                "system_parameters": {
                    "file_size_limit": 15,
                    "image_file_size_limit": 10,
                    "audio_file_size_limit": 50,
                    "video_file_size_limit": 100,
                    "workflow_file_upload_limit": 10,
                },
            },
            dumps=dumps,
        )

    async def _info(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "info")
        if early is not None:
            return early
        return web.json_response(
            {
                "name": app.name,
                "description": "",
                "tags": [],
                "mode": app.mode,
                "author_name": "Fake",
            },
            dumps=dumps,
        )

    async def _read_multipart(
        self, request: web.Request
    ) -> tuple[dict[str, str], list[tuple[str | None, str, bytes]]]:
        if not request.content_type.startswith("multipart/"):
            raise _HTTPFail(400, "no_file_uploaded", "Please upload your file.")
        form: dict[str, str] = {}
        files: list[tuple[str | None, str, bytes]] = []
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            data = await part.read()
            if part.filename is not None:
                ctype = part.headers.get("Content-Type", "")
                files.append((part.filename, ctype, bytes(data)))
            elif part.name:
                form[part.name] = bytes(data).decode("utf-8", "replace")
        rec: RecordedRequest = request[_REC]
        rec.form = form
        rec.files = [f[0] or "" for f in files]
        if rec.user is None and "user" in form:
            rec.user = form["user"]
        return form, files

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "files/upload")
        if early is not None:
            return early
        form, files = await self._read_multipart(request)
        if not files:
            raise _HTTPFail(400, "no_file_uploaded", "Please upload your file.")
        if len(files) > 1:
            raise _HTTPFail(400, "too_many_files", "Only one file is allowed.")
        name, ctype, data = files[0]
        if not name:
            raise _HTTPFail(
                400, "filename_not_exists_error", "The specified filename does not exist."
            )
        if not ctype:
            raise _HTTPFail(415, "unsupported_file_type", "File type not allowed.")
        if len(data) > app.max_upload_bytes:
            raise _HTTPFail(413, "file_too_large", "File size exceeded. ")
        user = form.get("user") or "DEFAULT-USER"
        up = FakeUpload(str(uuid.uuid4()), user, name, ctype, data)
        app.uploads[up.id] = up
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        return web.json_response(
            {
                "id": up.id,
                "name": name,
                "size": len(data),
                "extension": ext,
                "mime_type": ctype,
                "created_by": str(uuid.uuid5(uuid.NAMESPACE_URL, user)),
                "created_at": int(time.time()),
                "preview_url": None,
                "source_url": f"{self.base_url}/files/{up.id}/preview",
            },
            status=201,
            dumps=dumps,
        )

    async def _audio(self, request: web.Request) -> web.StreamResponse:
        app: FakeApp = request[_APP]
        early = await self._endpoint_fault(request, "audio-to-text")
        if early is not None:
            return early
        _form, files = await self._read_multipart(request)
        if not app.speech_to_text:
            raise _HTTPFail(400, "invalid_param", "Speech to text is not enabled")
        if not files:
            raise _HTTPFail(400, "no_audio_uploaded", "Please upload your audio.")
        _name, ctype, data = files[0]
        sub = ctype.split("/", 1)[1].split(";")[0] if "/" in ctype else ""
        if not ctype.startswith("audio/") or sub not in _AUDIO_TYPES:
            raise _HTTPFail(415, "unsupported_audio_type", "Audio type not allowed.")
        if len(data) > 30 * 1024 * 1024:
            raise _HTTPFail(413, "audio_too_large", "Audio size larger than 30 mb")
        return web.json_response({"text": app.transcript}, dumps=dumps)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeDify(host=args.host, port=args.port)
    await fake.start()
    for spec in args.app or ["app-fake"]:
        key, _, mode = spec.partition(":")
        knobs: dict[str, Any] = {"chunk_size": args.chunk_size, "chunk_delay": args.chunk_delay}
        if args.answer is not None:
            knobs["answer"] = args.answer
        fake.add_app(key, mode=mode or "chat", **knobs)
    print(fake.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Dify Service API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--app", action="append", help="API key, optionally :mode (repeatable)")
    parser.add_argument("--answer", default=None, help="fixed answer text (default: echo)")
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
