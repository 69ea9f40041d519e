"""How answers look when Slack or Dify misbehave: 429s, deleted messages, errors, size."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid

from tests import test_slack_support as _support
from tests.fakes.dify import Fault
from tests.test_slack_support import CHANNEL, MakeBot

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def test_rate_limited_edit_slows_down_and_the_final_text_still_lands(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    bot.dify.answer = "A long answer " + "blah " * 60 + "END"
    bot.dify.chunk_size = 10
    bot.dify.chunk_delay = 0.05
    # Slack refuses the first two edits: 429 with Retry-After: 1.
    bot.fake.fail_next("chat.update", "ratelimited", retry_after=1, times=2)

    ev = bot.mention("tell me everything")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"], timeout=15)

    assert answer.visible_text().rstrip().endswith("END")
    limited = [c for c in bot.fake.calls_to("chat.update") if c.error == "ratelimited"]
    assert len(limited) == 2
    ok = [c for c in bot.fake.calls_to("chat.update") if c.error is None]
    assert ok, "edits resumed"
    # No edit was attempted sooner than Retry-After after a 429.
    assert ok[0].time - limited[0].time >= 0.95


async def test_deleted_answer_message_continues_in_a_new_message(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    bot.dify.answer = "Part one of the answer, then part two of it, and the end."
    bot.dify.chunk_size = 8
    bot.dify.chunk_delay = 0.08

    ev = bot.mention("explain")
    await bot.send(ev)
    # Someone deletes the placeholder while the answer streams.
    await bot.fake.wait_for(lambda: bot.answers(CHANNEL, ev["ts"]))
    placeholder = bot.answers(CHANNEL, ev["ts"])[0]
    bot.fake.delete_message(CHANNEL, placeholder.ts)

    msgs = await bot.final(CHANNEL, ev["ts"])
    assert len(msgs) == 1 and msgs[0].ts != placeholder.ts
    assert msgs[0].visible_text().strip() == bot.dify.answer
    assert any(c.error == "message_not_found" for c in bot.fake.calls_to("chat.update"))


async def test_long_answer_is_split_across_messages_within_slack_limits(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    para = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20).strip()
    code = "```python\n" + "\n".join(f"print({i})" for i in range(200)) + "\n```"
    bot.dify.answer = "\n\n".join([para] * 12 + [code] + [para] * 4)
    bot.dify.chunk_size = 4000

    ev = bot.mention("write a lot")
    await bot.send(ev)
    msgs = await bot.final(CHANNEL, ev["ts"], count=2, timeout=20)

    assert len(msgs) >= 2
    assert not [c for c in bot.fake.calls if c.error in ("msg_too_long", "invalid_blocks")]
    for m in msgs:
        assert m.visible_text().count("```") % 2 == 0, "no part cuts a code block in two"
    joined = "".join(m.visible_text() for m in msgs)
    assert "print(199)" in joined and joined.count("Lorem ipsum") == 16 * 20
    # Buttons only under the last part.
    assert not msgs[0].buttons() and msgs[-1].buttons()


async def test_dify_error_shows_a_readable_message_with_a_reference(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    bot.dify.faults.append(Fault.http(429, "too_many_requests", "Too many requests."))
    bot.dify.faults.append(Fault.http(429, "too_many_requests", "Too many requests."))
    bot.dify.faults.append(Fault.http(429, "too_many_requests", "Too many requests."))

    ev = bot.mention("are you there?")
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"], timeout=20)

    ctx = msg.context_text()
    assert "Reference: `" in ctx
    text = msg.visible_text().lower()
    assert "busy" in text or "try again" in text
    assert "too_many_requests" not in text, "no raw error codes for users"


async def test_answer_streams_natively_when_the_route_enables_it(slack_bot: MakeBot) -> None:
    bot = await slack_bot(
        bridge_yaml="""
routes:
  - name: native
    native_streaming: true
"""
    )
    bot.dify.answer = "Native " + "stream " * 30 + "done."
    bot.dify.chunk_size = 12
    bot.dify.chunk_delay = 0.05

    ev = bot.mention("stream it")
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])

    assert msg.visible_text() == bot.dify.answer
    start = bot.fake.calls_to("chat.startStream")
    assert len(start) == 1 and start[0].params["recipient_user_id"] == "U0USER"
    assert start[0].params["recipient_team_id"] == bot.team.id
    assert bot.fake.calls_to("chat.stopStream")
    assert not bot.fake.calls_to("chat.update"), "no edits: the stream carried the text"
    assert bot.fake.statuses and bot.fake.statuses[0]["status"], "progress shown at once"
    # Agent answers end with Slack's own feedback buttons, not a row of thumbs buttons.
    feedback = msg.feedback_buttons()
    assert feedback is not None and feedback["action_id"] == "dify_feedback"
    assert not bot.fake.contract_errors


async def test_expired_native_stream_falls_back_to_edits(slack_bot: MakeBot) -> None:
    bot = await slack_bot(
        bridge_yaml="""
routes:
  - name: native
    native_streaming: true
"""
    )
    bot.dify.answer = "Slow " + "words " * 40 + "end."
    bot.dify.chunk_size = 10
    bot.dify.chunk_delay = 0.06

    ev = bot.mention("take your time")
    await bot.send(ev)
    await bot.fake.wait_for(lambda: bot.fake.calls_to("chat.startStream", ok_only=True))
    started = bot.fake.bot_messages(CHANNEL, ev["ts"])[0]
    bot.fake.expire_stream(CHANNEL, started.ts)  # Slack ends streams after ~5 minutes

    (msg,) = await bot.final(CHANNEL, ev["ts"])
    assert msg.ts == started.ts, "the same message is finished with chat.update"
    assert msg.visible_text().strip() == bot.dify.answer
    assert bot.fake.calls_to("chat.update", ok_only=True)


async def test_forty_questions_at_once_are_all_answered_without_a_single_429(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    bot.dify.answer = "Answer " + "text " * 40 + "end."
    bot.dify.chunk_size = 20
    bot.dify.chunk_delay = 0.1  # ~1.2 s per answer, all at the same time

    channels = [f"C0TEAM{i}" for i in range(8)]
    events = [
        bot.mention(f"question {n}", channel=channels[n % 8], user=f"U0P{n:04d}") for n in range(40)
    ]
    statuses = await asyncio.gather(*(bot.send(ev) for ev in events))
    assert set(statuses) == {200}

    for ev in events:
        (answer,) = await bot.final(ev["channel"], ev["ts"], timeout=30)
        assert answer.visible_text().strip() == bot.dify.answer
    assert not bot.fake.ratelimited, "the fake enforces Slack's limits: none was hit"
    assert len(bot.fake.calls_to("chat.update")) <= 50, "within one minute's Tier 3 budget"


async def test_without_assistant_status_a_placeholder_message_becomes_the_answer(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    bot.fake.fail_next("assistant.threads.setStatus", "missing_scope")
    bot.dify.first_byte_delay = 0.3

    ev = bot.mention("where is the status?")
    await bot.send(ev)
    await bot.fake.wait_for(lambda: bot.answers(CHANNEL, ev["ts"]))
    (placeholder,) = bot.answers(CHANNEL, ev["ts"])
    assert "Thinking" in placeholder.text

    (answer,) = await bot.final(CHANNEL, ev["ts"])
    assert answer.ts == placeholder.ts, "the placeholder itself turned into the answer"
    assert answer.visible_text().strip() == "You said: where is the status?"


async def test_dify_failing_mid_stream_turns_the_streamed_message_into_the_error(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot(
        bridge_yaml="""
routes:
  - name: native
    native_streaming: true
"""
    )
    bot.dify.answer = "Partial words " * 20
    bot.dify.chunk_size = 10
    bot.dify.chunk_delay = 0.03
    bot.dify.faults.append(Fault.error_event(after_chunks=8))

    ev = bot.mention("this will break")
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])

    assert msg.visible_text().startswith("Partial words"), "what had arrived stays visible"
    assert "Reference: `" in msg.context_text()
    assert bot.fake.calls_to("chat.startStream", ok_only=True)


async def test_streamed_answer_cannot_ping_the_channel(slack_bot: MakeBot) -> None:
    bot = await slack_bot(
        bridge_yaml="""
routes:
  - name: native
    native_streaming: true
"""
    )
    bot.dify.answer = "Hey <!channel> and <@U0BOSS>, " + "read this " * 10
    bot.dify.chunk_size = 3  # the token is cut across deltas
    bot.dify.chunk_delay = 0.01

    ev = bot.mention("prompt injection attempt")
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])
    shown = msg.visible_text()
    assert "<!channel>" not in shown and "<@U0BOSS>" not in shown
    assert shown.replace("\u200b", "") == bot.dify.answer, "nothing else changed"


async def test_slack_server_errors_on_edits_do_not_lose_the_answer(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    bot.dify.answer = "A steady answer " + "word " * 40 + "END"
    bot.dify.chunk_size = 10
    bot.dify.chunk_delay = 0.04
    # Slack has a bad moment: two edits fail with HTTP 500 internal_error.
    bot.fake.fail_next("chat.update", "internal_error", status=500, times=2)

    ev = bot.mention("tell me")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"], timeout=15)

    assert answer.visible_text().rstrip().endswith("END")
    failed = [c for c in bot.fake.calls_to("chat.update") if c.error == "internal_error"]
    assert len(failed) == 2


async def test_the_first_answer_names_the_dify_conversation_and_follow_ups_do_not(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    ev = bot.mention("how do I book travel?")
    await bot.send(ev)
    (first,) = await bot.final(CHANNEL, ev["ts"], timeout=15)
    assert "Dify conversation:" in json.dumps(first.blocks, ensure_ascii=False)
    follow = bot.mention("and hotels?", thread_ts=ev["ts"])
    await bot.send(follow)
    answers = await bot.final(CHANNEL, ev["ts"], count=2, timeout=15)
    assert "Dify conversation:" not in json.dumps(answers[-1].blocks, ensure_ascii=False)


async def test_an_answer_that_opens_with_a_code_block_still_notifies_with_words(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    bot.dify.answer = "```python\nprint('hello')\n```\nThat prints hello."
    bot.dify.chunk_size = 3  # the first words Slack sees are just "```"
    bot.dify.chunk_delay = 0.05
    ev = bot.mention("how do I print?")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    assert "That prints hello." in answer.visible_text()
    posts = bot.fake.calls_to("chat.postMessage", ok_only=True)
    edits = bot.fake.calls_to("chat.update", ok_only=True)
    assert posts
    for call in posts + edits:
        text = call.params.get("text") or ""
        # What a notification or a screen reader gets: words, never a blank or a bare fence.
        assert any(ch.isalnum() for ch in text), text
    assert "That prints hello." in answer.text, "the final fallback is the answer itself"


async def test_a_busy_channel_across_two_replicas_draws_no_429(slack_bot: MakeBot) -> None:
    # Two replicas behind one load balancer share Redis; Slack counts the channel's posts once.
    prefix = "t" + uuid.uuid4().hex[:10]
    one = await slack_bot({"REDIS_KEY_PREFIX": prefix})
    two = await slack_bot({"REDIS_KEY_PREFIX": prefix})
    one.dify.answer = "Short answer."
    events = [one.mention(f"question {n}", user=f"U0P{n:04d}") for n in range(8)]
    statuses = await asyncio.gather(
        *((one if n % 2 else two).send(ev) for n, ev in enumerate(events))
    )
    assert set(statuses) == {200}
    for ev in events:
        (answer,) = await one.final(CHANNEL, ev["ts"], timeout=30)
        assert answer.visible_text().strip() == "Short answer."
    posts = one.fake.calls_to("chat.postMessage")
    assert not one.fake.ratelimited, [(c.method, c.params.get("channel")) for c in posts]
    times = sorted(c.time for c in posts)
    # Paced, not bunched: Slack's burst of three is never used up at once.
    assert all(b - a > 0.5 for a, b in itertools.pairwise(times[2:]))
