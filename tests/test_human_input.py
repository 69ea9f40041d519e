"""Dify Human Input (approval forms) through the core and the console, with the fake Dify at the
wire: the paused run shows its form, a choice resumes it, and every other outcome is plain words.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from typing import Any

import pytest

from adapters.console import CONSOLE_LIMITS, MemoryReply, TerminalReply, answer_forms
from app.pipeline.forms import FormAnswer, Outcome, Responder
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey

APPROVAL: dict[str, Any] = {
    "title": "Publish approval",
    "content": "Please review the **draft** before it goes out.\n\n{{#$output.comment#}}",
    "inputs": [
        {
            "type": "paragraph",
            "output_variable_name": "comment",
            "default": {"type": "constant", "selector": [], "value": "Looks fine"},
        },
        {
            "type": "select",
            "output_variable_name": "channel",
            "option_source": {"type": "constant", "selector": [], "value": ["blog", "newsletter"]},
        },
    ],
    "before": "Here is the draft summary. ",
    "after": lambda action, inputs: f"Action {action} with {inputs.get('channel')}: published.",
}

_n = 0


def thread() -> ThreadKey:
    global _n
    _n += 1
    return ThreadKey("console", "W1", "C1", f"hi-{time.time():.6f}-{_n}")


def message(t: ThreadKey, text: str, speaker: str = "U1") -> IncomingMessage:
    return IncomingMessage(
        key=t,
        event_id=f"ev-{uuid.uuid4().hex}",
        speaker=Speaker(id=speaker, name=f"User {speaker}"),
        text=text,
        kind=Kind.MENTION,
    )


def route_yaml(mode: str = "advanced-chat", extra: str = "") -> str:
    return (
        f"routes:\n  - name: approvals\n    edit_interval: 0.2\n    dify: {{mode: {mode}}}\n{extra}"
    )


@pytest.fixture
def hitl_app(fake_dify: Any) -> Any:
    return fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="advanced-chat",
        human_input=dict(APPROVAL),
        chunk_size=6,
    )


async def paused(svc: Any, t: ThreadKey, text: str = "publish the post") -> MemoryReply:
    reply = MemoryReply()
    await svc.bridge.handle(message(t, text), reply, CONSOLE_LIMITS)
    return reply


async def click(
    svc: Any, t: ThreadKey, key: str, action: str, values: dict[str, str], who: str = "U2"
) -> tuple[Any, MemoryReply]:
    nxt = MemoryReply()
    result = await svc.bridge.answer_form(
        t, FormAnswer(key, action, values, Responder(who, f"User {who}")), nxt, CONSOLE_LIMITS
    )
    return result, nxt


async def test_a_paused_run_shows_its_form_and_a_choice_streams_the_rest_of_the_answer(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    first = await paused(svc, t)
    assert first.error is None
    assert first.final == "Here is the draft summary. "
    (form,) = first.forms
    assert form.title == "Publish approval"
    assert "**draft**" in form.content and "{{#" not in form.content
    assert [(f.name, f.kind, f.default) for f in form.fields] == [
        ("comment", "paragraph", "Looks fine"),
        ("channel", "select", ""),
    ]
    assert form.fields[1].options == ("blog", "newsletter")
    assert [a.title for a in form.actions] == ["Approve", "Reject"]
    assert form.answerable and form.expires_at and form.expires_at > time.time()

    result, nxt = await click(
        svc, t, form.key, "approve", {"comment": "ship it", "channel": "newsletter"}
    )
    assert result.outcome is Outcome.ACCEPTED
    assert result.message == "User U2 chose “Approve” (Comment: ship it; Channel: newsletter)."
    await asyncio.wait_for(nxt.done.wait(), 10)
    assert nxt.error is None
    assert nxt.final == "Action approve with newsletter: published."
    assert nxt.extras is not None and nxt.extras.dify_message_id  # feedback buttons work
    (sub,) = hitl_app.form_submissions
    (chat,) = [r for r in fake_dify.requests_to("/chat-messages") if r.api_key == hitl_app.api_key]
    assert sub["user"] == chat.json["user"] == t.dify_user(), "the run's own Dify user"
    assert sub["inputs"] == {"comment": "ship it", "channel": "newsletter"}
    events = [r for r in fake_dify.requests_to("/events") if r.api_key == hitl_app.api_key]
    assert events and events[0].query["user"] == t.dify_user()
    assert fake_dify.spec_violations == []


async def test_a_second_click_hears_who_decided_and_sends_nothing_to_dify(
    make_service: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    values = {"comment": "", "channel": "blog"}
    results = await asyncio.gather(
        click(svc, t, form.key, "approve", values, who="U2"),
        click(svc, t, form.key, "reject", values, who="U3"),
    )
    outcomes = sorted(r.outcome.value for r, _ in results)
    assert outcomes == ["accepted", "already_decided"]
    (winner_result, winner), (loser_result, _) = sorted(
        results, key=lambda r: r[0].outcome is not Outcome.ACCEPTED
    )
    assert loser_result.message.startswith(f"Already decided by {winner_result.decided_by}")
    assert len(hitl_app.form_submissions) == 1
    await asyncio.wait_for(winner.done.wait(), 10)
    late, _ = await click(svc, t, form.key, "approve", values, who="U4")
    assert late.outcome is Outcome.ALREADY_DECIDED
    assert (
        late.message == f"Already decided by {winner_result.decided_by} "
        f"(“{winner_result.action_title}”)."
    )
    assert len(hitl_app.form_submissions) == 1


async def test_a_form_answered_in_dify_itself_is_reported_and_not_sent_again(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    (token,) = hitl_app.forms
    await fake_dify.submit_elsewhere(hitl_app, token, "approve")
    result, nxt = await click(svc, t, form.key, "reject", {"channel": "blog"})
    assert result.outcome is Outcome.DECIDED_ELSEWHERE
    assert "already answered elsewhere" in result.message
    assert hitl_app.form_submissions == []
    assert nxt.events == [], "no reply is started for a refused click"
    again, _ = await click(svc, t, form.key, "reject", {"channel": "blog"})
    assert again.outcome is Outcome.DECIDED_ELSEWHERE


async def test_an_expired_form_says_so_whether_we_or_dify_notice_first(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    (token,) = hitl_app.forms
    hitl_app.forms[token].expiration = int(time.time()) - 1  # Dify says 412 expired
    result, _ = await click(svc, t, form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.EXPIRED
    assert result.message == "This form expired, so it can no longer be answered."

    hitl_app.human_input = {**APPROVAL, "expires_in": -5}  # already past: no Dify call at all
    t2 = thread()
    (old,) = (await paused(svc, t2)).forms
    calls = len(fake_dify.requests_to("/form/human_input/" + list(hitl_app.forms)[-1]))
    result2, _ = await click(svc, t2, old.key, "approve", {"channel": "blog"})
    assert result2.outcome is Outcome.EXPIRED
    assert len(fake_dify.requests_to("/form/human_input/" + list(hitl_app.forms)[-1])) == calls


async def test_invalid_input_names_the_field_and_leaves_the_form_open(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, _ = await click(svc, t, form.key, "approve", {"comment": "x"})
    assert result.outcome is Outcome.INVALID
    assert result.message == "Please choose a value for “Channel”."
    result, _ = await click(svc, t, form.key, "approve", {"channel": "radio"})
    assert result.message == "“radio” is not one of the choices for “Channel”."
    assert hitl_app.form_submissions == []
    # Dify's own check (a field the form gained since it was shown) names the field too.
    (token,) = hitl_app.forms
    hitl_app.forms[token].spec = {
        **hitl_app.forms[token].spec,
        "inputs": [*APPROVAL["inputs"], {"type": "paragraph", "output_variable_name": "ticket"}],
    }
    result, _ = await click(svc, t, form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.INVALID
    assert result.message == "Dify did not accept this answer: Missing required inputs: ticket"
    hitl_app.forms[token].spec = {**hitl_app.forms[token].spec, "inputs": APPROVAL["inputs"]}
    result, nxt = await click(svc, t, form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.ACCEPTED, "a refused answer left the form open"
    await asyncio.wait_for(nxt.done.wait(), 10)


async def test_an_email_only_form_says_the_run_waits_for_an_email_approval(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="advanced-chat",
        human_input={**APPROVAL, "email_only": True},
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml())
    reply = await paused(svc, thread())
    (form,) = reply.forms
    assert not form.answerable
    assert "Dify sends by e-mail" in form.blocked and "cannot be answered here" in form.blocked


async def test_only_the_asker_may_answer_when_the_route_says_so(
    make_service: Any, hitl_app: Any
) -> None:
    yaml = route_yaml(extra="    human_input: {answer_by: asker, allowed: [U9]}\n")
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=yaml)
    t = thread()
    (form,) = (await paused(svc, t)).forms  # asked by U1
    result, nxt = await click(svc, t, form.key, "approve", {"channel": "blog"}, who="U2")
    assert result.outcome is Outcome.NOT_ALLOWED
    assert result.message == "Only the person who asked the question can answer this form."
    assert hitl_app.form_submissions == []
    result, nxt = await click(svc, t, form.key, "approve", {"channel": "blog"}, who="U9")
    assert result.outcome is Outcome.ACCEPTED, "listed people may answer as well"
    await asyncio.wait_for(nxt.done.wait(), 10)


async def test_a_listed_route_refuses_everyone_else(make_service: Any, hitl_app: Any) -> None:
    yaml = route_yaml(extra="    human_input: {answer_by: listed, allowed: [U7]}\n")
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=yaml)
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, _ = await click(svc, t, form.key, "approve", {"channel": "blog"}, who="U1")
    assert result.outcome is Outcome.NOT_ALLOWED
    assert "not one of the people" in result.message


async def test_a_tampered_or_foreign_form_key_is_unknown(make_service: Any, hitl_app: Any) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, _ = await click(svc, t, "no-such-key", "approve", {"channel": "blog"})
    assert result.outcome is Outcome.UNKNOWN
    result, _ = await click(svc, thread(), form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.UNKNOWN, "a form is answered only in its own thread"
    assert hitl_app.form_submissions == []


async def test_a_run_that_pauses_twice_shows_the_second_form_after_the_first(
    make_service: Any, hitl_app: Any
) -> None:
    hitl_app.human_input = {**APPROVAL, "pauses": 2, "after": "Step done. "}
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, nxt = await click(svc, t, form.key, "approve", {"channel": "blog"})
    await asyncio.wait_for(nxt.done.wait(), 10)
    assert nxt.final == "Step done. "
    (second,) = nxt.forms
    assert second.key != form.key
    result, last = await click(svc, t, second.key, "reject", {"channel": "blog"})
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.wait_for(last.done.wait(), 10)
    assert last.final == "Step done. " and not last.forms


async def test_a_run_finished_before_we_reattached_is_read_from_dify(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    # Dify relays live events only: a run over before we listen gives one workflow_finished.
    hitl_app.human_input = {**APPROVAL, "resume_delay": 0, "finish_before_reply": True}
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, nxt = await click(svc, t, form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.wait_for(nxt.done.wait(), 10)
    assert nxt.final == "Action approve with blog: published.", nxt.events


async def test_a_dify_that_treats_a_paused_run_as_finished_is_listened_to_again(
    make_service: Any, hitl_app: Any
) -> None:
    hitl_app.human_input = {**APPROVAL, "paused_is_finished": True}
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, nxt = await click(svc, t, form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.wait_for(nxt.done.wait(), 10)
    assert nxt.final == "Action approve with blog: published."


async def test_a_form_whose_timeout_fired_in_dify_is_expired(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    (token,) = hitl_app.forms
    await fake_dify.expire_form(hitl_app, token)
    result, _ = await click(svc, t, form.key, "approve", {"channel": "blog"})
    assert result.outcome is Outcome.EXPIRED
    assert hitl_app.form_submissions == []


async def test_reasoning_is_never_answer_text_and_shows_as_thinking_when_asked(
    make_service: Any, fake_dify: Any, hitl_app: Any
) -> None:
    hitl_app.human_input = {**APPROVAL, "reasoning": "The user approved; now I publish it."}
    hitl_app.chunk_delay = 0.05
    yaml = route_yaml(extra="    thinking_status: true\n")
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=yaml)
    t = thread()
    (form,) = (await paused(svc, t)).forms
    statuses: list[str | None] = []

    class Watching(MemoryReply):
        async def update(self, text: str, *, status: str | None = None) -> None:
            statuses.append(status)
            await super().update(text, status=status)

    nxt = Watching()
    result = await svc.bridge.answer_form(
        t,
        FormAnswer(form.key, "approve", {"channel": "blog"}, Responder("U2")),
        nxt,
        CONSOLE_LIMITS,
    )
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.wait_for(nxt.done.wait(), 10)
    assert nxt.final == "Action approve with blog: published."
    assert "Thinking…" in statuses
    assert all("publish it" not in u for u in nxt.updates), "reasoning never shows as text"


async def test_the_console_prompts_for_the_fields_and_the_action(
    make_service: Any, hitl_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    out = io.StringIO()
    reply = TerminalReply(out)
    await svc.bridge.handle(message(t, "publish the post"), reply, CONSOLE_LIMITS)
    typed = iter(["", "podcast", "1", "", "newsletter", "2"])
    prompts: list[str] = []

    async def read(prompt: str) -> str:
        prompts.append(prompt)
        return next(typed)

    await asyncio.wait_for(answer_forms(svc.bridge, t, reply, read, out=out), 15)
    text = out.getvalue()
    assert "== Publish approval ==" in text and "**draft**" in text
    assert prompts[0] == "Comment (default: Looks fine): "
    assert prompts[1] == "Channel [blog/newsletter]: "
    assert prompts[2] == "Choose 1=Approve, 2=Reject: "
    assert "“podcast” is not one of the choices for “Channel”." in text, "asked again"
    assert prompts[-1] == "Choose 1=Approve, 2=Reject: "
    assert "console-user chose “Reject” (Comment: Looks fine; Channel: newsletter)." in text
    assert "bot> Action reject with newsletter: published." in text


async def test_a_workflow_app_pauses_and_resumes_the_same_way(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12], mode="workflow", human_input=dict(APPROVAL)
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml("workflow"))
    t = thread()
    first = await paused(svc, t)
    assert first.final == "Here is the draft summary. "
    (form,) = first.forms
    result, nxt = await click(svc, t, form.key, "reject", {"channel": "blog"})
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.wait_for(nxt.done.wait(), 10)
    assert nxt.final == "Action reject with blog: published."
    assert app.form_submissions[0]["user"] == t.dify_user()


async def test_form_values_pass_the_routes_redaction(make_service: Any, hitl_app: Any) -> None:
    svc = await make_service({"DIFY_API_KEY": hitl_app.api_key}, bridge_yaml=route_yaml())
    t = thread()
    (form,) = (await paused(svc, t)).forms
    result, nxt = await click(
        svc, t, form.key, "approve", {"comment": "mail ann.lee@example.com", "channel": "blog"}
    )
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.wait_for(nxt.done.wait(), 10)
    sent = hitl_app.form_submissions[0]["inputs"]["comment"]
    assert "ann.lee@example.com" not in sent and sent.startswith("mail ")
