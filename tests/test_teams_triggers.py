"""Teams: which activities the bot answers, where the answer goes, and what reaches Dify."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.bot_connector import BOT_ID, FakeBotConnector


@pytest.fixture(autouse=True)
def _fresh(teams_env: FakeBotConnector, fake_dify: Any) -> None:
    fake_dify.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def bot(make_service: Any, connector: FakeBotConnector, dify_app: Any) -> Any:
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    return await make_service(env, adapters=["teams"])


def chat_calls(fake_dify: Any, app: Any) -> list[Any]:
    return [r for r in fake_dify.requests_to("/chat-messages") if r.api_key == app.api_key]


def chat_queries(fake_dify: Any, app: Any) -> list[str]:
    return [r.json["query"] for r in chat_calls(fake_dify, app)]


def finished(conversation_id: str) -> Any:
    """The answer in ``conversation_id`` is complete (the final text replaced the placeholder)."""

    def check(f: FakeBotConnector) -> bool:
        for c in f.sent():
            if c.conversation_id != conversation_id:
                continue
            # Final messages carry the "AI generated" entity; interim edits carry none.
            if c.type == "message" and c.body.get("entities"):
                return True
        return False

    return check


async def settle(connector: FakeBotConnector, seconds: float = 0.3) -> None:
    """Give a wrongly started answer the time to show up (used before asserting silence)."""
    await asyncio.sleep(seconds)


async def test_channel_mention_is_answered_in_the_same_reply_chain(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    activity = connector.channel_mention("What is our travel policy?")
    status, _, _ = await connector.deliver(bot.base_url, activity)
    assert status == 200
    conv = activity["conversation"]["id"]
    await connector.wait_for(finished(conv))
    first = connector.sent("POST")[0]
    # Posted into the reply chain: conversation id with ;messageid=<root>, as a reply to it.
    assert first.conversation_id == conv and conv.endswith(f";messageid={activity['id']}")
    assert first.activity_id == activity["id"]
    assert first.body["replyToId"] == activity["id"]
    assert first.body["from"]["id"] == BOT_ID
    assert chat_queries(fake_dify, dify_app) == ["What is our travel policy?"]
    final = connector.sent("PUT")[-1]
    assert final.body.get("entities") and final.activity_id == first.response["id"]
    assert "You said: What is our travel policy?" in final.text


async def test_mention_stripping_keeps_other_uses_of_the_bots_name(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    activity = connector.channel_mention("is DifyBot better than <at>Grace</at>? Ask DifyBot & co")
    # A second mention (of a person) in the same message, as Teams marks it.
    activity["text"] = activity["text"].replace("&lt;at&gt;Grace&lt;/at&gt;", "<at>Grace</at>")
    activity["entities"].append(
        {
            "type": "mention",
            "text": "<at>Grace</at>",
            "mentioned": {"id": "29:grace", "name": "Grace"},
        }
    )
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(finished(activity["conversation"]["id"]))
    assert chat_queries(fake_dify, dify_app) == ["is DifyBot better than Grace? Ask DifyBot & co"]


async def test_reply_in_a_channel_thread_continues_the_same_conversation(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    root = connector.channel_mention("Who approves travel?")
    await connector.deliver(bot.base_url, root)
    await connector.wait_for(finished(root["conversation"]["id"]))
    reply = connector.channel_reply(root["id"], "And above 5000 EUR?")
    await connector.deliver(bot.base_url, reply)
    await connector.wait_for(
        lambda f: any("You said: And above 5000 EUR?" in c.text for c in f.sent("PUT"))
    )
    calls = chat_calls(fake_dify, dify_app)
    assert [c.json["query"] for c in calls] == ["Who approves travel?", "And above 5000 EUR?"]
    assert calls[0].json["conversation_id"] == ""
    first_conversation = next(iter(dify_app.conversations))
    assert calls[1].json["conversation_id"] == first_conversation
    # Both answers went to the same reply chain.
    assert {c.conversation_id for c in connector.sent()} == {root["conversation"]["id"]}


async def test_thread_reply_without_mention_is_answered_only_where_the_bot_already_talks(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    # With ChannelMessage.Read.Group Teams delivers every channel message.
    stranger = connector.channel_reply("1700000000001", "lunch anyone?", mention=False)
    await connector.deliver(bot.base_url, stranger)
    await settle(connector)
    assert connector.calls == []
    root = connector.channel_mention("Who approves travel?")
    await connector.deliver(bot.base_url, root)
    await connector.wait_for(finished(root["conversation"]["id"]))
    follow = connector.channel_reply(root["id"], "and for trains?", mention=False)
    await connector.deliver(bot.base_url, follow)
    await connector.wait_for(lambda f: any("and for trains" in c.text for c in f.sent("PUT")))
    assert chat_queries(fake_dify, dify_app) == ["Who approves travel?", "and for trains?"]


async def test_group_chat_mention_is_answered_and_chatter_is_not(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    chatter = connector.group_mention("hello all")
    chatter["entities"] = []
    chatter["text"] = "hello all"
    await connector.deliver(bot.base_url, chatter)
    activity = connector.group_mention("summarise the onboarding checklist")
    await connector.deliver(bot.base_url, activity)
    conv = activity["conversation"]["id"]
    await connector.wait_for(finished(conv))
    assert chat_queries(fake_dify, dify_app) == ["summarise the onboarding checklist"]
    first = connector.sent("POST")[0]
    # Group chats have no reply chains: a plain send into the chat.
    assert first.conversation_id == conv and first.activity_id is None
    assert all(c.stream_type is None for c in connector.calls)


async def test_personal_chat_message_is_answered_without_a_mention(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    activity = connector.personal("How many vacation days do I have left?")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(finished(activity["conversation"]["id"]))
    assert chat_queries(fake_dify, dify_app) == ["How many vacation days do I have left?"]
    final = next(c for c in connector.sent() if c.stream_type == "final")
    assert "You said: How many vacation days" in final.text


async def test_noise_activities_are_acknowledged_and_ignored(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    own = connector.channel_mention("echo of myself")
    own["from"] = {"id": BOT_ID, "name": "DifyBot"}
    edited = connector.channel_mention("edited text")
    edited["type"] = "messageUpdate"
    deleted = connector.channel_mention("deleted")
    deleted["type"] = "messageDelete"
    empty = connector.channel_mention("")
    for activity in (connector.conversation_update(), own, edited, deleted, empty):
        status, _, _ = await connector.deliver(bot.base_url, activity)
        assert status == 200
    await settle(connector)
    assert connector.calls == []
    assert chat_queries(fake_dify, dify_app) == []


async def test_redelivered_activity_is_answered_once(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    activity = connector.channel_mention("What is our travel policy?")
    # Teams redelivers when it thinks the first delivery timed out; sometimes twice at once.
    results = await asyncio.gather(
        *(connector.deliver(bot.base_url, json.loads(json.dumps(activity))) for _ in range(3))
    )
    assert [r[0] for r in results] == [200, 200, 200]
    await connector.wait_for(finished(activity["conversation"]["id"]))
    await settle(connector)
    assert chat_queries(fake_dify, dify_app) == ["What is our travel policy?"]
    assert len(connector.sent("POST")) == 1


async def test_the_http_answer_does_not_wait_for_dify(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.first_byte_delay = 1.0  # a slow model
    activity = connector.channel_mention("take your time")
    status, _, seconds = await connector.deliver(bot.base_url, activity)
    assert status == 200
    assert seconds < 0.5
    await connector.wait_for(finished(activity["conversation"]["id"]), within=10)


def uploads(fake_dify: Any, app: Any) -> list[Any]:
    return [r for r in fake_dify.requests_to("/files/upload") if r.api_key == app.api_key]


async def test_file_sent_in_a_personal_chat_goes_to_dify_with_the_question(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    activity = connector.personal_file("Summarise this", "q3-report.pdf", b"%PDF-1.7 fake")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(finished(activity["conversation"]["id"]))
    (upload,) = uploads(fake_dify, dify_app)
    assert upload.files == ["q3-report.pdf"]
    (stored,) = dify_app.uploads.values()
    assert stored.data == b"%PDF-1.7 fake" and stored.mime_type == "application/pdf"
    (chat,) = chat_calls(fake_dify, dify_app)
    assert chat.json["query"] == "Summarise this"
    assert chat.json["files"][0]["upload_file_id"] == stored.id
    # SharePoint's download URL is pre-authorised: the bot's token is not sent there.
    assert connector.downloads == [("/sharepoint/q3-report.pdf", None)]


async def test_pasted_image_is_fetched_with_the_bots_token_and_a_file_alone_is_a_question(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    activity = connector.personal_image("", b"\x89PNG fake image")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(finished(activity["conversation"]["id"]))
    ((path, auth),) = connector.downloads
    assert path.startswith("/v3/attachments/") and auth is not None
    assert auth.removeprefix("Bearer ") in connector.issued_tokens
    (stored,) = dify_app.uploads.values()
    assert stored.data == b"\x89PNG fake image" and stored.mime_type.startswith("image/")
    assert chat_queries(fake_dify, dify_app) == ["Please look at the attached file."]
