"""The fake Dify's Human Input flow (shared/docs/dify-human-input.md), at the wire.

An ``advanced-chat`` or ``workflow`` app with the ``human_input`` knob streams its ``before``
text, then one ``human_input_required`` and a ``workflow_paused``, and the stream ends (no
``message_end``). Then:

* ``POST /v1/form/human_input/{token}`` checks the request against Dify's OpenAPI and in Dify's
  order (user, payload types, unknown token 404, already submitted 412, expired 412, invalid
  action 400, missing inputs 400, select value 400), answers ``{}`` and resumes the run
  ``resume_delay`` seconds later;
* ``GET /v1/form/human_input/{token}`` answers the form again (``user_actions``);
* ``GET /v1/workflow/{run_id}/events?user=`` relays the resumed run like Dify's pub/sub topic: a
  bare ``event: ping`` when subscribed, then only events published from then on, closing after
  ``workflow_finished`` or ``workflow_paused``; a finished run answers one ``workflow_finished``
  frame (``json.dumps`` defaults: spaces) without envelope. Wrong user or unknown run: 404.

Knob ``human_input`` (dict): ``title``, ``content`` (Markdown), ``inputs`` (Dify's field list),
``actions`` (``{id, title, button_style}``), ``before`` (text before the form), ``after`` (str or
``callable(action_id, inputs) -> str``: the rest of the answer), ``pauses`` (forms in a row,
default 1), ``email_only`` (``form_token`` null), ``expires_in`` (seconds, default 3600),
``resume_delay`` (seconds, default 0.3), ``finish_before_reply`` (the resumed run is over before
the submit is answered), ``paused_is_finished`` (a paused run counts as finished: re-attaching
to it gives its stored state only; unconfirmed in Dify, the bridge copes either way),
``reasoning`` (text sent as ``reasoning_chunk`` in the resumed run), ``timeout_text`` (what the
run says after a timeout).
Test helpers: ``app.runs``, ``app.forms`` (token -> :class:`FakeForm`), ``app.form_submissions``;
``await fake.submit_elsewhere(app, token, action)`` (as Dify's own web form would),
``await fake.expire_form(app, token)`` (the node's timeout fires: ``human_input_form_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.dify import FakeApp, FakeDify, _Gen

_IDLE_CLOSE = 300.0
_PING_EVERY = 10.0


@dataclass
class FakeForm:
    token: str
    id: str
    run: FakeRun
    node_id: str
    spec: dict[str, Any]
    expiration: int
    status: str = "waiting"  # waiting | submitted | timeout
    action: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    submitted_by: str | None = None

    def event_data(self, *, email_only: bool) -> dict[str, Any]:
        defaults: dict[str, str] = {}
        for f in self.spec.get("inputs", []):
            d = f.get("default")
            value = d.get("value") if isinstance(d, dict) else None
            defaults[f["output_variable_name"]] = value if isinstance(value, str) else ""
        return {
            "form_id": self.id,
            "form_token": None if email_only else self.token,
            "node_id": self.node_id,
            "node_title": self.spec.get("title", "Approval"),
            "form_content": self.spec.get("content", "Please review."),
            "inputs": self.spec.get("inputs", []),
            "actions": self.spec.get("actions", []),
            "display_in_ui": False,
            "resolved_default_values": defaults,
            "expiration_time": self.expiration,
        }


@dataclass
class FakeRun:
    id: str
    gen: _Gen
    step: int = 0  # forms answered so far
    status: str = "paused"  # paused | running | succeeded
    text: str = ""
    subscribers: list[asyncio.Queue[bytes | None]] = field(default_factory=list)
    finished_at: int | None = None


class HitlState:
    """Per-app Human Input state (attached to a FakeApp as ``app.hitl``)."""

    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.forms: dict[str, FakeForm] = {}
        self.submissions: list[dict[str, Any]] = []


def state(app: FakeApp) -> HitlState:
    st = getattr(app, "hitl", None)
    if st is None:
        st = HitlState()
        app.hitl = st
        app.runs = st.runs
        app.forms = st.forms
        app.form_submissions = st.submissions
    return st


def applies(app: FakeApp) -> bool:
    return bool(getattr(app, "human_input", None)) and app.mode in ("advanced-chat", "workflow")


def _spec(app: FakeApp) -> dict[str, Any]:
    spec = dict(app.human_input or {})
    spec.setdefault("title", "Approval")
    spec.setdefault("content", "Please review the draft.")
    spec.setdefault("inputs", [])
    spec.setdefault(
        "actions",
        [
            {"id": "approve", "title": "Approve", "button_style": "primary"},
            {"id": "reject", "title": "Reject", "button_style": "default"},
        ],
    )
    return spec


# ---------------------------------------------------------------------- the paused stream


def new_form(fake: FakeDify, run: FakeRun) -> FakeForm:
    app = run.gen.app
    spec = _spec(app)
    form = FakeForm(
        token=secrets.token_urlsafe(16),
        id=str(uuid.uuid4()),
        run=run,
        node_id=f"human_input_{run.step + 1}",
        spec=spec,
        expiration=int(time.time() + float(spec.get("expires_in", 3600))),
    )
    state(app).forms[form.token] = form
    return form


def pause_events(fake: FakeDify, run: FakeRun, form: FakeForm) -> list[dict[str, Any]]:
    gen = run.gen
    spec = form.spec
    started = fake._node_ev(
        gen, "node_started", form.node_id, "human-input", spec.get("title", "Approval"), None
    )
    required = gen.env("human_input_required")
    required["workflow_run_id"] = gen.workflow_run_id
    required["data"] = form.event_data(email_only=bool(spec.get("email_only")))
    paused = gen.env("workflow_paused")
    paused["workflow_run_id"] = gen.workflow_run_id
    reason = {
        "TYPE": "human_input_required",
        **{k: v for k, v in required["data"].items() if k != "display_in_ui"},
    }
    paused["data"] = {
        "workflow_run_id": gen.workflow_run_id,
        "paused_nodes": [form.node_id],
        "outputs": {},
        "reasons": [reason],
        "status": "paused",
        "created_at": gen.created_at,
        "elapsed_time": 0.4,
        "total_tokens": 0,
        "total_steps": 3,
    }
    run.status = "paused"
    return [started, required, paused]


def plan(fake: FakeDify, gen: _Gen) -> Any:
    """The first stream of a run that pauses: replaces FakeDify._plan for such apps."""
    from tests.fakes.dify import PING

    app = gen.app
    spec = _spec(app)
    before = str(spec.get("before", ""))
    gen.answer = before
    run = FakeRun(gen.workflow_run_id, gen, text=before)
    state(app).runs[run.id] = run
    yield "raw", PING
    yield "event", fake._wf_started(gen)
    yield from fake._node(gen, "start", "start", "Start", None)
    size = max(1, int(app.chunk_size))
    for i in range(0, len(before), size):
        yield "text", before[i : i + size]
    form = new_form(fake, run)
    for ev in pause_events(fake, run, form):
        yield "event", ev


# ---------------------------------------------------------------------- publishing


def _publish(run: FakeRun, obj: dict[str, Any] | bytes) -> None:
    if isinstance(obj, bytes):
        frame = obj
    else:
        frame = f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()
    for q in list(run.subscribers):
        q.put_nowait(frame)


def _end_subscribers(run: FakeRun) -> None:
    for q in list(run.subscribers):
        q.put_nowait(None)


def _text_event(fake: FakeDify, gen: _Gen, chunk: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(fake._text_event(gen, chunk).decode()[len("data: ") :])
    return event


async def resume(fake: FakeDify, form: FakeForm, *, timed_out: bool = False) -> None:
    """The worker resumes the run: its events go to whoever subscribed by then."""
    run = form.run
    gen = run.gen
    app = gen.app
    spec = form.spec
    delay = float(spec.get("resume_delay", 0.3))
    if delay:
        await asyncio.sleep(delay)
    run.status = "running"
    started = fake._wf_started(gen)
    started["data"]["reason"] = "resumption"
    _publish(run, started)
    if timed_out:
        ev = gen.env("human_input_form_timeout")
        ev["workflow_run_id"] = gen.workflow_run_id
        ev["data"] = {
            "node_id": form.node_id,
            "node_title": spec.get("title", "Approval"),
            "expiration_time": form.expiration,
        }
        rest = str(spec.get("timeout_text", "No answer came in time, so nothing was approved."))
    else:
        ev = gen.env("human_input_form_filled")
        ev["workflow_run_id"] = gen.workflow_run_id
        title = next(
            (a.get("title", "") for a in spec.get("actions", []) if a.get("id") == form.action), ""
        )
        ev["data"] = {
            "node_id": form.node_id,
            "node_title": spec.get("title", "Approval"),
            "rendered_content": spec.get("content", ""),
            "action_id": form.action,
            "action_text": title,
            "submitted_data": dict(form.inputs),
        }
        after = spec.get("after", "Thanks, carrying on.")
        rest = after(form.action, dict(form.inputs)) if callable(after) else str(after)
    _publish(run, ev)
    run.step += 1
    _publish(run, fake._node_ev(gen, "node_started", "llm_2", "llm", "LLM", None))
    reasoning = str(spec.get("reasoning", ""))
    for piece in [reasoning[i : i + 12] for i in range(0, len(reasoning), 12)] if reasoning else []:
        r = gen.env("reasoning_chunk")
        r["workflow_run_id"] = gen.workflow_run_id
        r["data"] = {"reasoning": piece, "node_id": "llm_2", "is_final": False}
        _publish(run, r)
        await asyncio.sleep(app.chunk_delay or 0)
    if reasoning:
        r = gen.env("reasoning_chunk")
        r["workflow_run_id"] = gen.workflow_run_id
        r["data"] = {"reasoning": "", "node_id": "llm_2", "is_final": True}
        _publish(run, r)
    size = max(1, int(app.chunk_size))
    pieces = [rest[i : i + size] for i in range(0, len(rest), size)]
    for piece in pieces:
        _publish(run, _text_event(fake, gen, piece))
        run.text += piece
        if gen.message is not None:
            gen.message.answer = run.text
        await asyncio.sleep(app.chunk_delay or 0)
    if not timed_out and run.step < int(spec.get("pauses", 1)):
        form2 = new_form(fake, run)
        for ev2 in pause_events(fake, run, form2):
            _publish(run, ev2)
        _end_subscribers(run)
        return
    gen.answer = run.text
    _publish(
        run, fake._node_ev(gen, "node_finished", "llm_2", "llm", "LLM", "succeeded", {"text": rest})
    )
    if app.mode == "advanced-chat":
        _publish(run, fake._message_end(gen, len(pieces)))
    _publish(run, fake._wf_finished(gen, "succeeded", None))
    run.status = "succeeded"
    run.finished_at = int(time.time())
    _end_subscribers(run)


# ---------------------------------------------------------------------- endpoints


def _refuse_off_spec(request: web.Request) -> None:
    """Dify's 400 for a request its OpenAPI refuses (the middleware's referee noted why)."""
    from tests.fakes.dify import SPEC_PROBLEM, _HTTPFail

    problem = request.get(SPEC_PROBLEM)
    if problem is not None:
        raise _HTTPFail(400, "invalid_param", problem)


def _find_form(app: FakeApp, token: str) -> FakeForm:
    from tests.fakes.dify import _HTTPFail

    form = state(app).forms.get(token)
    if form is None or form.spec.get("email_only"):
        raise _HTTPFail(404, "not_found", "Form not found")
    return form


def _ensure_active(form: FakeForm) -> None:
    from tests.fakes.dify import _HTTPFail

    if form.status == "submitted":
        raise _HTTPFail(
            412,
            "human_input_form_submitted",
            f"This form has already been submitted by another user, form_id={form.id}",
        )
    if form.status == "timeout" or time.time() >= form.expiration:
        raise _HTTPFail(
            412, "human_input_form_expired", f"This form has expired, form_id={form.id}"
        )


async def get_form(fake: FakeDify, request: web.Request) -> web.StreamResponse:
    from tests.fakes.dify import _APP

    app: FakeApp = request[_APP]
    token = request.match_info["form_token"]
    _refuse_off_spec(request)
    form = _find_form(app, token)
    _ensure_active(form)
    data = form.event_data(email_only=False)
    body = {
        "form_content": data["form_content"],
        "inputs": data["inputs"],
        "resolved_default_values": data["resolved_default_values"],
        "user_actions": data["actions"],
        "expiration_time": data["expiration_time"],
    }
    # Dify writes this one with json.dumps(..., ensure_ascii=False): spaces after : and ,
    return web.Response(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


async def submit_form(fake: FakeDify, request: web.Request) -> web.StreamResponse:
    from tests.fakes.dify import _APP, _BODY, _HTTPFail
    from tests.fakes.dify import FakeDify as _F

    app: FakeApp = request[_APP]
    token = request.match_info["form_token"]
    body = request[_BODY]
    early = await fake._endpoint_fault(request, "form")
    if early is not None:
        return early
    _F._user(body.get("user") if isinstance(body, dict) else None)
    assert isinstance(body, dict)  # _user refused any other body
    _refuse_off_spec(request)
    inputs, action = body["inputs"], body["action"]
    form = _find_form(app, token)
    _ensure_active(form)
    ids = [a.get("id") for a in form.spec.get("actions", [])]
    if action not in ids:
        raise _HTTPFail(400, "invalid_form_data", f"Invalid action: {action}")
    names = [f["output_variable_name"] for f in form.spec.get("inputs", [])]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise _HTTPFail(400, "invalid_form_data", f"Missing required inputs: {', '.join(missing)}")
    for f in form.spec.get("inputs", []):
        if f.get("type") == "select":
            value = inputs.get(f["output_variable_name"])
            options = (f.get("option_source") or {}).get("value") or []
            if not isinstance(value, str) or value not in options:
                raise _HTTPFail(
                    400,
                    "invalid_form_data",
                    f"Invalid value for select input '{f['output_variable_name']}': "
                    f"{value!r} is not an option",
                )
    form.status, form.action, form.inputs = "submitted", action, dict(inputs)
    run_ = form.run
    run_.status = "queued"  # the resume is queued for a worker: no longer paused
    form.submitted_by = body["user"]
    state(app).submissions.append(
        {"token": token, "action": action, "inputs": dict(inputs), "user": body["user"]}
    )
    if form.spec.get("finish_before_reply"):
        await resume(fake, form)  # a fast worker: the run is over before anyone re-attaches
    else:
        fake._tasks.add(asyncio.create_task(resume(fake, form)))
    return web.json_response({})


async def run_events(fake: FakeDify, request: web.Request) -> web.StreamResponse:
    from tests.fakes.dify import _APP, PING, _HTTPFail
    from tests.fakes.dify import FakeDify as _F

    app: FakeApp = request[_APP]
    run_id = request.match_info["workflow_run_id"]
    if app.mode not in ("advanced-chat", "workflow"):
        raise _HTTPFail(
            400, "not_workflow_app", "Please check if your app mode matches the right API route."
        )
    user = _F._user(request.query.get("user"))
    _refuse_off_spec(request)
    run = state(app).runs.get(run_id)
    if run is None or run.gen.user != user:
        raise _HTTPFail(404, "not_found", "Workflow run not found")
    paused_finished = run.status == "paused" and _spec(app).get("paused_is_finished")
    if run.finished_at is not None or paused_finished:
        ev = fake._wf_finished(run.gen, "paused" if paused_finished else "succeeded", None)
        ev = {
            "event": "workflow_finished",
            "task_id": run.id,
            "workflow_run_id": run.id,
            "data": ev["data"],
        }
        return web.Response(text=f"data: {json.dumps(ev)}\n\n", content_type="text/event-stream")
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    run.subscribers.append(queue)
    try:
        await resp.write(PING)
        idle_since = time.monotonic()
        while not fake._closing:
            try:
                frame = await asyncio.wait_for(queue.get(), _PING_EVERY)
            except TimeoutError:
                if time.monotonic() - idle_since > _IDLE_CLOSE:
                    break
                await resp.write(PING)
                continue
            if frame is None:
                break
            idle_since = time.monotonic()
            await resp.write(frame)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ValueError):
            run.subscribers.remove(queue)
    return resp


def install(fake: FakeDify, router: web.UrlDispatcher) -> None:
    async def _get(request: web.Request) -> web.StreamResponse:
        return await get_form(fake, request)

    async def _post(request: web.Request) -> web.StreamResponse:
        return await submit_form(fake, request)

    async def _events(request: web.Request) -> web.StreamResponse:
        return await run_events(fake, request)

    router.add_get("/v1/form/human_input/{form_token}", _get)
    router.add_post("/v1/form/human_input/{form_token}", _post)
    router.add_get("/v1/workflow/{workflow_run_id}/events", _events)


# ---------------------------------------------------------------------- test helpers


async def submit_elsewhere(fake: FakeDify, app: FakeApp, token: str, action: str) -> None:
    """Someone answers the form outside the bridge (Dify's own web form)."""
    form = state(app).forms[token]
    form.status, form.action, form.submitted_by = "submitted", action, "web-app-user"
    fake._tasks.add(asyncio.create_task(resume(fake, form)))


async def expire_form(fake: FakeDify, app: FakeApp, token: str) -> None:
    """The form's timeout fires: it is closed and the run takes its timeout branch."""
    form = state(app).forms[token]
    form.status = "timeout"
    form.expiration = int(time.time()) - 1
    fake._tasks.add(asyncio.create_task(resume(fake, form, timed_out=True)))
