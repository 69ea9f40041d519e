"""One answer is one Teams message, in every conversation type, without the emulator.

The fake Bot Connector applies Teams' rule as the Agents Playground does (a message's text and
each ``list`` attachment are separate messages; an update that would become several is refused
with 400 BadSyntax), so these stories catch a regression in ``make test`` even offline.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.teams import compose
from tests.fakes.bot_connector import FakeBotConnector, split_activity

pytestmark = pytest.mark.usefixtures("teams_env")

TABLE_ANSWER = (
    "## Hotel limits\n\nPer night, see the [policy](https://example.com/p).\n\n"
    "| City | Hotel |\n|---|---:|\n| Paris | 180 |\n| Tokyo | 150 |\n\n"
    "```\nbook --city Paris\n```\n\nThat is all."
)
CARD = {
    "contentType": "application/vnd.microsoft.card.adaptive",
    "content": {"type": "AdaptiveCard"},
}


@pytest_asyncio.fixture(loop_scope="session")
async def bot(make_service: Any, connector: FakeBotConnector, dify_app: Any) -> Any:
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    return await make_service(env, adapters=["teams"])


def test_teams_rule_text_and_each_list_attachment_are_separate_messages() -> None:
    assert len(split_activity({"text": "hi"})) == 1
    assert len(split_activity({"text": "hi", "attachments": [CARD]})) == 2
    assert len(split_activity({"attachments": [CARD, CARD]})) == 2
    assert (
        len(
            split_activity(
                {"text": "hi", "attachments": [CARD, CARD], "attachmentLayout": "carousel"}
            )
        )
        == 1
    )


async def test_the_fake_refuses_an_update_that_would_become_several_messages(
    connector: FakeBotConnector,
) -> None:
    url = f"{connector.service_url}v3/conversations/19:c@thread.v2/activities"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"type": "message", "text": "Thinking…"}) as r:
            message_id = (await r.json())["id"]
        split = {"type": "message", "text": "Answer", "attachments": [CARD]}
        async with s.put(f"{url}/{message_id}", json=split) as r:
            assert r.status == 400
            assert (await r.json())["error"] == {
                "code": "BadSyntax",
                "message": "Activity resulted into multiple skype activities",
            }
        async with s.put(f"{url}/{message_id}", json={"type": "message", "text": ""}) as r:
            assert r.status == 400  # an empty edit
        async with s.put(
            f"{url}/{message_id}", json={**split, "attachmentLayout": "carousel"}
        ) as r:
            assert r.status == 200


async def test_a_channel_answer_with_a_table_is_one_message_and_never_an_empty_edit(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.answer = TABLE_ANSWER
    dify_app.chunk_size = 3
    # ~5.7 s of streaming: growing edits 2 s apart (Teams' pace) land before the final one
    # even on a loaded machine (0.06, ~3.4 s, left room for one at most).
    dify_app.chunk_delay = 0.1
    activity = connector.channel_mention("Hotel limits?")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(
        lambda f: any("That is all." in c.text and c.body.get("entities") for c in f.sent()),
        within=15,
    )
    assert all(c.status < 300 for c in connector.calls), connector.describe()
    (shown,) = connector.shown(connector.calls[0].conversation_id)
    assert shown["text"].startswith("**Hotel limits**") and "That is all." in shown["text"]
    (card,) = shown["attachments"]
    assert card["content"]["body"][0]["type"] == "Table"
    # Growing edits: never empty, converted as the final is, a Stop button under them.
    edits = [c for c in connector.sent("PUT")][:-1]
    assert edits and all(c.text.strip() and "##" not in c.text for c in edits)
    assert all(
        compose.is_stop_click(c.body["attachments"][0]["content"]["body"][0]["actions"][0]["data"])
        for c in edits
    )


async def test_a_group_chat_answer_is_one_message(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.answer = TABLE_ANSWER
    activity = connector.group_mention("Hotel limits?")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(
        lambda f: any("That is all." in c.text and c.body.get("entities") for c in f.sent()),
        within=15,
    )
    assert all(c.status < 300 for c in connector.calls), connector.describe()
    (shown,) = connector.shown(activity["conversation"]["id"])
    assert len(shown["attachments"]) == 1 and shown["attachmentLayout"] == "carousel"


async def test_a_1to1_answer_streams_converted_text_into_one_message(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.answer = TABLE_ANSWER + "\n\n" + " ".join(f"word{i}" for i in range(60))
    dify_app.chunk_size = 8
    dify_app.chunk_delay = 0.05
    chat = "a:1OneMessageChat"
    await connector.deliver(bot.base_url, connector.personal("Hotel limits?", chat=chat))
    await connector.wait_for(lambda f: any(c.stream_type == "final" for c in f.calls), within=20)
    assert all(c.status < 300 for c in connector.calls), connector.describe()
    streamed = [c.text for c in connector.calls if c.stream_type == "streaming"]
    assert streamed and all(t.strip() and "##" not in t for t in streamed)
    assert streamed[0].startswith("**Hotel limits**")
    (shown,) = connector.shown(chat)
    assert "Paris" in shown["text"] and not shown.get("attachments")  # table as aligned text
    assert "word58 word59" in shown["text"]


def test_streamed_text_is_the_final_conversion_of_complete_blocks_and_words() -> None:
    assert compose.streamable("## ") == ""
    assert compose.streamable("## Title\n\nSome wor") == "**Title**\n\nSome"
    assert compose.streamable("| a | b |\n|--") == ""  # a table in the making shows nothing yet
    assert compose.streamable("Use **bo") == ""  # emphasis in the making waits for its block
    growing = "## T\n\nOne two three.\n\n- a\n- b and c\n\nDone now"
    sent = [""]
    for i in range(len(growing) + 1):  # as StreamReply sends: only what extends the last
        candidate = compose.streamable(growing[:i])
        if len(candidate) > len(sent[-1]) and candidate.startswith(sent[-1]):
            sent.append(candidate)
    assert sent[-1] == "**T**\n\nOne two three.\n\n- a\n- b and c\n\nDone"
    assert len(sent) > 6
