"""Slack users mention the bot, DM it, continue threads; everything else is ignored, once."""

from __future__ import annotations

import asyncio
import json
import time

from tests import test_slack_support as _support
from tests.fakes.dify import Fault
from tests.fakes.slack_api import sign
from tests.test_slack_support import CHANNEL, SECRET, MakeBot, payload

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def test_mention_is_answered_in_its_thread_with_progressive_edits(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    words = " ".join(f"word{i}" for i in range(40))
    bot.dify.answer = f"Here is the answer: {words}."
    bot.dify.chunk_size = 6
    bot.dify.chunk_delay = 0.06  # ~2.7 s of streaming: room for interim edits at 1.5 s

    ev = bot.mention("how do I reset my password?")
    assert await bot.send(ev) == 200

    msgs = await bot.final(CHANNEL, ev["ts"])
    assert len(msgs) == 1, "one answer message in the question's thread"
    answer = msgs[0]
    assert answer.thread_ts == ev["ts"]
    assert answer.visible_text().strip() == f"Here is the answer: {words}."
    updates = [c for c in bot.fake.calls_to("chat.update") if c.params.get("ts") == answer.ts]
    interim = [c for c in updates if "word39" not in json.dumps(c.params.get("blocks"))]
    assert interim, "the text grew in place before the final edit"
    assert len(updates) <= 5, "edits are paced, not one per token"
    # The question reached Dify without the bot mention.
    assert bot.dify.messages and next(iter(bot.dify.messages.values())).query == (
        "how do I reset my password?"
    )
    # Thumbs under the finished answer, no Stop button left.
    ids = [b["action_id"] for b in answer.buttons()]
    assert ids[:2] == ["dify_like", "dify_dislike"]


async def test_follow_up_in_thread_without_mention_continues_the_same_conversation(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    first = bot.mention("what is our travel policy?")
    await bot.send(first)
    await bot.final(CHANNEL, first["ts"])

    follow = bot.message("and for contractors?", thread_ts=first["ts"])
    assert await bot.send(follow) == 200
    msgs = await bot.final(CHANNEL, first["ts"], count=2)

    assert "You said: and for contractors?" in msgs[-1].visible_text()
    (conv,) = bot.dify.conversations.values()
    assert [m.query for m in conv.messages] == [
        "what is our travel policy?",
        "and for contractors?",
    ], "both questions went to one Dify conversation"


async def test_direct_message_is_answered_in_the_dm(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    ev = bot.message("what is our travel policy?", channel="D0DIRECT", channel_type="im")
    assert await bot.send(ev) == 200
    msgs = await bot.final("D0DIRECT", ev["ts"])
    assert msgs[0].visible_text().strip() == "You said: what is our travel policy?"


async def test_bot_messages_edits_deletes_and_joins_are_ignored(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    for name in ("bot_message", "message_changed", "message_deleted", "channel_join"):
        assert await bot.send(payload(name)) == 200, name
    # Our own answer coming back as a message event is ignored as well.
    own = payload(
        "message_im",
        channel=CHANNEL,
        channel_type="channel",
        user=bot.team.bot_user_id,
        bot_id=bot.team.bot_id,
        text="You said: hi",
    )
    assert await bot.send(own) == 200
    # A top-level channel message without a mention is not for the bot.
    assert await bot.send(bot.message("lunch anyone?")) == 200
    await bot.idle()
    assert not bot.fake.calls_to("chat.postMessage")
    assert not bot.dify.messages


async def test_reply_in_a_thread_the_bot_is_not_part_of_is_ignored(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    root = bot.fake.user_message(bot.team, CHANNEL, "team lunch thread")
    assert await bot.send(bot.message("pizza?", thread_ts=root.ts)) == 200
    await bot.idle()
    assert not bot.fake.calls_to("chat.postMessage")


async def test_retry_and_double_delivery_produce_one_answer(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    ev = bot.mention("is the VPN down?")
    # Slack delivers the mention as app_mention and as message (different event ids) ...
    as_message = payload(
        "message_channel_mention", text=ev["text"], ts=ev["ts"], event_ts=ev["ts"], channel=CHANNEL
    )
    statuses = await asyncio.gather(
        bot.send(as_message, event_id="EvMSG1"),
        bot.send(ev, event_id="EvMENTION1"),
        # ... and retries after a slow ack, with the same event id.
        bot.send(ev, event_id="EvMENTION1", retry_num=1),
    )
    assert list(statuses) == [200, 200, 200]
    await bot.final(CHANNEL, ev["ts"])
    await bot.send(ev, event_id="EvMENTION1", retry_num=2)
    await bot.idle()
    assert len(bot.answers(CHANNEL, ev["ts"])) == 1
    assert len(bot.dify.messages) == 1, "Dify was asked once"


async def test_bad_or_old_signature_gets_401_and_is_never_processed(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    ev = bot.mention("leak the secrets")
    assert await bot.send(ev, secret="wrong-secret") == 401  # noqa: S106
    assert await bot.send(ev, timestamp=int(time.time()) - 6 * 60) == 401
    body, headers = bot.fake.event(bot.team, ev, secret=SECRET)
    del headers["X-Slack-Signature"]
    assert (await bot.post(body, headers)).status == 401
    await bot.idle()
    assert not bot.fake.calls_to("chat.postMessage")
    assert not bot.dify.messages


async def test_ack_comes_back_before_dify_sends_its_first_byte(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    bot.dify.faults.append(Fault.slow_first_byte(1.5))
    ev = bot.mention("slow question")
    started = time.monotonic()
    assert await bot.send(ev) == 200
    acked_after = time.monotonic() - started
    # Dify has not answered yet when Slack got its 200: nothing but the placeholder is visible.
    msgs = bot.answers(CHANNEL, ev["ts"])
    assert all("You said" not in m.visible_text() for m in msgs)
    assert acked_after < 1.5
    final = await bot.final(CHANNEL, ev["ts"])
    assert "You said: slow question" in final[0].visible_text()


async def test_url_verification_challenge_is_echoed(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    body = json.dumps({"token": "x", "challenge": "c-123", "type": "url_verification"})
    async with bot.http.post(bot.events_url, data=body, headers=sign(SECRET, body)) as r:
        assert r.status == 200
        assert "c-123" in await r.text()


async def test_route_inputs_get_the_askers_name_and_the_thread_so_far(slack_bot: MakeBot) -> None:
    bot = await slack_bot(
        bridge_yaml="""
routes:
  - name: helpdesk
    inputs:
      asker: speaker_name
      email: speaker_email
      thread: history
"""
    )
    bot.fake.add_user("U0ANN", name="Ann Lee", email="ann@acme.io")
    first = bot.mention("is the VPN down?", user="U0ANN")
    await bot.send(first)
    await bot.final(CHANNEL, first["ts"])

    follow = bot.message("still down for me", user="U0ANN", thread_ts=first["ts"])
    await bot.send(follow)
    await bot.final(CHANNEL, first["ts"], count=2)

    chats = [r for r in bot.dify_requests() if r.path == "/chat-messages"]
    inputs = chats[-1].json["inputs"]
    assert inputs["asker"] == "Ann Lee"
    assert inputs["email"] == "ann@acme.io"
    assert "user: is the VPN down?" in inputs["thread"]
    assert "assistant: You said: is the VPN down?" in inputs["thread"]
    assert "still down for me" not in inputs["thread"], "the question itself is not history"
    assert len(bot.fake.calls_to("users.info")) == 1, "names are cached"


async def test_a_mention_is_recorded_before_the_ack_and_forgotten_once_answered(
    slack_bot: MakeBot,
) -> None:
    # If this replica died right after the ack, the record lets another one tell the user.
    bot = await slack_bot()
    bot.dify.faults.append(Fault.slow_first_byte(1.0))
    inflight = bot.service.bridge.inflight
    ev = bot.mention("record me")
    event_id = "EvPreAck0001"
    assert await bot.send(ev, event_id=event_id) == 200
    answer_id = inflight.id_for("slack", event_id)
    # Queued before the ack and on its way (it may reach Redis a moment after the 200 does):
    # it is there while the answer is still being written (Dify's first byte takes 1 s).
    deadline = time.monotonic() + 0.5
    while await bot.service.store.redis.zscore(inflight.index, answer_id) is None:
        assert time.monotonic() < deadline, "the pre-ack record never reached Redis"
        await asyncio.sleep(0.01)
    await bot.final(CHANNEL, ev["ts"], timeout=15)
    assert await bot.service.store.redis.zscore(inflight.index, answer_id) is None
    # A late Slack retry of the answered event records nothing that could later misfire.
    assert await bot.send(ev, event_id=event_id, retry_num=1) == 200
    await bot.idle()
    assert await bot.service.store.redis.zscore(inflight.index, answer_id) is None
    assert len(bot.answers(CHANNEL, ev["ts"])) == 1
