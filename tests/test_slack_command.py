"""``/ask <question>``: asked in the channel and answered in its thread, or ephemerally."""

from __future__ import annotations

import asyncio

from tests import test_slack_support as _support
from tests.test_slack_support import CHANNEL, SECRET, MakeBot, SlackBot, payload

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


def _command(
    bot: SlackBot, text: str, *, channel: str = CHANNEL
) -> tuple[str, dict[str, str], str]:
    url = bot.fake.response_url()
    fields = payload(
        "slash_command",
        text=text,
        channel_id=channel,
        team_id=bot.team.id,
        response_url=url,
        trigger_id=f"trig-{text[:8]}-{channel}",
    )
    body, headers = bot.fake.form(fields, secret=SECRET)
    return body, headers, url


async def test_slash_command_posts_the_question_and_answers_in_its_thread(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    body, headers, _ = _command(bot, "what is the wifi password?")
    resp = await bot.post(body, headers)
    assert resp.status == 200

    await bot.fake.wait_for(lambda: bot.fake.calls_to("chat.postMessage", ok_only=True))
    question = bot.fake.bot_messages(CHANNEL)[0]
    assert question.thread_ts is None
    assert question.text == "<@U0USER> asked: what is the wifi password?"
    (answer,) = await bot.final(CHANNEL, question.ts)
    assert answer.visible_text().strip() == "You said: what is the wifi password?"

    # The thread then continues like any other: a reply without a mention is answered.
    await bot.send(bot.message("and the guest network?", thread_ts=question.ts))
    msgs = await bot.final(CHANNEL, question.ts, count=2)
    assert "You said: and the guest network?" in msgs[-1].visible_text()


async def test_slash_command_where_the_bot_cannot_post_answers_only_the_asker(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    bot.fake.not_in_channels.add("C0PRIVATE")
    body, headers, url = _command(bot, "am I allowed to expense this?", channel="C0PRIVATE")
    assert (await bot.post(body, headers)).status == 200

    rid = url.rsplit("/", 1)[-1]
    await bot.fake.wait_for(lambda: bot.fake.responses.get(rid))
    await bot.idle()
    (reply,) = bot.fake.responses[rid]
    assert reply["response_type"] == "ephemeral"
    assert "You said: am I allowed to expense this?" in reply["blocks"][0]["text"]
    assert not bot.fake.bot_messages("C0PRIVATE"), "nothing visible to the channel"


async def test_empty_slash_command_explains_how_to_use_it(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    body, headers, url = _command(bot, "   ")
    assert (await bot.post(body, headers)).status == 200
    rid = url.rsplit("/", 1)[-1]
    await bot.fake.wait_for(lambda: bot.fake.responses.get(rid))
    assert "/ask" in bot.fake.responses[rid][0]["text"]
    assert not bot.dify.messages


async def test_slash_command_never_pings_the_whole_channel(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    body, headers, _ = _command(bot, "<!channel> is the office open?")
    await bot.post(body, headers)
    await bot.fake.wait_for(lambda: bot.fake.calls_to("chat.postMessage", ok_only=True))
    question = bot.fake.bot_messages(CHANNEL)[0]
    assert "<!channel>" not in question.text and "@channel" in question.text
    await bot.final(CHANNEL, question.ts)


async def test_a_replayed_slash_command_posts_one_question_and_one_answer(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    body, headers, _ = _command(bot, "who approves my leave?")
    # The same signed request three times within Slack's five minutes: twice at once, once later.
    statuses = [r.status for r in await asyncio.gather(*(bot.post(body, headers) for _ in "ab"))]
    await bot.fake.wait_for(lambda: bot.fake.bot_messages(CHANNEL))
    question = bot.fake.bot_messages(CHANNEL)[0]
    await bot.final(CHANNEL, question.ts)
    statuses.append((await bot.post(body, headers)).status)
    await bot.idle()
    assert statuses == [200, 200, 200], "Slack hears the same ack every time"
    echoes = [m for m in bot.fake.bot_messages(CHANNEL) if "asked:" in m.text]
    assert len(echoes) == 1, "one 'asked:' echo"
    assert len(bot.answers(CHANNEL, question.ts)) == 1
    assert len(bot.dify.messages) == 1


async def test_a_replayed_suggestion_click_asks_once(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    bot.dify.suggested_questions = ["Who is on call?"]
    ev = bot.mention("the pager is silent")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    button = next(b for b in answer.buttons() if b["action_id"].startswith("dify_suggest"))
    body, headers = bot.fake.interaction(
        bot.fake.block_action(bot.team, answer, button), secret=SECRET
    )
    for _ in range(3):
        assert (await bot.post(body, headers)).status == 200
    await bot.final(CHANNEL, ev["ts"], count=3)
    await bot.idle()
    asked = [m for m in bot.answers(CHANNEL, ev["ts"]) if "asked: Who is on call?" in m.text]
    assert len(asked) == 1
    assert len(bot.answers(CHANNEL, ev["ts"])) == 3, "answer, echo, answer to the suggestion"


async def test_a_slash_command_question_that_mentions_a_payload_is_answered(
    slack_bot: MakeBot,
) -> None:
    # bolt reads any form body containing the word "payload" as an interactivity payload.
    bot = await slack_bot()
    body, headers, _ = _command(bot, "what is the max payload size?")
    assert (await bot.post(body, headers)).status == 200
    await bot.fake.wait_for(lambda: bot.fake.bot_messages(CHANNEL))
    question = bot.fake.bot_messages(CHANNEL)[0]
    assert question.text == "<@U0USER> asked: what is the max payload size?"
    (answer,) = await bot.final(CHANNEL, question.ts)
    assert answer.visible_text().strip() == "You said: what is the max payload size?"
