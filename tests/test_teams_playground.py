"""Teams stories played in Microsoft's own Teams emulator, the Microsoft 365 Agents Playground.

``dify-bridge serve`` runs as a subprocess in local mode (no app id: loopback serviceUrls only)
against the fake Dify; the Playground (npm, pinned, installed by ``tests/playground.py``) plays
Teams and the Bot Connector and is driven through its own HTTP API. Every story checks what the
user sees at the end and that the emulator accepted every activity the bot sent (and the bot
every activity the emulator sent). Both processes start once for the module.

Offline: ``SKIP_PLAYGROUND=1`` skips these stories; without it, a Playground that cannot be
installed or started fails them with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import base_env
from tests.fakes.dify import Fault
from tests.playground import (
    SKIP_ENV,
    Playground,
    PlaygroundUnavailable,
    Shown,
)
from tests.serve_process import Serve

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        os.environ.get(SKIP_ENV, "").lower() in ("1", "true", "yes"),
        reason=f"{SKIP_ENV} is set: the Teams emulator stories are skipped (offline work)",
    ),
]

TABLE_ANSWER = (
    "## Quarterly results\n\n"
    "Revenue grew **12%**; see the [report](https://example.com/q3) for details [1].\n\n"
    "| Region | Revenue |\n|---|---:|\n| EMEA | 4.2 |\n| APAC | 3.1 |\n\n"
    "```python\nprint('hello')\n```\n\n"
    "That is all."
)
SOURCES = [
    {
        "position": 1,
        "dataset_name": "Finance",
        "document_name": "Q3 report.pdf",
        "content": "Revenue grew twelve percent in the third quarter.",
        "score": 0.9,
    }
]
RESET_CLICK = {"difyBridge": "newTopic"}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def world(redis_url: str, fake_dify: Any) -> AsyncIterator[tuple[Serve, Playground, Any]]:
    app = fake_dify.add_app(
        "app-pg-" + uuid.uuid4().hex[:8], mode="chat", chunk_size=12, chunk_delay=0.02
    )
    env = {
        **os.environ,
        **base_env(redis_url, fake_dify.base_url, "pg" + uuid.uuid4().hex[:8]),
        "DIFY_API_KEY": app.api_key,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "TEAMS_ALLOW_UNAUTHENTICATED": "true",
        "EDIT_INTERVAL": "0.5",
    }
    for k in (
        "MICROSOFT_APP_PASSWORD",
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "SLACK_SIGNING_SECRET",
        "MICROSOFT_TOKEN_URL",
    ):
        env.pop(k, None)
    env["MICROSOFT_APP_ID"] = ""  # local mode
    # Run outside the checkout: a developer's .env there must not reach the test's bridge.
    bridge = await Serve.serving(env, cwd=tempfile.gettempdir())
    playground = Playground()
    playground.bridge = bridge
    try:
        await playground.start(bridge.url + "/api/messages")
    except PlaygroundUnavailable as e:
        await playground.close()
        await bridge.stop()
        pytest.fail(f"the Teams emulator is unavailable: {e}")
    try:
        yield bridge, playground, app
    finally:
        await playground.close()
        await bridge.stop()


@pytest.fixture
def pg(world: tuple[Serve, Playground, Any]) -> Playground:
    return world[1]


@pytest.fixture
def dify(world: tuple[Serve, Playground, Any]) -> Any:
    app = world[2]
    yield app
    app.answer = None
    app.retriever_resources = []
    app.suggested_questions = None
    app.faults.clear()
    app.chunk_delay = 0.02


def new_bot_messages(pg: Playground, conversation: str, seen: int) -> list[Shown]:
    return pg.bot_messages(conversation)[seen:]


async def answer_in(
    pg: Playground, conversation: str, seen: int, needle: str, *, settle: float = 1.5
) -> list[Shown]:
    """Wait until a new bot message in ``conversation`` shows ``needle``; then (after anything
    that would still follow: a second message, a late edit) the new bot messages."""
    await pg.wait_for(
        lambda: any(needle in m.text for m in new_bot_messages(pg, conversation, seen))
    )
    while True:  # until nothing changes for ``settle`` seconds
        before = [len(m.versions) for m in new_bot_messages(pg, conversation, seen)]
        await asyncio.sleep(settle)
        if before == [len(m.versions) for m in new_bot_messages(pg, conversation, seen)]:
            return new_bot_messages(pg, conversation, seen)


def accepted_everything(pg: Playground) -> None:
    """The emulator accepted every bot call, the bot every activity, and the bridge logged no
    failed Bot Connector call and no crash."""
    assert pg.rejected() == [], pg.rejected()
    bridge = pg.bridge
    if bridge is not None:
        bad = bridge.events("teams.call_failed") + bridge.events("answer.crashed")
        assert bad == [], bad


def chat_requests(app: Any) -> list[Any]:
    return [r for r in app.requests if r.path == "/chat-messages"]


def feedback_offered(pg: Playground, m: Shown) -> bool:
    """The thumbs under ``m``. An edit cannot show them in the Playground (its update schema
    drops ``channelData``), so for an edited message: its last edit asked for them."""
    if m.feedback:
        return True
    edits = [c for c in pg.bot_calls if c.request.get("id") == m.id and c.status == 200]
    return bool(edits) and (edits[-1].request.get("channelData") or {}).get("feedbackLoop") == {
        "type": "default"
    }


def stop_button(m: Shown) -> bool:
    return any(t == "Stop" for t in m.card_texts())


def new_topic_button(m: Shown) -> bool:
    return any(t == "New topic" for t in m.card_texts())


PARAGRAPHS = "\n\n".join(
    f"## Part {i}\n\nThis is paragraph {i} of the answer, with **bold** words." for i in range(1, 5)
)


# ------------------------------------------------------------------------------------ 1:1
async def test_a_question_in_a_1to1_chat_streams_into_one_message(
    pg: Playground, dify: Any
) -> None:
    dify.answer = PARAGRAPHS
    dify.chunk_delay = 0.12  # about 3 s of streaming: several stream updates
    seen = len(pg.bot_messages(pg.personal_chat))
    await pg.say(pg.personal_chat, "Tell me in four parts")
    # The last word has no space after it yet while streaming: only the final message shows it.
    last_words = "paragraph 4 of the answer, with **bold** words."
    (answer,) = await answer_in(pg, pg.personal_chat, seen, last_words)
    # Teams' informative "Thinking…" first, then the text growing, never empty or raw Markdown.
    assert answer.versions[0] == "Thinking…"
    grown = answer.versions[1:-1]
    assert grown, answer.versions
    assert all(v.strip() and "##" not in v for v in answer.versions)
    assert "**Part 1**" in grown[0]  # converted as the final message is
    assert all(b.startswith(a) for a, b in itertools.pairwise(grown))
    assert answer.text.startswith("**Part 1**") and "paragraph 4 of the answer" in answer.text
    assert answer.feedback and answer.ai is not None  # thumbs and the AI label
    accepted_everything(pg)


async def test_a_follow_up_in_the_1to1_chat_continues_the_dify_conversation(
    pg: Playground, dify: Any
) -> None:
    seen = len(pg.bot_messages(pg.personal_chat))
    await pg.say(pg.personal_chat, "First question")
    await answer_in(pg, pg.personal_chat, seen, "You said: First question")
    await pg.say(pg.personal_chat, "And a follow-up")
    new = await answer_in(pg, pg.personal_chat, seen, "You said: And a follow-up")
    assert [m.text.split("\n")[0] for m in new] == [
        "You said: First question",
        "You said: And a follow-up",
    ]
    follow_up = chat_requests(dify)[-1]
    assert follow_up.json["query"] == "And a follow-up"
    (first,) = [m for m in dify.messages.values() if m.query == "First question"]
    assert first.conversation_id and follow_up.json["conversation_id"] == first.conversation_id
    accepted_everything(pg)


async def test_a_suggested_question_is_offered_and_answered_when_clicked(
    pg: Playground, dify: Any
) -> None:
    dify.suggested_questions = ["What about Q4?", "Show the table again"]
    seen = len(pg.bot_messages(pg.personal_chat))
    await pg.say(pg.personal_chat, "How did Q3 go?")
    (answer,) = await answer_in(pg, pg.personal_chat, seen, "You said: How did Q3 go?")
    # Dify's suggestions, then "New topic" (one of the reset words), all in the same message.
    assert answer.suggested == ["What about Q4?", "Show the table again", "New topic"]
    # A suggestion is an imBack button: clicking it sends its text as the user's message.
    await pg.say(pg.personal_chat, answer.suggested[0])
    await answer_in(pg, pg.personal_chat, seen, "You said: What about Q4?")
    assert chat_requests(dify)[-1].json["query"] == "What about Q4?"
    accepted_everything(pg)


async def test_an_answer_with_a_table_code_link_and_citations_is_one_message(
    pg: Playground, dify: Any
) -> None:
    dify.answer = TABLE_ANSWER
    dify.retriever_resources = SOURCES
    shown: dict[str, Shown] = {}
    for conversation, mention in (
        (pg.personal_chat, False),
        (pg.group_chat, True),
        (pg.channel, True),
    ):
        seen = len(pg.bot_messages(conversation))
        posted = await pg.say(conversation, "How did Q3 go?", mention=mention)
        where = posted.get("postConversationId") or conversation
        (answer,) = await answer_in(pg, where, seen if where == conversation else 0, "That is all.")
        shown[conversation] = answer
        assert answer.text.startswith("**Quarterly results**")
        assert "[report](https://example.com/q3)" in answer.text
        assert "```\nprint('hello')\n```" in answer.text
        assert answer.text.rstrip().endswith("[1]")
        (claim,) = answer.ai["citation"]
        assert claim["appearance"]["name"] == "Q3 report.pdf"
        assert feedback_offered(pg, answer)
    # 1:1: the table is aligned text in the streamed message; no card could join it.
    personal = shown[pg.personal_chat]
    assert "EMEA" in personal.text and not personal.attachments
    assert personal.suggested[-1] == "New topic"
    # Group chat and channel: the table and the "New topic" button in one card, same message.
    for conversation in (pg.group_chat, pg.channel):
        answer = shown[conversation]
        assert "(see table below)" in answer.text and "EMEA" not in answer.text
        assert len(answer.attachments) == 1 and answer.layout == "carousel"
        assert {"EMEA", "4.2", "APAC"} <= set(answer.card_texts())
        assert new_topic_button(answer) and not stop_button(answer)
    accepted_everything(pg)


async def test_an_answer_too_long_for_one_message_is_split_and_every_part_accepted(
    pg: Playground, dify: Any
) -> None:
    words = " ".join(f"w{i}" for i in range(6000))
    dify.answer = f"{words}\n\n{words}\n\n{words}\n\nThe end."
    dify.chunk_size = 4000
    try:
        seen = len(pg.bot_messages(pg.group_chat))
        await pg.say(pg.group_chat, "Tell me everything", mention=True)
        parts = await answer_in(pg, pg.group_chat, seen, "The end.", settle=1.5)
    finally:
        dify.chunk_size = 12
    assert len(parts) >= 2
    assert sum(m.text.count("w5999") for m in parts) == 3
    assert [feedback_offered(pg, m) for m in parts] == [False] * (len(parts) - 1) + [True]
    assert all(not stop_button(m) for m in parts)
    accepted_everything(pg)


# ------------------------------------------------------------------------ group chats, channels
async def test_a_mention_in_a_group_chat_is_answered_in_one_message(
    pg: Playground, dify: Any
) -> None:
    dify.chunk_delay = 0.1
    seen = len(pg.bot_messages(pg.group_chat))
    await pg.say(pg.group_chat, "what is the plan for DifyBot?", mention=True)
    (answer,) = await answer_in(pg, pg.group_chat, seen, "You said:")
    assert answer.text.startswith("You said: what is the plan for DifyBot?")
    assert answer.versions[0] == "Thinking…"
    assert all(v.strip() for v in answer.versions)  # never an empty edit
    assert not stop_button(answer)  # the Stop button goes with the final text
    assert chat_requests(dify)[-1].json["query"] == "what is the plan for DifyBot?"
    # A message without a mention is not for the bot.
    await pg.say(pg.group_chat, "just chatting")
    await asyncio.sleep(1)
    assert len(pg.bot_messages(pg.group_chat)) == seen + 1
    accepted_everything(pg)


async def test_a_channel_mention_is_answered_in_its_reply_chain_which_keeps_context(
    pg: Playground, dify: Any
) -> None:
    posted = await pg.say(pg.channel, "Who is on call?", mention=True)
    chain = posted["postConversationId"]
    await answer_in(pg, chain, 0, "You said: Who is on call?")
    await pg.say(chain, "and tomorrow?", mention=True)
    first, second = await answer_in(pg, chain, 0, "You said: and tomorrow?")
    assert second.id != first.id
    q2 = chat_requests(dify)[-1]
    assert q2.json["query"] == "and tomorrow?"
    convs = {
        m.conversation_id
        for m in dify.messages.values()
        if m.query in ("Who is on call?", "and tomorrow?")
    }
    assert len(convs) == 1 and q2.json["conversation_id"] in convs
    accepted_everything(pg)


# ------------------------------------------------------------------------------ buttons
async def test_a_feedback_click_reaches_dify_with_the_comment(pg: Playground, dify: Any) -> None:
    seen = len(pg.bot_messages(pg.personal_chat))
    await pg.say(pg.personal_chat, "Rate me")
    await answer_in(pg, pg.personal_chat, seen, "You said: Rate me")
    status, body = await pg.feedback(pg.personal_chat, "dislike", "Too short")
    assert status == 200, body
    rated = [m for m in dify.messages.values() if m.query == "Rate me"]
    assert rated[-1].feedback == {"rating": "dislike", "content": "Too short"}
    # Feedback the bot cannot place (no answer in this channel) still gets a polite 200.
    status, body = await pg.feedback("channel-announcements-id", "like")
    assert status == 200, body
    accepted_everything(pg)


async def test_new_topic_starts_a_fresh_dify_conversation(pg: Playground, dify: Any) -> None:
    # 1:1: the "New topic" suggestion sends the reset words.
    seen = len(pg.bot_messages(pg.personal_chat))
    await pg.say(pg.personal_chat, "Remember the number 5")
    (answer,) = await answer_in(pg, pg.personal_chat, seen, "You said: Remember")
    assert answer.suggested == ["New topic"]
    await pg.say(pg.personal_chat, answer.suggested[0])
    await answer_in(pg, pg.personal_chat, seen, "starting a new conversation")
    await pg.say(pg.personal_chat, "What number?")
    await answer_in(pg, pg.personal_chat, seen, "You said: What number?")
    assert chat_requests(dify)[-1].json.get("conversation_id") in ("", None)
    # Group chat: the button in the answer's card.
    seen = len(pg.bot_messages(pg.group_chat))
    await pg.say(pg.group_chat, "Remember the number 7", mention=True)
    (answer,) = await answer_in(pg, pg.group_chat, seen, "You said: Remember")
    assert new_topic_button(answer)
    status, body = await pg.click(pg.group_chat, answer.id, RESET_CLICK)
    assert status == 200, body
    await answer_in(pg, pg.group_chat, seen, "starting a new conversation")
    await pg.say(pg.group_chat, "What number?", mention=True)
    await answer_in(pg, pg.group_chat, seen, "You said: What number?")
    assert chat_requests(dify)[-1].json.get("conversation_id") in ("", None)
    accepted_everything(pg)


async def test_stop_ends_a_channel_answer_with_what_had_arrived(pg: Playground, dify: Any) -> None:
    dify.answer = " ".join(f"word{i}" for i in range(400))
    dify.chunk_delay = 0.1
    posted = await pg.say(pg.channel, "Write a lot", mention=True)
    chain = posted["postConversationId"]
    await pg.wait_for(lambda: any(stop_button(m) for m in pg.bot_messages(chain)))
    (growing,) = pg.bot_messages(chain)
    status, body = await pg.click(chain, growing.id, {"difyBridge": "stop"})
    assert status == 200, body
    (answer,) = await answer_in(pg, chain, 0, "Stopped.")
    assert "word0" in answer.text and "word399" not in answer.text
    assert not stop_button(answer)
    assert dify.stopped
    accepted_everything(pg)


async def test_a_dify_error_mid_stream_keeps_the_text_and_says_what_happened(
    pg: Playground, dify: Any
) -> None:
    dify.answer = "The first part arrives.\n\nThen the model fails"
    dify.chunk_size = 6
    dify.faults.append(Fault.error_event(after_chunks=5))
    try:
        seen = len(pg.bot_messages(pg.personal_chat))
        await pg.say(pg.personal_chat, "Fail midway")
        (answer,) = await answer_in(pg, pg.personal_chat, seen, "Reference:")
        seen_g = len(pg.bot_messages(pg.group_chat))
        dify.faults.append(Fault.error_event(after_chunks=5))
        await pg.say(pg.group_chat, "Fail midway", mention=True)
        (in_group,) = await answer_in(pg, pg.group_chat, seen_g, "Reference:")
    finally:
        dify.chunk_size = 12
    for m in (answer, in_group):
        assert m.text.startswith("The first part")
        assert "⚠️" in m.text
        assert not stop_button(m)
    accepted_everything(pg)
