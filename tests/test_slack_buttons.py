"""Buttons under answers: thumbs up/down, suggested follow-ups, New topic, and Stop while
streaming."""

from __future__ import annotations

import json

from app.messages import RESET_DONE
from tests import test_slack_support as _support
from tests.test_slack_support import CHANNEL, SECRET

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


def _button(msg, action_id):
    return next(b for b in msg.buttons() if b["action_id"].startswith(action_id))


async def test_thumbs_up_sends_feedback_to_dify_and_thanks_the_user(slack_bot):
    bot = await slack_bot()
    ev = bot.mention("what is the wifi password?")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])

    click = bot.fake.block_action(bot.team, answer, _button(answer, "dify_like"), user="U0FAN")
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200

    await bot.fake.wait_for(lambda: "Feedback from <@U0FAN>" in answer.context_text())
    (dify_msg,) = bot.dify.messages.values()
    assert dify_msg.feedback and dify_msg.feedback["rating"] == "like"
    assert "dify_like" not in [b["action_id"] for b in answer.buttons()], "one vote per answer"
    assert answer.visible_text().strip() == "You said: what is the wifi password?"


async def test_clicking_a_suggested_question_asks_it_in_the_thread(slack_bot):
    bot = await slack_bot()
    bot.dify.suggested_questions = ["How do I connect a printer?", "Who is on call?"]
    ev = bot.mention("wifi help")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    labels = [b["text"]["text"] for b in answer.buttons() if b["action_id"].startswith("dify_sug")]
    assert labels == ["How do I connect a printer?", "Who is on call?"]

    click = bot.fake.block_action(bot.team, answer, _button(answer, "dify_suggest_1"), user="U0BOB")
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200

    def answered() -> bool:
        return any(
            "You said: Who is on call?" in m.visible_text() for m in bot.answers(CHANNEL, ev["ts"])
        )

    await bot.fake.wait_for(answered)
    await bot.final(CHANNEL, ev["ts"], count=3)
    texts = [m.text for m in bot.fake.thread(CHANNEL, ev["ts"])]
    assert "<@U0BOB> asked: Who is on call?" in texts, "the thread shows who asked what"
    (conv,) = bot.dify.conversations.values()
    assert conv.queries == ["wifi help", "Who is on call?"], "same Dify conversation"


async def test_stop_button_ends_the_answer_with_what_had_arrived(slack_bot):
    bot = await slack_bot()
    bot.dify.answer = " ".join(f"w{i}" for i in range(400))
    bot.dify.chunk_size = 4
    bot.dify.chunk_delay = 0.05  # ~20 s if nobody stops it

    ev = bot.mention("go on forever")
    await bot.send(ev)
    await bot.dify.wait_running()

    def has_text() -> bool:
        msgs = bot.answers(CHANNEL, ev["ts"])
        return bool(msgs) and "w1" in msgs[0].visible_text()

    await bot.fake.wait_for(has_text)
    (live,) = bot.answers(CHANNEL, ev["ts"])
    click = bot.fake.block_action(bot.team, live, _button(live, "dify_stop"))
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200

    (msg,) = await bot.final(CHANNEL, ev["ts"], timeout=10)
    assert bot.dify.stopped, "Dify's stop endpoint was called"
    assert "w399" not in msg.visible_text()
    assert "Stopped" in msg.context_text()


async def test_button_with_tampered_value_is_acknowledged_and_ignored(slack_bot):
    bot = await slack_bot()
    ev = bot.mention("hi")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    bad = dict(_button(answer, "dify_like"), value="{not json")
    click = bot.fake.block_action(bot.team, answer, bad)
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200
    await bot.idle()
    (dify_msg,) = bot.dify.messages.values()
    assert not dify_msg.feedback
    assert json.loads(_button(answer, "dify_like")["value"])["m"] == dify_msg.id


async def test_new_topic_button_makes_the_next_question_start_a_new_dify_conversation(slack_bot):
    bot = await slack_bot()
    ev = bot.mention("topic one")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    assert _button(answer, "dify_new_topic")["text"]["text"] == "New topic"

    click = bot.fake.block_action(bot.team, answer, _button(answer, "dify_new_topic"), user="U0BOB")
    body, headers = bot.fake.interaction(click, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200

    # Everyone in the thread shares the conversation, so the thread is told who started anew.
    await bot.fake.wait_for(lambda: len(bot.answers(CHANNEL, ev["ts"])) == 2)
    note = bot.answers(CHANNEL, ev["ts"])[1]
    assert note.visible_text() == RESET_DONE
    assert "New topic started by <@U0BOB>" in note.context_text()
    await bot.fake.wait_for(
        lambda: "dify_new_topic" not in [b["action_id"] for b in answer.buttons()]
    )
    assert answer.visible_text().strip() == "You said: topic one", "the answer itself stays"
    assert "dify_like" in [b["action_id"] for b in answer.buttons()]

    await bot.send(bot.message("topic two", thread_ts=ev["ts"]))
    msgs = await bot.final(CHANNEL, ev["ts"], count=3)
    assert msgs[-1].visible_text().strip() == "You said: topic two"
    sent = [r for r in bot.dify_requests() if r.path == "/chat-messages"]
    assert [r.json["conversation_id"] for r in sent] == ["", ""], "a new Dify conversation"
    assert sorted(c.queries for c in bot.dify.conversations.values()) == [
        ["topic one"],
        ["topic two"],
    ]
    assert "Dify conversation: “topic two”" in msgs[-1].context_text()


async def test_no_new_topic_button_when_the_route_turns_it_off(slack_bot):
    bot = await slack_bot(bridge_yaml="routes:\n  - name: quiet\n    reset_button: false\n")
    ev = bot.mention("hello")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    ids = [b["action_id"] for b in answer.buttons()]
    assert "dify_new_topic" not in ids
    assert "dify_like" in ids, "the other buttons are still there"
