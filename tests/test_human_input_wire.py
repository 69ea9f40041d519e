"""Human Input at the wire: Dify's events as typed events and forms, reasoning and agent
progress on the status line only, the client's form and re-attach calls, and the fake Dify's
own checks (Dify's OpenAPI and error bodies)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.dify import DifyClient, RetryPolicy, parse_event
from app.dify.errors import DifyServerError
from app.dify.events import (
    AgentLog,
    HumanInputFormFilled,
    HumanInputFormTimeout,
    HumanInputRequired,
    ReasoningChunk,
)
from app.pipeline.answer_fold import Answer, fold
from app.pipeline.forms import EMAIL_ONLY, HumanForm, form_from_event
from tests.fakes.dify import Fault
from tests.test_human_input import APPROVAL

REQUIRED: dict[str, Any] = {
    "event": "human_input_required",
    "task_id": "t1",
    "workflow_run_id": "r1",
    "data": {
        "form_id": "f1",
        "form_token": "tok_abc123",
        "node_id": "approval",
        "node_title": "Approval",
        "form_content": "Please review.",
        "display_in_ui": False,
        "inputs": [{"type": "paragraph", "output_variable_name": "comment", "default": None}],
        "actions": [{"id": "approve", "title": "Approve", "button_style": "primary"}],
        "resolved_default_values": {"comment": ""},
        "expiration_time": 1705494029,
    },
}


def test_a_form_event_becomes_a_form_the_adapters_can_draw() -> None:
    ev = parse_event(REQUIRED)
    assert isinstance(ev, HumanInputRequired)
    assert ev.form_token == "tok_abc123" and ev.workflow_run_id == "r1"  # noqa: S105
    form = form_from_event(ev)
    assert form.answerable and form.title == "Approval" and form.expires_at == 1705494029
    assert [(f.name, f.label, f.multiline) for f in form.fields] == [("comment", "Comment", True)]
    assert [(a.id, a.title, a.style) for a in form.actions] == [("approve", "Approve", "primary")]


def form_of(event: dict[str, Any]) -> HumanForm:
    ev = parse_event(event)
    assert isinstance(ev, HumanInputRequired)
    return form_from_event(ev)


def test_an_email_only_or_file_form_is_shown_but_not_answerable() -> None:
    email = {**REQUIRED, "data": {**REQUIRED["data"], "form_token": None}}
    form = form_of(email)
    assert not form.answerable and form.blocked == EMAIL_ONLY
    files = {
        **REQUIRED,
        "data": {
            **REQUIRED["data"],
            "inputs": [{"type": "file", "output_variable_name": "contract_scan"}],
        },
    }
    form = form_of(files)
    assert not form.answerable and "file (Contract scan)" in form.blocked


def test_malformed_form_parts_are_dropped_not_fatal() -> None:
    bad = {
        **REQUIRED,
        "data": {
            **REQUIRED["data"],
            "inputs": "nope",
            "actions": [{"title": "no id"}, "x", {"id": "ok"}],
            "expiration_time": "soon",
        },
    }
    form = form_of(bad)
    assert form.fields == () and [a.title for a in form.actions] == ["ok"]
    assert form.expires_at is None


def test_reasoning_never_becomes_answer_text_and_is_thinking_only_when_asked() -> None:
    chunk = parse_event(
        {
            "event": "reasoning_chunk",
            "task_id": "t",
            "data": {"reasoning": "Let me think about the user", "is_final": False},
        }
    )
    assert isinstance(chunk, ReasoningChunk) and chunk.reasoning.startswith("Let me")
    quiet = Answer()
    fold(chunk, quiet)
    assert quiet.text == "" and quiet.status is None and not quiet.changed
    shown = Answer(thinking_status=True)
    fold(chunk, shown)
    assert shown.text == "" and shown.status == "Thinking…" and shown.changed
    fold(
        parse_event(
            {
                "event": "reasoning_chunk",
                "task_id": "t",
                "data": {"reasoning": "", "is_final": True},
            }
        ),
        shown,
    )
    assert shown.status is None, "no stale status once the reasoning is over"


def test_agent_logs_and_node_starts_keep_the_status_line_moving() -> None:
    ans = Answer()
    log_ev = parse_event(
        {
            "event": "agent_log",
            "task_id": "t",
            "data": {"label": "ROUND 1 · web_search", "status": "start", "node_id": "agent"},
        }
    )
    assert isinstance(log_ev, AgentLog)
    fold(log_ev, ans)
    assert ans.status == "Working on it: ROUND 1 · web_search"
    fold(
        parse_event(
            {
                "event": "node_started",
                "task_id": "t",
                "workflow_run_id": "r",
                "data": {"node_id": "h", "node_type": "human-input", "title": "Manager approval"},
            }
        ),
        ans,
    )
    assert ans.status == "Waiting for an answer to Manager approval…"


def test_the_resumed_runs_form_events_are_typed() -> None:
    filled = parse_event(
        {
            "event": "human_input_form_filled",
            "task_id": "t",
            "data": {
                "node_id": "a",
                "node_title": "Approval",
                "rendered_content": "x",
                "action_id": "approve",
                "action_text": "Approve",
            },
        }
    )
    assert isinstance(filled, HumanInputFormFilled) and filled.action_text == "Approve"
    timeout = parse_event(
        {
            "event": "human_input_form_timeout",
            "task_id": "t",
            "data": {"node_id": "a", "node_title": "Approval", "expiration_time": 5},
        }
    )
    assert isinstance(timeout, HumanInputFormTimeout)
    ans = Answer()
    fold(timeout, ans)
    assert ans.notices == ["The form “Approval” expired without an answer."]


# ------------------------------------------------------------------ the client, at the wire


@pytest.fixture
def hitl(fake_dify: Any) -> Any:
    return fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12], mode="advanced-chat", human_input=dict(APPROVAL)
    )


async def paused_run(fake_dify: Any, app: Any, client: DifyClient) -> tuple[str, str]:
    run_id = token = ""
    async for ev in client.chat_stream(query="go", user="u1", conversation_id=None, inputs={}):
        if isinstance(ev, HumanInputRequired):
            run_id, token = ev.workflow_run_id or "", ev.form_token or ""
    return run_id, token


async def test_the_client_submits_once_with_the_runs_user_and_reattaches_by_get(
    fake_dify: Any, hitl: Any
) -> None:
    async with httpx.AsyncClient() as http:
        client = DifyClient(
            fake_dify.base_url,
            hitl.api_key,
            http=http,
            retry=RetryPolicy(max_retries=3, base_delay=0.01),
        )
        run_id, token = await paused_run(fake_dify, hitl, client)
        assert run_id and token
        events = client.run_events(run_id, user="u1")
        batches = events.batches()
        first = await anext(batches)
        assert first[0].event == "ping", "Dify pings once subscribed"
        hitl.fail_endpoint("form", Fault.http(503, "internal_server_error", "Boom."))
        with pytest.raises(DifyServerError):
            await client.submit_form(token, inputs={"channel": "blog"}, action="approve", user="u1")
        posts = [
            r for r in fake_dify.requests_to(f"/form/human_input/{token}") if r.method == "POST"
        ]
        assert len(posts) == 1, "a submit is never retried (it may have reached Dify)"
        await client.submit_form(
            token, inputs={"comment": "", "channel": "blog"}, action="approve", user="u1"
        )
        names = []
        async for batch in batches:
            names += [e.event for e in batch]
        assert names[0] == "workflow_started" and "human_input_form_filled" in names
        assert names[-1] == "message_end", "a chatflow answer ends at message_end"
        get = next(r for r in fake_dify.requests_to("/events") if r.api_key == hitl.api_key)
        assert get.method == "GET" and get.query == {"user": "u1"} and get.json is None
        with pytest.raises(ValueError):
            await client.submit_form("../../v1/x", inputs={}, action="a", user="u1")
    assert fake_dify.spec_violations == []


@pytest.mark.referee_refuses
async def test_the_fake_refuses_what_dify_refuses_with_difys_words(
    fake_dify: Any, hitl: Any
) -> None:
    auth = {"Authorization": f"Bearer {hitl.api_key}"}
    async with httpx.AsyncClient(base_url=fake_dify.base_url, headers=auth) as http:
        client = DifyClient(fake_dify.base_url, hitl.api_key, http=http)
        run_id, token = await paused_run(fake_dify, hitl, client)
        before = len(fake_dify.spec_violations)
        r = await http.post(f"/form/human_input/{token}", json={"inputs": {}, "action": "x"})
        assert (r.status_code, r.json()["message"]) == (400, "Arg user must be provided.")
        r = await http.post(f"/form/human_input/{token}", json={"inputs": {}, "user": "u1"})
        assert r.status_code == 400 and r.json()["code"] == "invalid_param"
        refused = fake_dify.spec_violations[before:]
        assert len(refused) == 2
        assert "'user' is a required property" in refused[0]
        assert "'action' is a required property" in refused[1]
        del fake_dify.spec_violations[before:]
        r = await http.post(
            "/form/human_input/nope", json={"inputs": {}, "action": "approve", "user": "u1"}
        )
        assert r.json() == {"code": "not_found", "message": "Form not found", "status": 404}
        r = await http.post(
            f"/form/human_input/{token}",
            json={"inputs": {"channel": "blog"}, "action": "ship", "user": "u1"},
        )
        assert r.json()["message"] == "Invalid action: ship"
        r = await http.post(
            f"/form/human_input/{token}",
            json={"inputs": {"channel": "blog"}, "action": "approve", "user": "u1"},
        )
        assert r.json()["message"] == "Missing required inputs: comment"
        r = await http.get(f"/workflow/{run_id}/events", params={"user": "someone-else"})
        assert (r.status_code, r.json()["message"]) == (404, "Workflow run not found")
        r = await http.get(f"/form/human_input/{token}")
        assert r.status_code == 200 and [a["id"] for a in r.json()["user_actions"]] == [
            "approve",
            "reject",
        ]
        assert ": " in r.text, "Dify writes this body with json.dumps defaults"
        r = await http.post(
            f"/form/human_input/{token}",
            json={"inputs": {"comment": "", "channel": "blog"}, "action": "approve", "user": "u1"},
        )
        assert (r.status_code, r.json()) == (200, {})
        r = await http.post(
            f"/form/human_input/{token}",
            json={"inputs": {"comment": "", "channel": "blog"}, "action": "approve", "user": "u2"},
        )
        assert r.status_code == 412 and r.json()["code"] == "human_input_form_submitted"
    assert fake_dify.spec_violations == []
