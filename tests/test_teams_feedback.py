"""Teams: thumbs up/down reach Dify, and follow-up questions appear as suggested actions."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.bot_connector import FakeBotConnector

pytestmark = pytest.mark.usefixtures("teams_env")


@pytest_asyncio.fixture(loop_scope="session")
async def bot(make_service: Any, connector: FakeBotConnector, dify_app: Any) -> Any:
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    return await make_service(env, adapters=["teams"])


async def answered_in_personal_chat(
    bot: Any, connector: FakeBotConnector, text: str
) -> tuple[dict[str, Any], Any]:
    activity = connector.personal(text)
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(lambda f: any(c.stream_type == "final" for c in f.sent()))
    final = next(c for c in connector.sent() if c.stream_type == "final")
    return activity, final


async def test_thumbs_up_with_a_comment_reaches_dify(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    activity, final = await answered_in_personal_chat(bot, connector, "What is the VPN address?")
    assert final.body["channelData"] == {"feedbackLoop": {"type": "default"}}
    click = connector.feedback(
        reply_to=final.response["id"],
        reaction="like",
        text="Spot on, thanks",
        conversation=activity["conversation"],
    )
    status, body, _ = await connector.deliver(bot.base_url, click)
    # Teams wants 200 with an empty body, or it shows the user an error.
    assert status == 200 and body == b""
    (message,) = dify_app.messages.values()
    assert message.feedback is not None
    assert message.feedback["rating"] == "like"
    assert message.feedback["content"] == "Spot on, thanks"


async def test_thumbs_down_in_a_channel_thread_reaches_dify(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    activity = connector.channel_mention("Who is on call?")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(lambda f: any(c.body.get("channelData") for c in f.sent("PUT")))
    final = next(c for c in connector.sent("PUT") if c.body.get("channelData"))
    assert final.body["channelData"] == {"feedbackLoop": {"type": "default"}}
    # The click arrives in the reply chain, about the bot's message (the edited placeholder).
    assert final.activity_id is not None
    click = connector.feedback(
        reply_to=final.activity_id, reaction="dislike", conversation=activity["conversation"]
    )
    status, _, _ = await connector.deliver(bot.base_url, click)
    assert status == 200
    (message,) = dify_app.messages.values()
    assert message.feedback is not None and message.feedback["rating"] == "dislike"


async def test_feedback_on_an_unknown_message_is_accepted_quietly(
    bot: Any, connector: FakeBotConnector, fake_dify: Any, dify_app: Any
) -> None:
    click = connector.feedback(reply_to="1:never-sent-by-us", reaction="like")
    status, body, _ = await connector.deliver(bot.base_url, click)
    # Never a 4xx (Teams would show the user an error): 200 with a message it may show.
    assert status == 200
    assert json.loads(body) == {
        "statusCode": 200,
        "type": "application/vnd.microsoft.activity.message",
        "value": "Thanks! I could not tell which answer this feedback is for, so it was not "
        "recorded.",
    }
    assert not [r for r in fake_dify.requests_to("/feedbacks") if r.api_key == dify_app.api_key]


async def test_malformed_feedback_gets_a_polite_answer_not_an_error(
    bot: Any, connector: FakeBotConnector
) -> None:
    click = connector.feedback(reply_to="1:x", reaction="love")
    status, body, _ = await connector.deliver(bot.base_url, click)
    assert status == 200 and json.loads(body)["statusCode"] == 200


async def test_feedback_without_reply_to_id_rates_the_threads_latest_answer(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    # The Agents Playground sends no replyToId; real Teams does. Neither may get a 400.
    chat = "a:1NoReplyToIdChat"
    activity = connector.personal("First", chat=chat)
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(lambda f: any(c.stream_type == "final" for c in f.calls), within=10)
    click = connector.feedback(
        reply_to="", reaction="like", text="Spot on", conversation=activity["conversation"]
    )
    click.pop("replyToId")
    status, body, _ = await connector.deliver(bot.base_url, click)
    assert status == 200 and body == b""
    (message,) = dify_app.messages.values()
    assert message.feedback == {"rating": "like", "content": "Spot on"}


async def test_follow_up_questions_appear_as_suggested_actions(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.suggested_questions = ["How do I reset my VPN token?", "Who runs the helpdesk?"]
    _, final = await answered_in_personal_chat(bot, connector, "What is the VPN address?")
    actions = final.body["suggestedActions"]["actions"]
    assert actions == [
        {
            "type": "imBack",
            "title": "How do I reset my VPN token?",
            "value": "How do I reset my VPN token?",
        },
        {"type": "imBack", "title": "Who runs the helpdesk?", "value": "Who runs the helpdesk?"},
        # The "New topic" button of a 1:1 chat: one of the route's reset words.
        {"type": "imBack", "title": "New topic", "value": "New topic"},
    ]
