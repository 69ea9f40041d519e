"""Every kind of Dify app behind Teams: workflow, completion and agent apps, moderation, voice
clips, conversation names, reset words and the "New topic" button.

Real Bot Framework activities (signed JWTs) go to ``/api/messages``; the fake Bot Connector
records what the bot showed in Teams, the fake Dify what reached Dify; Redis is real.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from adapters.teams import compose
from app.pipeline.model import ReplyExtras
from tests.fakes.bot_connector import TENANT_ID, Call, FakeBotConnector

CLIP = b"ID3 fake mp3 bytes of a short voice clip"


pytestmark = pytest.mark.usefixtures("teams_env")


def route_yaml(*, reset_button: bool = True, **dify: str) -> str:
    lines = ["routes:", "  - name: teams-kinds", f"    reset_button: {str(reset_button).lower()}"]
    if dify:
        lines.append("    dify:")
        lines += [f"      {k}: {v}" for k, v in dify.items()]
    return "\n".join(lines) + "\n"


async def teams_bot(
    make_service: Any,
    connector: FakeBotConnector,
    app: Any,
    *,
    reset_button: bool = True,
    **dify: str,
) -> Any:
    """dify-bridge with the Teams adapter, one route to ``app`` (``dify`` = the route's keys)."""
    env = {**connector.service_env(), "DIFY_API_KEY": app.api_key}
    yaml = route_yaml(reset_button=reset_button, **dify)
    return await make_service(env, bridge_yaml=yaml, adapters=["teams"])


def new_app(fake_dify: Any, mode: str, **knobs: Any) -> Any:
    return fake_dify.add_app("app-" + uuid.uuid4().hex[:12], mode=mode, **knobs)


def calls(fake_dify: Any, app: Any, path: str) -> list[Any]:
    return [r for r in fake_dify.requests_to(path) if r.api_key == app.api_key]


def is_answer(c: Call) -> bool:
    """A finished answer: the message carrying the "AI generated" label."""
    entities = c.body.get("entities") or []
    return c.type == "message" and any(
        "AIGeneratedContent" in (e.get("additionalType") or []) for e in entities
    )


def answers(connector: FakeBotConnector, conversation_id: str) -> list[Call]:
    return [c for c in connector.sent() if c.conversation_id == conversation_id and is_answer(c)]


async def answer_number(connector: FakeBotConnector, conversation_id: str, n: int) -> Call:
    """Wait for the ``n``-th finished answer (1-based) in a conversation and return it."""
    await connector.wait_for(lambda f: len(answers(f, conversation_id)) >= n, within=10)
    return answers(connector, conversation_id)[n - 1]


async def ask_in_channel(
    bot: Any, connector: FakeBotConnector, text: str
) -> tuple[dict[str, Any], str, Call]:
    """Mention the bot in a new channel thread: (the root activity, its conversation id, the
    finished first answer)."""
    root = connector.channel_mention(text)
    await connector.deliver(bot.base_url, root)
    conv = root["conversation"]["id"]
    return root, conv, await answer_number(connector, conv, 1)


def new_topic_button(c: Call) -> dict[str, Any] | None:
    """The "New topic" Action.Submit on a message's Adaptive Card, if it has one."""
    for attachment in c.body.get("attachments") or []:
        content = attachment.get("content") or {}
        for element in [content, *(content.get("body") or [])]:
            for action in element.get("actions") or []:
                if action.get("type") == "Action.Submit" and action.get("title") == "New topic":
                    return dict(action)
    return None


def personal_chat() -> str:
    """A 1:1 chat of its own, so answers from earlier tests never mix in."""
    return f"a:1{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------ app modes


async def test_a_workflow_route_answers_a_mention_with_its_chosen_output_in_the_channel_thread(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = new_app(
        fake_dify,
        "workflow",
        query_variable="question",
        workflow_outputs={"summary": "Holidays: 25 days a year.", "debug": "node trace"},
    )
    bot = await teams_bot(
        make_service,
        connector,
        app,
        mode="workflow",
        query_variable="question",
        output_variable="summary",
    )
    activity = connector.channel_mention("How many holidays do I get?")
    await connector.deliver(bot.base_url, activity)
    conv = activity["conversation"]["id"]
    final = await answer_number(connector, conv, 1)
    # The message text went into the configured input; nothing went to the chat API.
    (run,) = calls(fake_dify, app, "/workflows/run")
    assert run.json["inputs"]["question"] == "How many holidays do I get?"
    assert calls(fake_dify, app, "/chat-messages") == []
    # The chosen output is the answer, in the reply chain of the mention.
    assert final.text == "Holidays: 25 days a year."
    assert connector.visible_text(conv, str(final.activity_id)) == "Holidays: 25 days a year."
    assert "node trace" not in final.text
    assert connector.sent("POST")[0].activity_id == activity["id"]
    # A workflow run has no conversation to leave: no "New topic" button.
    assert new_topic_button(final) is None


async def test_a_completion_route_answers_every_message_in_a_thread_on_its_own(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = new_app(
        fake_dify,
        "completion",
        user_input_form=[{"paragraph": {"variable": "query", "label": "Query", "required": True}}],
    )
    bot = await teams_bot(make_service, connector, app, mode="completion")
    root, conv, first = await ask_in_channel(bot, connector, "Write a haiku about tea")
    await connector.deliver(bot.base_url, connector.channel_reply(root["id"], "and about coffee"))
    second = await answer_number(connector, conv, 2)
    sent = calls(fake_dify, app, "/completion-messages")
    assert [c.json["inputs"]["query"] for c in sent] == [
        "Write a haiku about tea",
        "and about coffee",
    ]
    # One-shot: the follow-up carries no conversation of the first.
    assert all("conversation_id" not in c.json for c in sent)
    assert "You said: Write a haiku about tea" in first.text
    assert "You said: and about coffee" in second.text
    assert "Dify conversation:" not in first.text
    assert new_topic_button(first) is None and new_topic_button(second) is None


async def test_an_agent_answer_shows_the_tool_it_uses_while_it_works_and_not_in_the_final_message(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    answer = "It is sunny in Lisbon today."
    app = new_app(
        fake_dify,
        "agent-chat",
        answer=answer,
        chunk_size=4,
        chunk_delay=0.05,
        agent_thoughts=[
            {"tool": "web_search", "tool_input": '{"q": "Lisbon"}', "observation": "sunny, 24 C"}
        ],
    )
    bot = await teams_bot(make_service, connector, app, mode="agent-chat")
    activity = connector.channel_mention("Weather in Lisbon?")
    await connector.deliver(bot.base_url, activity)
    conv = activity["conversation"]["id"]
    final = await answer_number(connector, conv, 1)
    interim = [c for c in connector.sent() if c.conversation_id == conv and not is_answer(c)]
    assert any("Using tool: web_search" in c.text for c in interim), connector.describe()
    assert final.text.startswith(answer)
    assert "Using tool" not in final.text
    assert "Using tool" not in connector.visible_text(conv, str(final.activity_id))
    assert calls(fake_dify, app, "/chat-messages")[0].json["query"] == "Weather in Lisbon?"


async def test_moderation_replaces_the_text_already_shown_in_the_channel(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    replacement = "This answer was removed by content moderation."
    app = new_app(
        fake_dify,
        "chat",
        answer="something the moderator will not like",
        chunk_size=3,
        chunk_delay=0.03,
        replace_with=replacement,
    )
    bot = await teams_bot(make_service, connector, app)
    activity = connector.channel_mention("Say something bad")
    await connector.deliver(bot.base_url, activity)
    conv = activity["conversation"]["id"]
    final = await answer_number(connector, conv, 1)
    shown = [c.text for c in connector.sent() if c.conversation_id == conv and not is_answer(c)]
    assert any(t.startswith("som") for t in shown), connector.describe()  # streamed at first
    assert final.text.startswith(replacement)
    visible = connector.visible_text(conv, str(final.activity_id))
    assert visible.startswith(replacement) and "moderator" not in visible


# ---------------------------------------------------------------------------------- voice


async def test_a_voice_clip_in_a_personal_chat_is_transcribed_and_the_answer_quotes_it(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    spoken = "what is our holiday policy for the winter break and the days around new year"
    dify_app.speech_to_text = True
    dify_app.transcript = spoken
    bot = await teams_bot(make_service, connector, dify_app)
    chat = personal_chat()
    activity = connector.with_audio(connector.personal("", chat=chat), CLIP)
    await connector.deliver(bot.base_url, activity)
    final = await answer_number(connector, chat, 1)
    # The clip was fetched from the Bot Connector with the bot's own token...
    ((path, auth),) = connector.downloads
    assert path.startswith("/v3/attachments/") and auth is not None
    assert auth.removeprefix("Bearer ") in connector.issued_tokens
    # ...and sent to Dify's speech to text; the transcript is the question, not a file.
    (audio,) = calls(fake_dify, dify_app, "/audio-to-text")
    assert audio.files == ["voice.mp3"]
    assert [c.json["query"] for c in calls(fake_dify, dify_app, "/chat-messages")] == [spoken]
    assert calls(fake_dify, dify_app, "/files/upload") == []
    assert f"You said: {spoken}" in final.text
    assert '🎙️ "what is our holiday policy' in final.text  # the short quote under the answer


async def test_an_audio_file_sent_alone_in_a_personal_chat_is_transcribed_not_uploaded(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.speech_to_text = True
    dify_app.transcript = "book a meeting room for friday"
    bot = await teams_bot(make_service, connector, dify_app)
    chat = personal_chat()
    activity = connector.personal_file("", "memo.m4a", CLIP)
    activity["conversation"]["id"] = chat
    await connector.deliver(bot.base_url, activity)
    final = await answer_number(connector, chat, 1)
    assert connector.downloads == [("/sharepoint/memo.m4a", None)]
    (audio,) = calls(fake_dify, dify_app, "/audio-to-text")
    assert audio.files == ["memo.m4a"]
    assert calls(fake_dify, dify_app, "/files/upload") == []
    assert "You said: book a meeting room for friday" in final.text


async def test_a_voice_clip_for_an_app_without_speech_to_text_gets_a_readable_message(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    bot = await teams_bot(make_service, connector, dify_app)  # speech to text is off
    chat = personal_chat()
    activity = connector.with_audio(
        connector.personal("", chat=chat), CLIP, content_type="audio/wav", name="memo.wav"
    )
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(lambda f: any(c.stream_type == "final" for c in f.sent()))
    final = next(c for c in connector.sent() if c.stream_type == "final")
    assert "cannot listen to voice messages" in final.text
    assert "type your question" in final.text and "Reference:" in final.text
    assert calls(fake_dify, dify_app, "/audio-to-text") == []
    assert calls(fake_dify, dify_app, "/chat-messages") == []
    assert calls(fake_dify, dify_app, "/files/upload") == []


# -------------------------------------------------------------------- conversation tools


async def test_the_first_answer_in_a_thread_names_the_dify_conversation_and_the_second_does_not(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    bot = await teams_bot(make_service, connector, dify_app)
    root, conv, first = await ask_in_channel(bot, connector, "Onboarding checklist for new hires")
    await connector.deliver(bot.base_url, connector.channel_reply(root["id"], "and contractors?"))
    second = await answer_number(connector, conv, 2)
    assert "Dify conversation: “Onboarding checklist for new hires”" in first.text
    assert "You said: and contractors?" in second.text
    assert "Dify conversation:" not in second.text
    # Both turns are one Dify conversation.
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert sent[1].json["conversation_id"] == next(iter(dify_app.conversations))


async def test_typing_a_reset_word_in_a_channel_thread_starts_a_new_dify_conversation(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    bot = await teams_bot(make_service, connector, dify_app)
    root, conv, _ = await ask_in_channel(bot, connector, "Topic one")
    await connector.deliver(bot.base_url, connector.channel_reply(root["id"], "new topic"))
    reset = await answer_number(connector, conv, 2)
    assert "new conversation" in reset.text
    assert new_topic_button(reset) is None  # no button under the confirmation itself
    await connector.deliver(bot.base_url, connector.channel_reply(root["id"], "Topic two"))
    third = await answer_number(connector, conv, 3)
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert [c.json["query"] for c in sent] == ["Topic one", "Topic two"]  # "new topic" stayed
    assert sent[0].json["conversation_id"] == "" and sent[1].json["conversation_id"] == ""
    assert len(dify_app.conversations) == 2
    assert "Dify conversation: “Topic two”" in third.text


# ---------------------------------------------------------------------- New topic button


async def test_clicking_new_topic_under_a_channel_answer_starts_a_new_dify_conversation(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    bot = await teams_bot(make_service, connector, dify_app)
    root, conv, final = await ask_in_channel(bot, connector, "Who approves travel?")
    button = new_topic_button(final)
    assert button is not None
    # The button rides on the answer itself, beside the feedback buttons.
    assert final.body["channelData"] == {"feedbackLoop": {"type": "default"}}
    click = connector.card_click(
        button["data"], reply_to=str(final.activity_id), conversation=root["conversation"]
    )
    status, body, _ = await connector.deliver(bot.base_url, click)
    assert status == 200 and body == b""

    def confirmations(f: FakeBotConnector) -> list[Call]:
        return [
            c for c in f.sent("POST") if c.conversation_id == conv and "new conversation" in c.text
        ]

    await connector.wait_for(lambda f: len(confirmations(f)) == 1)
    # Teams redelivering the click changes nothing.
    await connector.deliver(bot.base_url, click)
    await asyncio.sleep(0.3)
    (confirmation,) = confirmations(connector)
    assert confirmation.activity_id == final.activity_id  # in the reply chain, under the card
    assert calls(fake_dify, dify_app, "/chat-messages")[-1].json["query"] == "Who approves travel?"
    await connector.deliver(bot.base_url, connector.channel_reply(root["id"], "And for trains?"))
    await answer_number(connector, conv, 2)
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert [c.json["query"] for c in sent] == ["Who approves travel?", "And for trains?"]
    assert sent[1].json["conversation_id"] == ""
    assert len(dify_app.conversations) == 2


def new_topic_suggestion(c: Call) -> dict[str, Any] | None:
    """The "New topic" suggested action of a 1:1 answer, if it has one."""
    for action in (c.body.get("suggestedActions") or {}).get("actions") or []:
        if action.get("title") == "New topic":
            return dict(action)
    return None


async def test_clicking_new_topic_in_a_personal_chat_starts_a_new_dify_conversation(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    bot = await teams_bot(make_service, connector, dify_app)
    chat = personal_chat()
    question = connector.personal("What is the VPN address?", chat=chat)
    await connector.deliver(bot.base_url, question)
    final = await answer_number(connector, chat, 1)
    # The end of Teams' stream can carry no card without becoming two messages: in 1:1 the
    # button is a suggested action that sends one of the reset words.
    assert final.stream_type == "final" and not final.body.get("attachments")
    button = new_topic_suggestion(final)
    assert button == {"type": "imBack", "title": "New topic", "value": "New topic"}
    await connector.deliver(bot.base_url, connector.personal(button["value"], chat=chat))
    await connector.wait_for(
        lambda f: any(
            c.conversation_id == chat and "new conversation" in c.text for c in f.sent("POST")
        )
    )
    await connector.deliver(bot.base_url, connector.personal("And the proxy?", chat=chat))
    await connector.wait_for(
        lambda f: any(c.stream_type == "final" and "And the proxy?" in c.text for c in f.sent()),
        within=10,
    )
    second = next(
        c for c in connector.sent() if c.stream_type == "final" and "And the proxy?" in c.text
    )
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert sent[1].json["query"] == "And the proxy?" and sent[1].json["conversation_id"] == ""
    assert "Dify conversation: “And the proxy?”" in second.text
    assert new_topic_suggestion(second) is not None
    # Exactly one message per answer in the chat (the stream's), plus the confirmation.
    assert len(connector.shown(chat)) == 3


async def test_with_reset_button_off_the_answer_has_no_new_topic_button(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    bot = await teams_bot(make_service, connector, dify_app, reset_button=False)
    *_, final = await ask_in_channel(bot, connector, "Who is on call?")
    assert "You said: Who is on call?" in final.text
    assert final.body["channelData"] == {"feedbackLoop": {"type": "default"}}
    assert new_topic_button(final) is None
    assert not final.body.get("attachments")


def test_the_new_topic_button_shares_the_table_card_on_the_last_message() -> None:
    table = "| City | Hotel |\n|---|---|\n| Paris | 180 |\n"
    text = "Limits:\n\n" + "word " * 9000 + "\n\n" + table
    extras = ReplyExtras(dify_message_id="m1", conversation_id="c1")
    parts = compose.final_parts(text, extras, feedback=True, suggestions=False, reset=True)
    assert len(parts) >= 2
    *earlier, last = parts
    assert all(not p.attachments for p in earlier)
    # One card (table, then the button) so the message stays one message in Teams.
    (card,) = last.attachments
    table_element, actions = card["content"]["body"]
    assert table_element["type"] == "Table"
    (action,) = actions["actions"]
    assert action["type"] == "Action.Submit" and action["title"] == "New topic"
    assert compose.is_reset_click(action["data"])
    assert compose.layout(last) == "carousel"
    # Without a Dify conversation (the reset confirmation itself) there is nothing to leave.
    confirmation = compose.final_parts(
        "Okay.", ReplyExtras(), feedback=True, suggestions=False, reset=True
    )
    assert confirmation[-1].attachments == []


# --------------------------------------------------------------------------------- inputs

# Every value a route can map into Dify ``inputs`` (config/bridge.example.yaml), one variable each.
EVERY_INPUT = {
    "asker_id": "speaker_id",
    "asker": "speaker_name",
    "asker_email": "speaker_email",
    "channel": "channel_id",
    "channel_title": "channel_name",
    "tenant": "workspace",
    "via": "platform",
    "link": "permalink",
    "context": "history",
}
CHANNEL = "19:6d1f0c5e2b1b4f0e9a0d@thread.tacv2"
ADA_AAD = "6f1c2a57-0000-4000-8000-00000000a001"  # ``from.aadObjectId`` in the payloads
GRACE_AAD = "6f1c2a57-0000-4000-8000-00000000a002"


def text_field(variable: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "text-input": {
            "variable": variable,
            "label": variable.replace("_", " ").title(),
            "required": required,
        }
    }


async def inputs_bot(
    make_service: Any, connector: FakeBotConnector, app: Any, inputs: dict[str, str]
) -> Any:
    """dify-bridge with the Teams adapter and one chat route mapping ``inputs`` (redaction off,
    so the values are exactly what the adapter filled in)."""
    lines = ["routes:", "  - name: teams-inputs", "    redaction: {mode: 'off'}", "    inputs:"]
    lines += [f"      {var}: {src}" for var, src in inputs.items()]
    env = {**connector.service_env(), "DIFY_API_KEY": app.api_key}
    return await make_service(env, bridge_yaml="\n".join(lines) + "\n", adapters=["teams"])


def named_channel(activity: dict[str, Any], name: str) -> dict[str, Any]:
    """``activity`` with the channel's display name in ``channelData.channel.name``."""
    activity["channelData"]["channel"]["name"] = name
    return activity


async def test_mapped_inputs_carry_who_asked_in_which_channel_and_tenant_for_every_message(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [text_field(var) for var in EVERY_INPUT]
    bot = await inputs_bot(make_service, connector, dify_app, EVERY_INPUT)
    root = named_channel(connector.channel_mention("Can I fly business class?"), "Travel desk")
    await connector.deliver(bot.base_url, root)
    conv = root["conversation"]["id"]
    await answer_number(connector, conv, 1)
    reply = named_channel(connector.channel_reply(root["id"], "and to New York?"), "Travel desk")
    await connector.deliver(bot.base_url, reply)
    await answer_number(connector, conv, 2)
    first, second = (c.json["inputs"] for c in calls(fake_dify, dify_app, "/chat-messages"))
    assert first == {
        "asker_id": ADA_AAD,  # the Entra object id, stable across chats (from.aadObjectId)
        "asker": "Ada Lovelace",
        "asker_email": "",  # the activity carries no email
        "channel": CHANNEL,  # the channel itself, without the ";messageid=" reply chain
        "channel_title": "Travel desk",  # channelData.channel.name
        "tenant": TENANT_ID,
        "via": "teams",
        "link": "",  # no permalink from Teams
        "context": "",  # a bot cannot read the channel's earlier messages
    }
    # The second message comes from someone else in the same reply chain: it is their turn.
    assert second == {**first, "asker_id": GRACE_AAD, "asker": "Grace Hopper"}


async def test_mapped_inputs_in_a_personal_chat_name_the_chat_and_no_channel(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [text_field(var) for var in EVERY_INPUT]
    bot = await inputs_bot(make_service, connector, dify_app, EVERY_INPUT)
    chat = personal_chat()
    await connector.deliver(bot.base_url, connector.personal("How many days off left?", chat=chat))
    final = await answer_number(connector, chat, 1)
    assert "You said: How many days off left?" in final.text
    ((sent),) = calls(fake_dify, dify_app, "/chat-messages")
    assert sent.json["inputs"] == {
        "asker_id": ADA_AAD,
        "asker": "Ada Lovelace",
        "asker_email": "",
        "channel": chat,  # a 1:1 chat is its own "channel"
        "channel_title": "",  # chats have no channel name
        "tenant": TENANT_ID,
        "via": "teams",
        "link": "",
        "context": "",
    }


async def test_a_channel_without_a_name_in_the_activity_sends_an_empty_channel_name(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    # Teams often leaves the name out (always for the General channel): nothing is made up.
    dify_app.user_input_form = [text_field("channel_title"), text_field("channel")]
    bot = await inputs_bot(
        make_service,
        connector,
        dify_app,
        {"channel_title": "channel_name", "channel": "channel_id"},
    )
    root = connector.channel_mention("Who is on call?")
    assert "name" not in root["channelData"]["channel"]
    await connector.deliver(bot.base_url, root)
    await answer_number(connector, root["conversation"]["id"], 1)
    ((sent),) = calls(fake_dify, dify_app, "/chat-messages")
    assert sent.json["inputs"] == {"channel_title": "", "channel": CHANNEL}


async def test_a_required_email_teams_does_not_share_is_explained_in_the_channel_and_the_chat(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.user_input_form = [text_field("email", required=True)]
    bot = await inputs_bot(make_service, connector, dify_app, {"email": "speaker_email"})
    root = connector.channel_mention("What is my leave balance?")
    chat = personal_chat()
    await connector.deliver(bot.base_url, root)
    await connector.deliver(bot.base_url, connector.personal("My leave balance?", chat=chat))
    conv = root["conversation"]["id"]

    def explained(f: FakeBotConnector, where: str) -> list[Call]:
        return [c for c in f.sent() if c.conversation_id == where and "needs “Email”" in c.text]

    await connector.wait_for(lambda f: bool(explained(f, conv) and explained(f, chat)))
    for where in (conv, chat):
        (message,) = explained(connector, where)
        assert message.text.startswith(
            "This assistant needs “Email”, which this channel does not provide."
        )
        assert "tell your admin" in message.text and "Reference:" in message.text
    # In the channel the sentence is in the mention's reply chain; in the chat it is a message
    # of its own: the check comes before any "Thinking…" stream was started.
    assert all(
        c.activity_id == root["id"] for c in connector.sent("POST") if c.conversation_id == conv
    )
    assert [
        (c.method, c.type, c.stream_type) for c in connector.sent() if c.conversation_id == chat
    ] == [("POST", "message", None)]
    # Dify was not called with an input it would refuse.
    assert calls(fake_dify, dify_app, "/chat-messages") == []


# ---------------------------------------------------------------------- files from Dify


async def test_files_dify_produces_are_linked_under_the_final_channel_answer(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    tool_file = "/files/tools/5e1f0c.csv?timestamp=1767225600&nonce=ab12&sign=c2ln"
    app = new_app(
        fake_dify,
        "chat",
        answer="Here are the Q3 numbers.",
        message_files=[
            {"type": "image", "url": "https://files.example/q3-chart.png"},
            # Dify without FILES_URL gives its tool files as paths on its own host.
            {"type": "document", "url": tool_file},
        ],
    )
    bot = await teams_bot(make_service, connector, app)
    activity = connector.channel_mention("Q3 sales as a chart and a table")
    await connector.deliver(bot.base_url, activity)
    conv = activity["conversation"]["id"]
    final = await answer_number(connector, conv, 1)
    dify_host = fake_dify.base_url.removesuffix("/v1")
    assert final.text.startswith(
        "Here are the Q3 numbers.\n\n"
        "[q3-chart.png](https://files.example/q3-chart.png)  \n"  # one link a line
        f"[5e1f0c.csv]({dify_host}{tool_file})\n\n"
    ), final.text
    # The links are in the answer as it stays in the thread, in the mention's reply chain...
    assert connector.visible_text(conv, str(final.activity_id)) == final.text
    assert connector.sent("POST")[0].activity_id == activity["id"]
    # ...and only there: they arrive with Dify's last events, not in the streamed text.
    interim = [c for c in connector.sent() if c.conversation_id == conv and not is_answer(c)]
    assert interim and not any("files.example" in c.text for c in interim)


async def test_a_file_that_is_the_whole_answer_in_a_personal_chat_ends_the_stream_as_a_link(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = new_app(
        fake_dify,
        "chat",
        answer="",
        message_files=[{"type": "image", "url": "/files/tools/9a8b7c.png?sign=x"}],
    )
    bot = await teams_bot(make_service, connector, app)
    chat = personal_chat()
    await connector.deliver(bot.base_url, connector.personal("Draw our logo", chat=chat))
    final = await answer_number(connector, chat, 1)
    assert final.stream_type == "final"
    dify_host = fake_dify.base_url.removesuffix("/v1")
    assert final.text.startswith(f"[9a8b7c.png]({dify_host}/files/tools/9a8b7c.png?sign=x)")
    assert "empty answer" not in final.text
