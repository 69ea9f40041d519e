"""Every kind of Dify app behind a chat: modes, progress lines, files both ways, conversation names.

Console messages -> real Redis -> the fake Dify on the wire (each mode's exact event stream) ->
a recorded reply.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.config.settings import DifyAppConfig, Route, RouteConfig
from app.dify.appcheck import check_routes
from app.pipeline.model import Attachment, IncomingMessage, Kind, Speaker, ThreadKey

_SEQ = itertools.count()


def new_thread(channel: str = "C1") -> ThreadKey:
    return ThreadKey("console", "W1", channel, f"{time.time():.6f}-{next(_SEQ)}")


def message(
    thread: ThreadKey,
    text: str,
    *,
    kind: Kind = Kind.MENTION,
    attachments: tuple[Attachment, ...] = (),
    channel_name: str | None = None,
    history: tuple[str, ...] = (),
    email: str | None = None,
) -> IncomingMessage:
    return IncomingMessage(
        key=thread,
        event_id=f"ev-{uuid.uuid4().hex}",
        speaker=Speaker(id="U1", name="Asker", email=email),
        text=text,
        kind=kind,
        attachments=attachments,
        channel_name=channel_name,
        history=history,
    )


def attachment(name: str, mime: str, data: bytes, *, is_audio: bool = False) -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(name=name, mime_type=mime, size=len(data), fetch=fetch, is_audio=is_audio)


class StatusReply(MemoryReply):
    """MemoryReply that also remembers every status line it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[str | None] = []

    async def update(self, text: str, *, status: str | None = None) -> None:
        self.statuses.append(status)
        await super().update(text, status=status)


async def ask(service: Any, msg: IncomingMessage, reply: MemoryReply | None = None) -> Any:
    reply = reply or MemoryReply()
    await service.bridge.handle(msg, reply, CONSOLE_LIMITS)
    return reply


def route_yaml(name: str = "r", **dify: Any) -> str:
    lines = ["routes:", f"  - name: {name}", "    edit_interval: 0.2"]
    if dify:
        lines.append("    dify:")
        lines += [f"      {k}: {v}" for k, v in dify.items()]
    return "\n".join(lines) + "\n"


def calls(fake: Any, app: Any, path: str) -> list[Any]:
    return [r for r in fake.requests_to(path) if r.api_key == app.api_key]


# ------------------------------------------------------------------------------------ modes


async def test_a_completion_app_answers_each_message_on_its_own(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="completion",
        user_input_form=[{"paragraph": {"variable": "query", "label": "Query", "required": True}}],
    )
    svc = await make_service(
        {"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml(mode="completion")
    )
    t = new_thread()
    first = await ask(svc, message(t, "write a haiku about tea"))
    second = await ask(svc, message(t, "and one about coffee"))
    assert first.final == "You said: write a haiku about tea"
    assert second.final == "You said: and one about coffee"
    sent = calls(fake_dify, app, "/completion-messages")
    assert [c.json["inputs"]["query"] for c in sent] == [
        "write a haiku about tea",
        "and one about coffee",
    ]
    # One-shot: nothing links the second message to the first.
    assert all("conversation_id" not in c.json for c in sent)
    assert await svc.store.get_conversation(t) is None
    assert second.extras.conversation_id is None and second.extras.suggested == []


async def test_a_workflow_gets_the_message_in_its_query_variable_and_answers_with_the_chosen_output(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="workflow",
        query_variable="question",
        workflow_outputs={"summary": "Holidays: 25 days a year.", "debug": "ignored"},
    )
    svc = await make_service(
        {"DIFY_API_KEY": app.api_key},
        bridge_yaml=route_yaml(
            mode="workflow", query_variable="question", output_variable="summary"
        ),
    )
    reply = await ask(svc, message(new_thread(), "how many holidays do I get?"))
    assert reply.error is None
    assert reply.final == "Holidays: 25 days a year."
    run = calls(fake_dify, app, "/workflows/run")[-1]
    assert run.json["inputs"]["question"] == "how many holidays do I get?"
    assert run.json["response_mode"] == "streaming"


async def test_a_workflow_without_a_chosen_output_streams_its_text_chunks(
    make_service: Any, fake_dify: Any
) -> None:
    answer = "Step one: open settings. Step two: pick a new password. Done."
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="workflow",
        answer=answer,
        chunk_size=5,
        chunk_delay=0.02,
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml(mode="workflow"))
    reply = await ask(svc, message(new_thread(), "how do I change my password"))
    assert reply.final == answer
    assert len(reply.updates) >= 2  # text_chunk events grew the message while it ran
    assert all(answer.startswith(u) for u in reply.updates)


async def test_a_workflow_that_streams_nothing_answers_with_all_its_outputs_as_a_list(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="workflow",
        answer="",
        workflow_outputs={"ticket": "HR-1042", "status": "opened"},
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml(mode="workflow"))
    reply = await ask(svc, message(new_thread(), "open a ticket for my laptop"))
    assert reply.final == "- **ticket**: HR-1042\n- **status**: opened"


async def test_a_chatflow_and_an_agent_app_continue_their_conversations_in_the_thread(
    make_service: Any, fake_dify: Any
) -> None:
    for mode in ("advanced-chat", "agent-chat"):
        app = fake_dify.add_app("app-" + uuid.uuid4().hex[:12], mode=mode)
        svc = await make_service({"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml(mode=mode))
        t = new_thread()
        first = await ask(svc, message(t, "hello"))
        second = await ask(svc, message(t, "and again"))
        assert second.final == "You said: and again", mode
        sent = calls(fake_dify, app, "/chat-messages")
        assert sent[1].json["conversation_id"] == first.extras.conversation_id != "", mode


async def test_start_up_check_names_a_route_whose_mode_does_not_match_the_app(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="workflow",
        user_input_form=[{"text-input": {"variable": "query", "label": "Query", "required": True}}],
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key})
    good = Route(
        RouteConfig(name="flow", dify=DifyAppConfig(mode="workflow")),
        fake_dify.base_url,
        app.api_key,
    )
    wrong = Route(RouteConfig(name="helpdesk"), fake_dify.base_url, app.api_key)
    assert await check_routes([good], svc.dify) == []
    problems = await check_routes([good, wrong], svc.dify)
    assert len(problems) == 1
    assert "'helpdesk'" in problems[0] and "'workflow'" in problems[0] and "'chat'" in problems[0]
    assert "dify.mode: workflow" in problems[0]


async def test_start_up_check_reports_an_unreachable_app_instead_of_crashing(
    make_service: Any, fake_dify: Any
) -> None:
    svc = await make_service()
    nowhere = Route(RouteConfig(name="gone"), fake_dify.base_url, "app-does-not-exist")
    problems = await check_routes([nowhere], svc.dify)
    assert len(problems) == 1 and "'gone'" in problems[0] and "cannot read" in problems[0]


# --------------------------------------------------------------------------------- progress


async def test_an_agent_shows_which_tool_it_uses_and_the_final_answer_has_no_status_line(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="agent-chat",
        chunk_size=4,
        chunk_delay=0.03,
        answer="It is sunny in Lisbon today.",
        agent_thoughts=[{"tool": "web_search", "tool_input": "{}", "observation": "sunny"}],
    )
    svc = await make_service(
        {"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml(mode="agent-chat")
    )
    reply = await ask(svc, message(new_thread(), "weather in Lisbon?"), StatusReply())
    assert "Using tool: web_search" in reply.statuses
    assert reply.final == "It is sunny in Lisbon today."
    assert reply.events[-1] == ("finish", "It is sunny in Lisbon today.")
    assert "Using tool" not in reply.final


async def test_a_chatflow_shows_its_running_node_while_it_works(
    make_service: Any, fake_dify: Any
) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="advanced-chat",
        chunk_size=4,
        chunk_delay=0.03,
        answer="Here is the plan for Q3.",
    )
    svc = await make_service(
        {"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml(mode="advanced-chat")
    )
    reply = await ask(svc, message(new_thread(), "plan Q3"), StatusReply())
    assert "Thinking…" in reply.statuses  # the LLM node started
    assert reply.final == "Here is the plan for Q3."


async def test_moderation_replaces_the_text_shown_so_far(make_service: Any, fake_dify: Any) -> None:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        chunk_size=3,
        chunk_delay=0.03,
        answer="something the moderator will not like",
        replace_with="This answer was removed by content moderation.",
    )
    svc = await make_service({"DIFY_API_KEY": app.api_key}, bridge_yaml=route_yaml())
    reply = await ask(svc, message(new_thread(), "say something bad"))
    assert any(u.startswith("something") for u in reply.updates)  # it streamed the original...
    assert reply.final == "This answer was removed by content moderation."  # ...then replaced


# ------------------------------------------------------------------------------------ files


async def test_an_attached_image_reaches_dify_as_an_uploaded_file(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    img = attachment("chart.png", "image/png", b"\x89PNG fake image bytes")
    reply = await ask(svc, message(new_thread(), "what does this chart show?", attachments=(img,)))
    assert reply.error is None
    uploads = calls(fake_dify, dify_app, "/files/upload")
    assert len(uploads) == 1 and uploads[0].files == ["chart.png"]
    (upload_id,) = dify_app.uploads
    sent = calls(fake_dify, dify_app, "/chat-messages")[-1].json["files"]
    assert sent == [{"type": "image", "transfer_method": "local_file", "upload_file_id": upload_id}]


async def test_a_file_the_app_does_not_accept_gets_a_clear_message_and_no_dify_call(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    pdf = attachment("policy.pdf", "application/pdf", b"%PDF-1.7 fake")
    # Older Dify apps offer image upload only.
    dify_app.file_upload = {"image": {"enabled": True, "number_limits": 2}}
    reply = await ask(svc, message(new_thread(), "summarise this", attachments=(pdf,)))
    assert reply.error is not None
    assert "does not accept document files" in reply.error and "policy.pdf" in reply.error
    dify_app.file_upload = {"enabled": False}
    svc.bridge.params.clear()  # the app changed in Dify: forget what it said before
    reply = await ask(svc, message(new_thread(), "summarise this", attachments=(pdf,)))
    assert reply.error is not None and "does not accept files" in reply.error
    assert calls(fake_dify, dify_app, "/chat-messages") == []
    assert calls(fake_dify, dify_app, "/files/upload") == []


async def test_too_many_or_too_large_files_are_refused_with_the_limit(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.file_upload = {
        "enabled": True,
        "allowed_file_types": ["image", "document"],
        "number_limits": 2,
    }
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    imgs = tuple(attachment(f"p{i}.png", "image/png", b"img") for i in range(3))
    reply = await ask(svc, message(new_thread(), "compare", attachments=imgs))
    assert reply.error is not None and "at most 2 file(s)" in reply.error
    big = Attachment(name="scan.png", mime_type="image/png", size=11 * 1024 * 1024)
    reply = await ask(svc, message(new_thread(), "read this", attachments=(big,)))
    assert reply.error is not None and "too large" in reply.error and "10 MB" in reply.error
    assert calls(fake_dify, dify_app, "/chat-messages") == []


async def test_an_app_that_takes_custom_extensions_gets_a_markdown_file(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.file_upload = {
        "enabled": True,
        "allowed_file_types": ["custom"],
        "allowed_file_extensions": [".md"],
        "number_limits": 1,
    }
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    notes = attachment("notes.md", "text/markdown", b"# Notes")
    reply = await ask(svc, message(new_thread(), "tidy these notes", attachments=(notes,)))
    assert reply.error is None
    # Let in by extension only: Dify wants such files typed "custom".
    assert calls(fake_dify, dify_app, "/chat-messages")[-1].json["files"][0]["type"] == "custom"
    sheet = attachment("numbers.xlsx", "application/vnd.ms-excel", b"xlsx")
    refused = await ask(svc, message(new_thread(), "sum these", attachments=(sheet,)))
    assert refused.error is not None and "numbers.xlsx" in refused.error


async def test_files_dify_produces_come_with_the_final_answer(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.message_files = [{"type": "image", "url": "https://files.example/plot.png"}]
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "draw me a plot"))
    assert [(f.url, f.type) for f in reply.extras.files] == [
        ("https://files.example/plot.png", "image")
    ]


# ------------------------------------------------------------------------ conversation tools


async def test_the_first_answer_names_the_dify_conversation_and_later_ones_do_not_ask_again(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    first = await ask(svc, message(t, "onboarding checklist for new hires"))
    second = await ask(svc, message(t, "and for contractors?"))
    assert first.extras.conversation_name == "onboarding checklist for new hires"
    assert second.extras.conversation_name is None
    assert len(calls(fake_dify, dify_app, "/conversations")) == 1  # only after the first answer
    assert calls(fake_dify, dify_app, "/chat-messages")[0].json["auto_generate_name"] is True
    record = await svc.store.get_conversation(t)
    assert record is not None and record.name == "onboarding checklist for new hires"


async def test_after_a_reset_word_the_next_question_starts_and_names_a_new_conversation(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    first = await ask(svc, message(t, "topic one"))
    reset = await ask(svc, message(t, "New topic!"))
    again = await ask(svc, message(t, "topic two"))
    assert reset.final is not None and "new conversation" in reset.final
    assert again.extras.conversation_id != first.extras.conversation_id
    assert again.extras.conversation_name == "topic two"
    assert calls(fake_dify, dify_app, "/chat-messages")[-1].json["conversation_id"] == ""
