"""Every kind of Dify app behind Slack: workflows, completions, agents, moderation, voice clips,
the slash-command answer cache and the conversation tools, each through signed Slack requests.

Slack events go into ``/slack/events``; what people see is read back from the fake Slack, what
Dify was asked is read from the fake Dify.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.pipeline.model import ThreadKey
from app.texts import RESET_DONE
from tests import test_slack_support as _support
from tests.fakes.slack_api import Call, Message
from tests.test_slack_support import CHANNEL, SECRET, USER, SlackBot, payload

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot

DM = "D0DIRECT"
CLIP = b"\x00\x00\x00\x18ftypM4A fake voice clip bytes"


def _routes(**route: Any) -> str:
    """A routing file with one catch-all route (the Dify key comes from DIFY_API_KEY)."""
    r: dict[str, Any] = {"name": "r", "edit_interval": 0.2}
    r.update(route)
    return yaml.safe_dump({"routes": [r]})


def _app(dify_app: Any, mode: str, **knobs: Any) -> Any:
    """Turn the test's own fake Dify app into another kind of app."""
    dify_app.mode = mode
    for k, v in knobs.items():
        setattr(dify_app, k, v)
    return dify_app


def _requests(bot: SlackBot, path: str) -> list[Any]:
    return [r for r in bot.dify_requests() if r.path == path]


def _answer_calls(bot: SlackBot, method: str, thread: str) -> list[Call]:
    """Successful ``chat.postMessage`` / ``chat.update`` calls that wrote into ``thread``."""
    return [c for c in bot.fake.calls_to(method, ok_only=True) if c.thread == thread]


def _context_of(blocks: Any) -> str:
    return " ".join(
        str(e.get("text", ""))
        for b in blocks or []
        if b.get("type") == "context"
        for e in b.get("elements", [])
    )


def _markdown_of(blocks: Any) -> str:
    return "".join(str(b.get("text", "")) for b in blocks or [] if b.get("type") == "markdown")


def _action_ids(msg: Message) -> list[str]:
    return [b["action_id"] for b in msg.buttons()]


def _clip_event(bot: SlackBot, *, name: str, mimetype: str, subtype: str | None) -> dict[str, Any]:
    """A person sends a recorded clip (or an audio file) to the bot in a DM, with no text."""
    hosted = bot.fake.host_file(bot.team, name, mimetype, CLIP)
    m = bot.fake.user_message(bot.team, DM, "", user=USER)
    ev = payload("audio_clip", ts=m.ts, event_ts=m.ts, team=bot.team.id)
    (f,) = ev["files"]
    f.update(
        id=hosted.id,
        name=name,
        title=name,
        mimetype=mimetype,
        filetype=name.rsplit(".", 1)[-1],
        size=len(CLIP),
        url_private=hosted.url,
        url_private_download=hosted.url + "?download=1",
    )
    if subtype is None:
        f.pop("subtype")
        f.pop("transcription")
    else:
        f["subtype"] = subtype
    return ev


def _slash(bot: SlackBot, text: str, trigger: str) -> tuple[str, dict[str, str]]:
    fields = payload(
        "slash_command",
        text=text,
        channel_id=CHANNEL,
        team_id=bot.team.id,
        response_url=bot.fake.response_url(),
        trigger_id=trigger,
    )
    return bot.fake.form(fields, secret=SECRET)


# ------------------------------------------------------------------------------ app kinds


async def test_a_workflow_route_answers_a_mention_with_its_chosen_output_in_the_thread(
    slack_bot: Any, dify_app: Any
) -> None:
    _app(
        dify_app,
        "workflow",
        query_variable="question",
        workflow_outputs={"summary": "Holidays: 25 days a year.", "debug": "node trace"},
    )
    bot = await slack_bot(
        bridge_yaml=_routes(
            dify={"mode": "workflow", "query_variable": "question", "output_variable": "summary"}
        )
    )
    ev = bot.mention("how many holidays do I get?")
    assert await bot.send(ev) == 200
    (answer,) = await bot.final(CHANNEL, ev["ts"])

    assert answer.visible_text().strip() == "Holidays: 25 days a year."
    assert "node trace" not in answer.visible_text(), "only the chosen output is shown"
    (run,) = _requests(bot, "/workflows/run")
    assert run.json["inputs"]["question"] == "how many holidays do I get?"
    assert run.json["response_mode"] == "streaming"
    assert not _requests(bot, "/chat-messages")
    assert "dify_new_topic" not in _action_ids(answer), "a workflow keeps no conversation"


async def test_a_completion_route_answers_every_message_in_the_thread_on_its_own(
    slack_bot: Any, dify_app: Any
) -> None:
    _app(
        dify_app,
        "completion",
        user_input_form=[{"paragraph": {"variable": "query", "label": "Query", "required": True}}],
    )
    bot = await slack_bot(bridge_yaml=_routes(dify={"mode": "completion"}))
    ev = bot.mention("write a haiku about tea")
    await bot.send(ev)
    (first,) = await bot.final(CHANNEL, ev["ts"])
    # A follow-up in the thread, without a mention, is answered too...
    await bot.send(bot.message("and one about coffee", thread_ts=ev["ts"]))
    first, second = await bot.final(CHANNEL, ev["ts"], count=2)

    assert first.visible_text().strip() == "You said: write a haiku about tea"
    assert second.visible_text().strip() == "You said: and one about coffee"
    sent = _requests(bot, "/completion-messages")
    assert [c.json["inputs"]["query"] for c in sent] == [
        "write a haiku about tea",
        "and one about coffee",
    ]
    # ...but nothing links it to the first message: one-shot, no conversation kept.
    assert all("conversation_id" not in c.json for c in sent)
    thread = ThreadKey("slack", bot.team.id, CHANNEL, ev["ts"])
    assert await bot.service.store.get_conversation(thread) is None
    for msg in (first, second):
        assert "Dify conversation" not in msg.context_text()
        assert "dify_new_topic" not in _action_ids(msg)


async def test_an_agent_shows_the_tool_it_uses_while_it_works_and_the_final_message_has_none(
    slack_bot: Any, dify_app: Any
) -> None:
    answer_text = "It is sunny in Lisbon today, with a light breeze from the sea all afternoon."
    # Slack edits come at most every 1.5 s: the answer streams for about two seconds.
    _app(
        dify_app,
        "agent-chat",
        answer=answer_text,
        chunk_size=4,
        chunk_delay=0.11,
        agent_thoughts=[
            {"tool": "web_search", "tool_input": '{"q": "Lisbon"}', "observation": "sunny"}
        ],
    )
    bot = await slack_bot(bridge_yaml=_routes(dify={"mode": "agent-chat"}))
    ev = bot.mention("weather in Lisbon?")
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])

    updates = _answer_calls(bot, "chat.update", ev["ts"])
    interim = updates[:-1]
    assert any(
        "Using tool: web_search" in _context_of(c.params.get("blocks"))
        and answer_text.startswith(_markdown_of(c.params.get("blocks")))
        and _markdown_of(c.params.get("blocks"))
        for c in interim
    ), "an interim edit shows the growing text with the tool on its status line"
    assert msg.visible_text().strip() == answer_text
    assert "Using tool" not in msg.context_text(), "the final message has no status line"
    assert "dify_stop" not in _action_ids(msg)
    (chat,) = _requests(bot, "/chat-messages")
    assert chat.json["query"] == "weather in Lisbon?"


async def test_moderation_replaces_the_text_already_shown_in_slack(
    slack_bot: Any, dify_app: Any
) -> None:
    original = "something the moderator will not like at all, said slowly"
    _app(
        dify_app,
        "chat",
        answer=original,
        chunk_size=3,
        chunk_delay=0.03,
        replace_with="This answer was removed by content moderation.",
    )
    bot = await slack_bot(bridge_yaml=_routes())
    ev = bot.mention("say something bad")
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])

    shown = [
        _markdown_of(c.params.get("blocks"))
        for m in ("chat.postMessage", "chat.update")
        for c in _answer_calls(bot, m, ev["ts"])
    ]
    assert shown[0] and original.startswith(shown[0]), "the original text streamed first"
    assert msg.edits >= 1, "the same message was edited, not a second one posted"
    assert msg.visible_text().strip() == "This answer was removed by content moderation."
    assert "moderator" not in msg.text, "nor is it left in the notification text"


# ---------------------------------------------------------------------------------- voice


async def test_a_recorded_voice_clip_is_transcribed_by_dify_and_the_answer_quotes_it(
    slack_bot: Any, dify_app: Any
) -> None:
    spoken = "what is our holiday policy for the winter break and the days around new year"
    _app(dify_app, "chat", speech_to_text=True, transcript=spoken)
    bot = await slack_bot()
    ev = _clip_event(bot, name="audio_message.m4a", mimetype="audio/mp4", subtype="slack_audio")
    assert await bot.send(ev) == 200
    (answer,) = await bot.final(DM, ev["ts"])

    assert answer.visible_text().strip() == f"You said: {spoken}"
    quote = answer.context_text()
    assert '🎙️ "what is our holiday policy' in quote and '…"' in quote
    (stt,) = _requests(bot, "/audio-to-text")
    assert stt.files == ["audio_message.m4a"], "the clip Slack served reached Dify"
    (chat,) = _requests(bot, "/chat-messages")
    assert chat.json["query"] == spoken, "the transcript is the question"
    assert not _requests(bot, "/files/upload"), "the clip is the question, not an attachment"


@pytest.mark.parametrize(
    ("name", "mimetype", "subtype"),
    [
        ("memo.mp3", "audio/mpeg", None),  # an audio file someone uploaded
        ("audio_message.mp4", "video/mp4", "slack_audio"),  # a clip Slack labels as video
    ],
)
async def test_an_audio_file_or_a_clip_labelled_as_video_is_also_a_voice_message(
    slack_bot: Any, dify_app: Any, name: str, mimetype: str, subtype: str | None
) -> None:
    _app(dify_app, "chat", speech_to_text=True, transcript="book a meeting room for friday")
    bot = await slack_bot()
    ev = _clip_event(bot, name=name, mimetype=mimetype, subtype=subtype)
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])

    assert answer.visible_text().strip() == "You said: book a meeting room for friday"
    assert '🎙️ "book a meeting room for friday"' in answer.context_text()
    (stt,) = _requests(bot, "/audio-to-text")
    assert stt.files == [name]


async def test_a_voice_clip_to_an_app_without_speech_to_text_asks_the_person_to_type(
    slack_bot: Any, dify_app: Any
) -> None:
    bot = await slack_bot()  # speech_to_text is off in the fake app by default
    ev = _clip_event(bot, name="audio_message.m4a", mimetype="audio/mp4", subtype="slack_audio")
    await bot.send(ev)
    (msg,) = await bot.final(DM, ev["ts"])

    text = msg.visible_text()
    assert "cannot listen to voice messages" in text and "type your question" in text
    assert "Reference: `" in msg.context_text()
    assert not _requests(bot, "/audio-to-text")
    assert not _requests(bot, "/chat-messages")


# ------------------------------------------------------------------------- answer cache


async def test_the_same_slash_command_question_is_answered_from_the_cache_the_second_time(
    slack_bot: Any, dify_app: Any
) -> None:
    dify_app.retriever_resources = [
        {"position": 1, "document_name": "IT handbook", "content": "Go to id.example.com"}
    ]
    bot = await slack_bot(bridge_yaml=_routes(name="faq", answer_cache_ttl=120))

    body, headers = _slash(bot, "How do I reset my password?", "trig-first")
    assert (await bot.post(body, headers)).status == 200
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages(CHANNEL)) >= 1)
    q1 = bot.fake.bot_messages(CHANNEL)[0]
    (first,) = await bot.final(CHANNEL, q1.ts)

    body, headers = _slash(bot, "how do i reset my  password", "trig-second")
    assert (await bot.post(body, headers)).status == 200
    await bot.fake.wait_for(
        lambda: len([m for m in bot.fake.bot_messages(CHANNEL) if m.thread_ts is None]) >= 2
    )
    q2 = [m for m in bot.fake.bot_messages(CHANNEL) if m.thread_ts is None][1]
    (second,) = await bot.final(CHANNEL, q2.ts)

    assert q2.text == "<@U0USER> asked: how do i reset my  password"
    assert first.visible_text().strip() == "You said: How do I reset my password?"
    assert second.visible_text().strip() == first.visible_text().strip()
    assert "IT handbook" in second.context_text(), "the cached answer keeps its sources"
    assert len(_requests(bot, "/chat-messages")) == 1, "the second answer needed no Dify call"
    # One-shot answers keep no conversation: there is no topic to leave.
    assert "dify_new_topic" not in _action_ids(first) + _action_ids(second)

    async with bot.http.get(f"{bot.service.base_url}/metrics") as r:
        assert r.status == 200
        metrics = await r.text()
    assert _cache_lookups(metrics, "faq") == {"miss": 1.0, "hit": 1.0}


def _cache_lookups(metrics: str, route: str) -> dict[str, float]:
    """``bridge_answer_cache_total`` of one route from the ``/metrics`` text, by result."""
    return {
        s.labels["result"]: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "bridge_answer_cache"
        for s in family.samples
        if s.name == "bridge_answer_cache_total" and s.labels.get("route") == route
    }


# -------------------------------------------------------------------- conversation tools


async def test_the_first_answer_in_a_thread_names_the_dify_conversation_and_the_second_does_not(
    slack_bot: Any, dify_app: Any
) -> None:
    bot = await slack_bot()
    ev = bot.mention("onboarding checklist for new hires")
    await bot.send(ev)
    await bot.final(CHANNEL, ev["ts"])
    await bot.send(bot.message("and for contractors?", thread_ts=ev["ts"]))
    first, second = await bot.final(CHANNEL, ev["ts"], count=2)

    assert "Dify conversation: “onboarding checklist for new hires”" in first.context_text()
    assert second.visible_text().strip() == "You said: and for contractors?"
    assert "Dify conversation" not in second.context_text()
    (conv,) = bot.dify.conversations.values()
    assert conv.queries == ["onboarding checklist for new hires", "and for contractors?"]


async def test_a_reset_word_in_the_thread_starts_a_new_dify_conversation(
    slack_bot: Any, dify_app: Any
) -> None:
    bot = await slack_bot()
    ev = bot.mention("topic one")
    await bot.send(ev)
    await bot.final(CHANNEL, ev["ts"])
    await bot.send(bot.message("reset", thread_ts=ev["ts"]))
    await bot.final(CHANNEL, ev["ts"], count=2)
    await bot.send(bot.message("topic two", thread_ts=ev["ts"]))
    _first, reset, again = await bot.final(CHANNEL, ev["ts"], count=3)

    assert reset.visible_text().strip() == RESET_DONE
    assert "dify_new_topic" not in _action_ids(reset), "a confirmation is not a topic"
    sent = _requests(bot, "/chat-messages")
    assert [c.json["query"] for c in sent] == ["topic one", "topic two"], "reset went to no one"
    assert sent[0].json["conversation_id"] == ""
    assert sent[1].json["conversation_id"] == "", "the next question starts a new conversation"
    assert len(bot.dify.conversations) == 2
    assert "Dify conversation: “topic two”" in again.context_text()
