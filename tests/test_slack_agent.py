"""Slack's agent messaging experience: DMs as threads with a loading status, a title and suggested
prompts; native streaming with Dify's steps as task cards, sources and feedback buttons; the edit
path wherever Slack refuses to stream; and what the user is looking at passed to Dify.

Everything goes through signed Slack requests into ``/slack/events``; what people see is read back
from the fake Slack (which checks every call against slack_sdk's method signatures and models).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.config.settings import RouteConfig
from tests import test_slack_support as _support
from tests.fakes.referees import slack_call_problems
from tests.fakes.slack_api import MARKDOWN_LIMIT, FakeSlack
from tests.test_slack_support import CHANNEL, SECRET, USER, MakeBot, SlackBot

fake_slack = _support.fake_slack
slack_bot = _support.slack_bot

DM = "D0AGENT"


def _routes(**route: Any) -> str:
    r: dict[str, Any] = {"name": "r", "edit_interval": 0.2}
    r.update(route)
    return yaml.safe_dump({"routes": [r]})


def _dm(bot: SlackBot, text: str, *, thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    ev = bot.message(text, channel=DM, channel_type="im", thread_ts=thread_ts)
    ev.update(extra)
    return ev


def _chats(bot: SlackBot) -> list[Any]:
    return [r for r in bot.dify_requests() if r.path == "/chat-messages"]


def _clean(fake: FakeSlack) -> None:
    assert not fake.contract_errors, fake.contract_errors
    assert not [
        c
        for c in fake.calls
        if c.error in ("msg_too_long", "invalid_blocks", "invalid_chunks", "invalid_arguments")
    ]


async def _until(check: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Poll: the fake Dify has no change notification to wait on (clicks run after the ack)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def _open_tab(bot: SlackBot, tab: str = "messages", user: str = USER) -> None:
    assert await bot.send(bot.fake.home_opened_event(bot.team, user, DM, tab=tab)) == 200
    await bot.idle()


# ------------------------------------------------------------------ DMs as threads


async def test_a_dm_is_answered_in_its_own_thread_with_status_stream_and_title(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.answer = "Travel is booked through the portal. " * 5
    bot.dify.chunk_size = 20
    bot.dify.chunk_delay = 0.03

    ev = _dm(bot, "what is our travel policy for conferences?")
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])

    assert answer.thread_ts == ev["ts"], "the reply sits in the thread the message started"
    assert answer.visible_text() == bot.dify.answer
    # Loading status first, in that thread.
    first = bot.fake.statuses[0]
    assert (first["channel"], first["thread_ts"]) == (DM, ev["ts"]) and first["status"]
    # Streamed natively (a DM needs no recipient ids), no edits.
    (start,) = bot.fake.calls_to("chat.startStream")
    assert start.params["thread_ts"] == ev["ts"] and "recipient_user_id" not in start.params
    assert not bot.fake.calls_to("chat.update")
    # The thread is an agent session: processing (Slack's Stop button) while Dify works, active
    # once the stream stopped, titled with Dify's name for the conversation.
    session = bot.fake.sessions[(DM, ev["ts"])]
    assert session["history"] == ["processing", "active"]
    assert session["title"] == "what is our travel policy for conferences?"[:47]
    _clean(bot.fake)


async def test_a_reply_in_the_dm_thread_continues_its_conversation_a_new_message_does_not(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    first = _dm(bot, "hello")
    await bot.send(first)
    await bot.final(DM, first["ts"])
    follow = _dm(bot, "and then?", thread_ts=first["ts"])
    await bot.send(follow)
    await bot.final(DM, first["ts"], count=2)
    other = _dm(bot, "unrelated question")
    await bot.send(other)
    await bot.final(DM, other["ts"])

    convs = [r.json.get("conversation_id") for r in _chats(bot)]
    assert convs[0] in (None, "") and convs[1] and convs[2] in (None, "")
    assert len(bot.dify.conversations) == 2
    # Only the first answer of each conversation sets a title.
    assert len(bot.fake.calls_to("agents.sessions.rename")) == 2
    assert bot.fake.sessions[(DM, first["ts"])]["title"] == "hello"


async def test_slacks_own_stop_button_stops_the_dify_answer(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.answer = "A long story that goes on and on. " * 40
    bot.dify.chunk_size = 8
    bot.dify.chunk_delay = 0.05
    ev = _dm(bot, "tell me a long story")
    await bot.send(ev)
    await bot.fake.wait_for(lambda: bot.fake.calls_to("chat.startStream", ok_only=True))
    await bot.send(bot.fake.session_stopped_event(bot.team, USER, DM, ev["ts"]))

    (answer,) = await bot.final(DM, ev["ts"], timeout=20)
    assert "Stopped" in answer.context_text()
    assert len(answer.visible_text()) < len(bot.dify.answer)
    assert any(r.path.endswith("/stop") for r in bot.dify_requests())
    assert bot.fake.sessions[(DM, ev["ts"])]["status"] == "active"


async def test_an_app_that_is_no_agent_answers_without_sessions_and_titles_the_thread(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.team.agent_view = False
    try:
        first = _dm(bot, "first question")
        await bot.send(first)
        await bot.final(DM, first["ts"])
        second = _dm(bot, "second question")
        await bot.send(second)
        await bot.final(DM, second["ts"])
    finally:
        bot.team.agent_view = True
    assert [c.error for c in bot.fake.calls_to("agents.sessions.setStatus")] == ["not_an_agent"]
    assert bot.fake.titles[(DM, first["ts"])] == "first question"


# ------------------------------------------------------------------ suggested prompts


async def test_opening_the_messages_tab_offers_the_dify_apps_suggested_questions(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.opening_statement = "Hi! I answer questions about HR, IT and travel."
    bot.dify.opening_questions = [
        "How do I book a trip?",
        "Reset my password",
        "How many vacation days do I have left "
        "this year, counting the days I carried over from last year?",
        "Who is my HR contact?",
        "A fifth one Slack would refuse",
    ]
    await _open_tab(bot)

    (offer,) = bot.fake.prompts
    assert offer["channel"] == DM and offer["thread_ts"] is None and offer["shown"]
    assert offer["title"] == bot.dify.opening_statement
    assert [p["message"] for p in offer["prompts"]] == bot.dify.opening_questions[:4]
    assert all(len(p["title"]) <= 75 for p in offer["prompts"])
    assert offer["prompts"][2]["title"].endswith("…")

    # Slack sends app_home_opened on every visit: the prompts are not set again each time,
    # and the Home tab is not the agent DM.
    await _open_tab(bot)
    await _open_tab(bot, tab="home")
    assert len(bot.fake.prompts) == 1
    _clean(bot.fake)


async def test_an_app_without_suggested_questions_offers_no_prompts(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.opening_questions = []
    await _open_tab(bot)
    assert not bot.fake.calls_to("assistant.threads.setSuggestedPrompts")


async def test_a_new_dm_thread_gets_the_prompts_when_the_tab_did_not(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.opening_questions = ["What can you do?"]
    ev = _dm(bot, "hi")
    await bot.send(ev)
    await bot.final(DM, ev["ts"])
    await bot.fake.wait_for(lambda: bot.fake.prompts)
    (offer,) = bot.fake.prompts
    assert offer["channel"] == DM and offer["thread_ts"] is None
    assert offer["prompts"] == [{"title": "What can you do?", "message": "What can you do?"}]


async def test_legacy_assistant_threads_get_prompts_of_their_own(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.opening_questions = ["What can you do?"]
    ev = bot.fake.thread_started_event(bot.team, USER, DM)
    await bot.send(ev)
    # The offer is made by a listener after the ack, not by an answer, so idle() can't see it.
    await bot.fake.wait_for(lambda: bot.fake.prompts)
    (offer,) = bot.fake.prompts
    assert offer["thread_ts"] == ev["assistant_thread"]["thread_ts"]


# ------------------------------------------------------------------ task cards, sources, feedback


async def test_agent_tool_calls_show_as_task_cards_that_complete(
    slack_bot: MakeBot, dify_app: Any
) -> None:
    dify_app.mode = "agent-chat"
    dify_app.agent_thoughts = [
        {"tool": "web_search", "tool_input": '{"q": "flights"}', "observation": "3 results"},
        {"tool": "calendar", "tool_input": '{"day": "friday"}', "observation": "free"},
    ]
    bot = await slack_bot(bridge_yaml=_routes(dify={"mode": "agent-chat"}))
    ev = _dm(bot, "book me a flight on friday")
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])

    tasks = answer.tasks
    titles = [t["title"] for t in tasks.values()]
    assert titles[:2] == ["Using web_search", "Using calendar"]
    assert {t["status"] for t in tasks.values()} == {"complete"}
    search = next(t for t in tasks.values() if t["title"] == "Using web_search")
    assert search["details"] == '{"q": "flights"}' and search["output"] == "3 results"
    assert answer.visible_text() == "You said: book me a flight on friday"
    _clean(bot.fake)


async def test_workflow_steps_group_into_a_plan_when_the_route_asks(
    slack_bot: MakeBot, dify_app: Any
) -> None:
    dify_app.mode = "advanced-chat"
    bot = await slack_bot(bridge_yaml=_routes(dify={"mode": "advanced-chat"}, task_display="plan"))
    ev = _dm(bot, "summarise the handbook")
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])

    (start,) = bot.fake.calls_to("chat.startStream")
    assert start.params["task_display_mode"] == "plan"
    assert answer.task_display_mode == "plan" and answer.plan_title
    assert [(t["title"], t["status"]) for t in answer.tasks.values()] == [("Thinking", "complete")]
    _clean(bot.fake)


async def test_sources_with_links_end_the_stream_as_a_sources_card(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.retriever_resources = [
        {
            "position": 1,
            "document_name": "Travel policy",
            "content": "Book via the portal",
            "score": 0.9,
            "doc_metadata": {"url": "https://intranet.acme.io/travel"},
        },
        {"position": 2, "document_name": "Old memo", "content": "Fax the form", "score": 0.4},
    ]
    ev = _dm(bot, "how do I book travel?")
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])

    card = answer.tasks["dify-sources"]
    assert card["status"] == "complete"
    assert card["sources"] == [
        {"type": "url", "url": "https://intranet.acme.io/travel", "text": "Travel policy"}
    ]
    # The source without a link still shows, under the answer.
    assert "Old memo" in answer.context_text() or "Old memo" in json.dumps(answer.blocks)
    _clean(bot.fake)


async def test_feedback_buttons_at_the_end_of_a_stream_reach_difys_feedback_api(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    ev = _dm(bot, "is the office open on sunday?")
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])
    assert answer.feedback_buttons() is not None
    assert not answer.buttons() or "dify_like" not in [b["action_id"] for b in answer.buttons()]

    (dify_msg,) = bot.dify.messages.values()
    click = bot.fake.feedback_click(bot.team, answer, positive=False, user="U0CRITIC")
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200
    await bot.idle()
    await _until(lambda: dify_msg.feedback)
    assert dify_msg.feedback and dify_msg.feedback["rating"] == "dislike"

    click = bot.fake.feedback_click(bot.team, answer, positive=True)
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200
    await _until(lambda: dify_msg.feedback["rating"] == "like")
    assert dify_msg.feedback["rating"] == "like"


# ------------------------------------------------------------------ where Slack will not stream


async def test_slack_refusing_to_stream_falls_back_to_edits_and_stops_asking(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.fake.refuse("chat.startStream", "feature_not_enabled")
    try:
        bot.dify.answer = "Edits carry this answer instead. " * 4
        bot.dify.chunk_size = 16
        bot.dify.chunk_delay = 0.02
        first = _dm(bot, "one")
        await bot.send(first)
        (a1,) = await bot.final(DM, first["ts"])
        second = _dm(bot, "two")
        await bot.send(second)
        (a2,) = await bot.final(DM, second["ts"])
    finally:
        bot.fake.allow("chat.startStream")

    assert a1.visible_text().strip() == a2.visible_text().strip() == bot.dify.answer.strip()
    # The refusal is remembered: the second answer does not try again.
    assert len(bot.fake.calls_to("chat.startStream")) == 1
    # The edit path keeps its own thumbs buttons.
    assert "dify_like" in [b["action_id"] for b in a2.buttons()]


async def test_a_refusal_in_the_middle_of_a_stream_loses_no_text(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    bot.dify.answer = "First words stream, then Slack says no, and the rest still lands. " * 4
    bot.dify.chunk_size = 10
    bot.dify.chunk_delay = 0.15  # edits and appends go at most every 1.5 s
    ev = _dm(bot, "go")
    await bot.send(ev)
    await bot.fake.wait_for(lambda: bot.fake.calls_to("chat.startStream", ok_only=True))
    bot.fake.fail_next("chat.appendStream", "not_allowed", times=1)

    (answer,) = await bot.final(DM, ev["ts"])
    assert answer.visible_text().strip() == bot.dify.answer.strip()
    assert [c.error for c in bot.fake.calls_to("chat.appendStream")].count("not_allowed") == 1
    assert bot.fake.calls_to("chat.update", ok_only=True), "the streamed message is edited on"


async def test_a_refused_stop_still_delivers_the_whole_answer_with_buttons(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    ev = _dm(bot, "last words")
    bot.fake.fail_next("chat.stopStream", "not_allowed", times=2)
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])
    assert answer.visible_text().strip() == "You said: last words"
    assert "dify_like" in [b["action_id"] for b in answer.buttons()]


async def test_channels_edit_by_default_and_stream_when_the_route_says_always(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    ev = bot.mention("channel question")
    await bot.send(ev)
    await bot.final(CHANNEL, ev["ts"])
    assert not bot.fake.calls_to("chat.startStream")

    assert RouteConfig(name="x", native_streaming=True).native_streaming == "always"
    assert RouteConfig(name="x", native_streaming=False).native_streaming == "off"
    assert RouteConfig(name="x").native_streaming == "dm"


async def test_a_dm_route_with_streaming_off_answers_with_edits(slack_bot: MakeBot) -> None:
    bot = await slack_bot(bridge_yaml=_routes(native_streaming="off"))
    ev = _dm(bot, "no streaming please")
    await bot.send(ev)
    (answer,) = await bot.final(DM, ev["ts"])
    assert not bot.fake.calls_to("chat.startStream")
    assert answer.visible_text().strip() == "You said: no streaming please"


# ------------------------------------------------------------------ limits


async def test_an_answer_longer_than_one_message_streams_on_in_a_new_message(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    para = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20).strip()
    code = "```python\n" + "\n".join(f"print({i})" for i in range(400)) + "\n```"
    bot.dify.answer = "\n\n".join([para] * 9 + [code] + [para] * 8)
    bot.dify.chunk_size = 900
    ev = _dm(bot, "write a lot")
    await bot.send(ev)
    msgs = await bot.final(DM, ev["ts"], count=2, timeout=30)

    assert len(msgs) >= 2
    assert all(len(m.markdown) <= MARKDOWN_LIMIT for m in msgs)
    for m in msgs:
        assert m.markdown.count("```") % 2 == 0, "a code block cut in two is closed and reopened"
    joined = "".join(m.markdown for m in msgs)
    assert joined.count("Lorem ipsum") == 17 * 20 and "print(399)" in joined
    assert joined.replace("\n```\n```python\n", "\n").count("print(") == 400
    assert msgs[-1].feedback_buttons() is not None and msgs[0].feedback_buttons() is None
    assert len(bot.fake.calls_to("chat.startStream")) == len(msgs)
    _clean(bot.fake)


# ------------------------------------------------------------------ what the user is viewing


async def test_a_route_can_pass_what_the_user_is_viewing_to_dify(
    slack_bot: MakeBot, dify_app: Any
) -> None:
    dify_app.user_input_form = [
        {
            "text-input": {
                "variable": "viewing",
                "label": "Viewing",
                "required": False,
                "max_length": 256,
            }
        }
    ]
    bot = await slack_bot(bridge_yaml=_routes(inputs={"viewing": "viewing"}))
    ctx = bot.fake.context_changed_event(
        bot.team,
        USER,
        [{"type": "slack#/types/channel_id", "value": "C0SALES", "team_id": bot.team.id}],
    )
    assert await bot.send(ctx) == 200
    await bot.idle()
    ev = _dm(bot, "summarise what people say here")
    await bot.send(ev)
    await bot.final(DM, ev["ts"])

    assert _chats(bot)[-1].json["inputs"] == {"viewing": "channel:C0SALES"}


async def test_context_stamped_on_the_message_itself_wins(
    slack_bot: MakeBot, dify_app: Any
) -> None:
    dify_app.user_input_form = [
        {
            "text-input": {
                "variable": "viewing",
                "label": "Viewing",
                "required": False,
                "max_length": 256,
            }
        }
    ]
    bot = await slack_bot(bridge_yaml=_routes(inputs={"viewing": "viewing"}))
    ev = _dm(
        bot,
        "what is this channel about?",
        app_context={
            "entities": [
                {"type": "slack#/types/channel_id", "value": "C0DESIGN"},
                {"type": "slack#/types/user_id", "value": "U0ANN"},
            ]
        },
    )
    await bot.send(ev)
    await bot.final(DM, ev["ts"])
    assert _chats(bot)[-1].json["inputs"] == {"viewing": "channel:C0DESIGN, user:U0ANN"}


async def test_what_the_user_views_is_not_kept_unless_a_route_asks_for_it(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(bridge_yaml=_routes())
    ctx = bot.fake.context_changed_event(
        bot.team, USER, [{"type": "slack#/types/channel_id", "value": "C0SECRET"}]
    )
    assert await bot.send(ctx) == 200
    await bot.idle()
    store = bot.service.store
    keys = [k async for k in store.redis.scan_iter(match=f"{store.prefix}*viewing*")]
    assert keys == []
    ev = _dm(bot, "hello")
    await bot.send(ev)
    await bot.final(DM, ev["ts"])
    assert "inputs" not in _chats(bot)[-1].json or not _chats(bot)[-1].json["inputs"]


# ------------------------------------------------------------------ the fake is checked too


@pytest.mark.referee_refuses
async def test_the_fake_slack_refuses_at_the_wire_what_slack_sdk_would_not_send(
    fake_slack: FakeSlack,
) -> None:
    team = fake_slack.add_team("T0WIRE")
    client = AsyncWebClient(token=team.bot_token, base_url=fake_slack.api_url)
    # An argument slack_sdk's method does not have: invalid_arguments, and noted.
    with pytest.raises(SlackApiError) as refused:
        await client.api_call(
            "chat.startStream", json={"channel": "D1", "thread_ts": "1.2", "markdown": "typo"}
        )
    assert refused.value.response["error"] == "invalid_arguments"
    assert "markdown" in fake_slack.contract_errors[-1]
    # A task card with a status Slack does not know.
    with pytest.raises(SlackApiError) as refused:
        await client.chat_startStream(
            channel="D1",
            thread_ts="1.2",
            chunks=[{"type": "task_update", "id": "t", "title": "x", "status": "done"}],
        )
    assert refused.value.response["error"] == "invalid_chunks"
    # Prompts with a thread in an agent DM: ok, but nothing shows ("silently fails").
    await client.assistant_threads_setSuggestedPrompts(
        channel_id="D1", thread_ts="1.2", prompts=[{"title": "a", "message": "b"}]
    )
    assert fake_slack.prompts[-1]["shown"] is False
    # Refusals last until lifted.
    fake_slack.refuse("assistant.threads.setTitle", "feature_not_enabled")
    for _ in range(2):
        with pytest.raises(SlackApiError) as refused:
            await client.assistant_threads_setTitle(channel_id="D1", thread_ts="1.2", title="t")
        assert refused.value.response["error"] == "feature_not_enabled"
    fake_slack.allow("assistant.threads.setTitle")
    await client.assistant_threads_setTitle(channel_id="D1", thread_ts="1.2", title="t")
    assert fake_slack.titles[("D1", "1.2")] == "t"


def test_the_fake_slack_checks_arguments_against_slack_sdk() -> None:
    assert slack_call_problems("chat.startStream", {"channel": "D1"})  # thread_ts
    assert "recipient" in " ".join(
        slack_call_problems(
            "chat.startStream", {"channel": "D1", "thread_ts": "1.2", "recipient": "U1"}
        )
    )
    assert (
        slack_call_problems(
            "assistant.threads.setSuggestedPrompts",
            {"channel_id": "D1", "prompts": [{"title": "a", "message": "b"}]},
        )
        == []
    )
    assert slack_call_problems("assistant.threads.setTitle", {"channel_id": "D1"})
