"""A huge answer in a Teams channel: at most the configured number of messages, cut with a note
(a bot cannot put a file into a Teams channel without Graph permissions)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.bot_connector import FakeBotConnector
from tests.test_answer_bounds import _huge

pytestmark = pytest.mark.usefixtures("teams_env")


async def test_a_huge_answer_fills_at_most_the_cap_and_says_it_was_cut(
    make_service: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    bot = await make_service(
        {
            **connector.service_env(),
            "DIFY_API_KEY": dify_app.api_key,
            "MAX_MESSAGES_PER_ANSWER": "2",
        },
        adapters=["teams"],
    )
    dify_app.answer = _huge(1_000_000)
    dify_app.chunk_size = 10**7  # one event
    status, _, _ = await connector.deliver(bot.base_url, connector.channel_mention("everything"))
    assert status == 200
    await connector.wait_for(
        lambda f: any("cut here" in c.text for c in f.sent() if c.body.get("entities")),
        within=30,
    )
    posts = connector.sent("POST")
    assert len(posts) <= 2  # never more messages than the cap, streaming included
    finals = [c for c in connector.sent() if c.body.get("entities")]
    assert 1 <= len(finals) <= 2
    assert "longer than 2 messages, so it was cut here" in finals[-1].text
