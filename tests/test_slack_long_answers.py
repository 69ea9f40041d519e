"""A huge answer in Slack: at most the configured number of messages, the rest as a file."""

from __future__ import annotations

from tests import test_slack_support as _support
from tests.test_answer_bounds import _huge
from tests.test_slack_support import CHANNEL, MakeBot

fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def test_a_5_mb_answer_fills_at_most_the_cap_and_comes_whole_as_a_file(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot({"MAX_MESSAGES_PER_ANSWER": "4"})
    bot.dify.answer = _huge(5_000_000)
    bot.dify.chunk_size = 10**7  # one event
    ev = bot.mention("tell me everything")
    await bot.send(ev)
    await bot.final(CHANNEL, ev["ts"], timeout=60)
    await bot.fake.wait_for(lambda: any(u.completed for u in bot.fake.uploads.values()), timeout=30)

    msgs = bot.answers(CHANNEL, ev["ts"])
    answer = [m for m in msgs if not m.files]
    assert 1 <= len(answer) <= 4
    assert [m for m in msgs if m.files] == [msgs[-1]]  # the file comes after the answer
    posted = [
        c for c in bot.fake.calls_to("chat.postMessage") if c.params.get("thread_ts") == ev["ts"]
    ]
    assert len(posted) <= 4  # never more, not even while streaming
    (up,) = bot.fake.uploads.values()
    assert up.completed and up.channel == CHANNEL and up.thread_ts == ev["ts"]
    assert up.name == "answer.md"
    assert up.data.decode() == bot.dify.answer.strip() or up.data.decode() == bot.dify.answer
    assert "attached as a file" in answer[-1].context_text()
