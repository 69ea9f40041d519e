"""Route inputs meet the Dify app's form: checked before the call, reported at start."""

from __future__ import annotations

import uuid
from typing import Any

from app.config.settings import DifyAppConfig, Route, RouteConfig
from app.dify.appcheck import check_routes
from tests.fakes.dify import Fault
from tests.test_app_modes import ask, calls, message, new_thread


def text_input(
    var: str, *, required: bool = False, max_length: int | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"variable": var, "label": var.title(), "required": required}
    if max_length:
        spec["max_length"] = max_length
    return {"text-input": spec}


def select(var: str, options: list[str], *, required: bool = False) -> dict[str, Any]:
    return {
        "select": {"variable": var, "label": var.title(), "required": required, "options": options}
    }


def inputs_yaml(inputs: dict[str, str], *, mode: str = "chat", extra: str = "") -> str:
    lines = [
        "routes:",
        "  - name: team",
        "    edit_interval: 0.2",
        "    dify:",
        f"      mode: {mode}",
        "    inputs:",
    ]
    lines += [f"      {k}: {v}" for k, v in inputs.items()]
    return "\n".join(lines) + "\n" + extra


async def test_mapped_inputs_that_fit_the_form_reach_dify_on_every_turn(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [
        select("team", ["sales", "support"], required=True),
        text_input("where", max_length=40),
    ]
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key},
        bridge_yaml=inputs_yaml({"team": "channel_name", "where": "platform"}),
    )
    t = new_thread()
    first = await ask(svc, message(t, "who is on call?", channel_name="support"))
    second = await ask(svc, message(t, "and tomorrow?", channel_name="support"))
    assert first.error is None and second.error is None
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert [c.json["inputs"] for c in sent] == [{"team": "support", "where": "console"}] * 2
    # The form is read once and kept for a few minutes, not fetched per message.
    assert len(calls(fake_dify, dify_app, "/parameters")) == 1


async def test_a_value_outside_the_select_options_gets_a_clear_message_instead_of_a_dify_error(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [select("team", ["sales", "support"], required=True)]
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=inputs_yaml({"team": "channel_name"})
    )
    reply = await ask(svc, message(new_thread(), "who is on call?", channel_name="random"))
    assert reply.error is not None
    assert "“Team” must be one of sales, support" in reply.error and "admin" in reply.error
    assert calls(fake_dify, dify_app, "/chat-messages") == []


async def test_a_value_longer_than_the_form_allows_is_refused_before_the_call(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [text_input("channel", max_length=10)]
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=inputs_yaml({"channel": "channel_name"})
    )
    reply = await ask(svc, message(new_thread(), "hello", channel_name="engineering-announcements"))
    assert reply.error is not None and "at most 10" in reply.error and "“Channel”" in reply.error
    assert calls(fake_dify, dify_app, "/chat-messages") == []


async def test_a_required_email_the_platform_did_not_share_is_explained(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [text_input("email", required=True)]
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=inputs_yaml({"email": "speaker_email"})
    )
    reply = await ask(svc, message(new_thread(), "my leave balance?", email=None))
    assert reply.error is not None and "needs “Email”" in reply.error
    ok = await ask(svc, message(new_thread(), "my leave balance?", email="ana@example.com"))
    assert ok.error is None
    assert calls(fake_dify, dify_app, "/chat-messages")[-1].json["inputs"] == {
        "email": "ana@example.com"
    }


async def test_email_is_sent_only_when_the_route_maps_it(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=inputs_yaml({"where": "platform"})
    )
    await ask(svc, message(new_thread(), "hi", email="ana@example.com"))
    body = calls(fake_dify, dify_app, "/chat-messages")[-1].json
    assert "ana@example.com" not in str(body)


async def test_long_thread_history_is_cut_to_its_newest_part_to_fit_the_form(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [
        {
            "paragraph": {
                "variable": "context",
                "label": "Context",
                "required": False,
                "max_length": 30,
            }
        }
    ]
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=inputs_yaml({"context": "history"})
    )
    history = ("first we talked about lunch", "then about the offsite", "latest: the budget")
    reply = await ask(svc, message(new_thread(), "summarise", history=history))
    assert reply.error is None
    sent = calls(fake_dify, dify_app, "/chat-messages")[-1].json["inputs"]["context"]
    assert len(sent) == 30 and sent.endswith("latest: the budget")


async def test_a_workflow_question_longer_than_its_query_input_allows_is_refused_politely(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="workflow",
        user_input_form=[text_input("query", required=True, max_length=20)],
    )
    svc = await make_service(
        {"DIFY_API_KEY": app.api_key},
        bridge_yaml=inputs_yaml({}, mode="workflow").replace("    inputs:\n", ""),
    )
    reply = await ask(svc, message(new_thread(), "a question that is clearly longer than twenty"))
    assert reply.error is not None and "too long for this assistant" in reply.error
    assert calls(fake_dify, app, "/workflows/run") == []
    short = await ask(svc, message(new_thread(), "short one"))
    assert short.final == "You said: short one"


async def test_required_inputs_the_route_leaves_unmapped_are_reported_at_start(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [text_input("department", required=True), text_input("nickname")]
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    unmapped = Route(RouteConfig(name="hr"), fake_dify.base_url, dify_app.api_key)
    mapped = Route(
        RouteConfig(name="hr2", inputs={"department": "channel_name"}),
        fake_dify.base_url,
        dify_app.api_key,
    )
    problems = await check_routes([unmapped, mapped], svc.dify)
    assert len(problems) == 1
    assert problems[0].startswith("route 'hr':") and "department" in problems[0]
    assert "nickname" not in problems[0]  # optional inputs are fine unmapped


async def test_a_workflow_route_gets_its_query_variable_counted_as_mapped_at_start(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="workflow",
        user_input_form=[text_input("question", required=True)],
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key})
    route = Route(
        RouteConfig(name="wf", dify=DifyAppConfig(mode="workflow", query_variable="question")),
        fake_dify.base_url,
        app.api_key,
    )
    assert await check_routes([route], svc.dify) == []


async def test_when_dify_cannot_list_the_form_the_question_still_goes_through(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    for _ in range(3):  # the first try and both retries
        dify_app.fail_endpoint("parameters", Fault.http(503, "unavailable", "Service Unavailable"))
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=inputs_yaml({"team": "channel_name"})
    )
    reply = await ask(svc, message(new_thread(), "who is on call?", channel_name="support"))
    assert reply.error is None and reply.final == "You said: who is on call?"
    assert len(calls(fake_dify, dify_app, "/parameters")) == 3
    assert calls(fake_dify, dify_app, "/chat-messages")[-1].json["inputs"] == {"team": "support"}
