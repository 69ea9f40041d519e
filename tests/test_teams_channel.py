"""Teams channels and group chats: placeholder + edits within Teams' limits, final rendering."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

import pytest
import pytest_asyncio

from adapters.teams import compose
from app.pipeline.model import ReplyExtras
from tests.fakes.bot_connector import FakeBotConnector
from tests.fakes.dify import Fault

pytestmark = pytest.mark.usefixtures("teams_env")


@pytest_asyncio.fixture(loop_scope="session")
async def bot(make_service: Any, connector: FakeBotConnector, dify_app: Any) -> Any:
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    return await make_service(env, adapters=["teams"])


def slow_answer(dify_app: Any, words: int, seconds: float) -> str:
    answer = " ".join(f"word{i}" for i in range(words))
    dify_app.answer = answer
    dify_app.chunk_size = max(1, len(answer) // 20)
    dify_app.chunk_delay = seconds / 20
    return answer


async def ask(bot: Any, connector: FakeBotConnector, text: str) -> dict[str, Any]:
    activity = connector.channel_mention(text)
    status, _, _ = await connector.deliver(bot.base_url, activity)
    assert status == 200
    return activity


def final_shown(connector: FakeBotConnector, tail: str) -> Any:
    """The final answer (it carries the "AI generated" entity) is out and ends with ``tail``."""
    return lambda f: any(
        tail in c.text for c in f.sent() if c.type == "message" and c.body.get("entities")
    )


async def test_channel_answer_grows_by_edits_at_teams_pace(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    answer = slow_answer(dify_app, 120, 3.5)
    await ask(bot, connector, "Explain the travel policy")
    await connector.wait_for(final_shown(connector, answer[-12:]), within=20)
    post, *puts = connector.sent()
    assert post.method == "POST" and post.text == "Thinking…"
    assert puts and all(p.method == "PUT" and p.activity_id == post.response["id"] for p in puts)
    # Interim edits at most every 2 s (1,800 an hour per conversation), never a 429.
    interim = [p.at for p in puts[:-1]]
    assert all(b - a >= 1.9 for a, b in itertools.pairwise(interim))
    assert 2 <= len(puts) <= 6
    assert connector.throttled == 0
    assert answer in puts[-1].text.replace("\\", "")


async def test_rate_limited_edit_waits_for_retry_after(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    answer = slow_answer(dify_app, 120, 3.0)
    connector.fail_next(429, method="PUT", retry_after=1.5, code="ThrottlingRequest")
    await ask(bot, connector, "Explain the travel policy")
    await connector.wait_for(final_shown(connector, answer[-12:]), within=20)
    puts = [c for c in connector.calls if c.method == "PUT"]
    limited = next(i for i, c in enumerate(puts) if c.status == 429)
    # The next edit came only after Retry-After, and was not retried silently in between.
    assert puts[limited + 1].at - puts[limited].at >= 1.45
    assert puts[-1].status == 200 and answer in puts[-1].text.replace("\\", "")


async def test_per_conversation_throttling_never_loses_the_final_answer(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    connector.thread_limits = ((2, 3.0),)  # a much stricter Teams, to force 429s
    answer = slow_answer(dify_app, 60, 2.0)
    await ask(bot, connector, "Explain the travel policy")
    await connector.wait_for(final_shown(connector, answer[-12:]), within=25)
    assert connector.throttled >= 1
    assert connector.calls[-1].status == 200


async def test_long_answer_is_split_under_the_size_limit_never_inside_code(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(600)) + "\n```"
    prose = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(100))
    dify_app.answer = f"{prose}\n\n{code}\n\n{prose}"
    dify_app.chunk_size = 5000
    await ask(bot, connector, "Give me everything")
    await connector.wait_for(
        lambda f: (
            any("Paragraph 99" in c.text for c in f.sent() if c.body.get("entities"))
            and len(f.sent()) >= 3
            and f.calls[-1].body.get("channelData") is not None
        ),
        within=20,
    )
    finals = [c for c in connector.sent() if c.body.get("entities")]
    assert len(finals) >= 3
    for part in finals:
        size = len(json.dumps(part.body, ensure_ascii=False).encode("utf-16-le"))
        assert size < 80_000
        assert part.text.count("```") % 2 == 0
    assert sum(p.text.count("print(") for p in finals) == 600
    # Feedback only on the last part.
    assert [p.body.get("channelData") is not None for p in finals].count(True) == 1
    assert finals[-1].body["channelData"] == {"feedbackLoop": {"type": "default"}}


async def test_dify_failure_is_shown_in_plain_words_with_a_reference(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.faults.append(
        Fault.http(
            400,
            "provider_quota_exceeded",
            "Your quota for Dify Hosted Model Provider has been exhausted.",
        )
    )
    activity = await ask(bot, connector, "Are you there?")
    await connector.wait_for(lambda f: any("Reference:" in c.text for c in f.sent()), within=10)
    post = connector.sent("POST")[0]
    shown = connector.visible_text(post.conversation_id, post.response["id"])
    assert re.search(r"Reference: [0-9a-f]{8}", shown)
    assert "Thinking" not in shown
    assert post.conversation_id == activity["conversation"]["id"]


async def test_deleted_placeholder_is_replaced_by_a_new_message(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.answer = "The policy allows economy class."
    connector.fail_next(404, method="PUT", code="ActivityNotFoundInConversation")
    await ask(bot, connector, "Which class can I fly?")
    await connector.wait_for(final_shown(connector, "economy class"), within=10)
    posts = connector.sent("POST")
    assert len(posts) == 2  # placeholder, then a fresh message for the answer
    assert "economy class" in connector.visible_text(
        posts[1].conversation_id, posts[1].response["id"]
    )


async def test_tables_become_cards_and_sources_become_citations(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    dify_app.answer = (
        "Limits per city:\n\n| City | Hotel |\n|---|---:|\n| Paris | 180 |\n| Tokyo | 150 |\n"
    )
    dify_app.retriever_resources = [
        {
            "position": i + 1,
            "document_name": f"Travel policy chapter {i} " + "with a very long title " * 5,
            "content": "Employees may book hotels up to the city limit. " * 10,
            "score": 0.9,
        }
        for i in range(25)
    ]
    await ask(bot, connector, "Hotel limits?")
    await connector.wait_for(
        lambda f: any(c.body.get("attachments") and c.body.get("entities") for c in f.sent()),
        within=10,
    )
    final = next(
        c for c in connector.sent() if c.body.get("attachments") and c.body.get("entities")
    )
    # One message: the text and one card (the table) as a carousel, never a list that splits.
    (card,) = final.body["attachments"]
    assert final.body["attachmentLayout"] == "carousel"
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["version"] == "1.5"
    assert card["content"]["body"][0]["type"] == "Table"
    (root,) = final.body["entities"]
    assert root["type"] == "https://schema.org/Message"
    assert root["additionalType"] == ["AIGeneratedContent"]
    citations = root["citation"]
    assert len(citations) == 20
    assert all(len(c["appearance"]["name"]) <= 80 for c in citations)
    assert all(len(c["appearance"]["abstract"]) <= 160 for c in citations)
    assert "[1]" in final.text and "[20]" in final.text and "[21]" not in final.text
    assert "|" not in final.text.split("[1]")[0]  # the table is not also sent as text


def test_many_big_tables_each_get_a_message_under_the_size_limit() -> None:
    table = "| City | Note |\n|---|---|\n" + "\n".join(
        f"| City {i} | {'long note ' * 6} |" for i in range(100)
    )
    md = "Here are the limits:\n\n" + "\n\n".join([table] * 5)
    parts = compose.final_parts(
        md, ReplyExtras(dify_message_id="m1"), feedback=True, suggestions=False
    )
    tables = [
        e
        for p in parts
        for a in p.attachments
        for e in a["content"]["body"]
        if e["type"] == "Table"
    ]
    assert len(tables) == 5
    assert all(len(p.attachments) <= 1 for p in parts)  # each part stays one message
    assert all(compose.part_bytes(p) < 80_000 for p in parts)
    assert "(see table below)" in parts[0].text and "|" not in parts[0].text
    # Buttons on the very last message only.
    assert [p.channel_data is not None for p in parts] == [False] * (len(parts) - 1) + [True]


def test_answer_of_emoji_is_split_by_utf16_size_not_characters() -> None:
    parts = compose.final_parts("😀" * 50_000, ReplyExtras(), feedback=False, suggestions=False)
    assert sum(p.text.count("😀") for p in parts) == 50_000
    assert all(compose.part_bytes(p) < 80_000 for p in parts)


async def test_many_answers_at_once_stay_inside_the_tenant_request_limit(
    make_service: Any,
    connector: FakeBotConnector,
    dify_app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A tenant allowed 6 requests a second, and 8 people asking at the same moment.
    connector.tenant_limits = ((6, 1.0),)
    bot = await make_service(
        {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key, "TEAMS_TENANT_RPS": "6"},
        adapters=["teams"],
    )
    answer = slow_answer(dify_app, 30, 1.0)
    questions = [connector.channel_mention(f"Question {i}?") for i in range(8)]
    await asyncio.gather(*(connector.deliver(bot.base_url, q) for q in questions))
    await connector.wait_for(
        lambda f: sum(1 for c in f.sent() if c.body.get("entities")) == 8, within=25
    )
    assert connector.throttled == 0
    for q in questions:
        conv = q["conversation"]["id"]
        shown = [c for c in connector.sent() if c.conversation_id == conv]
        assert answer in shown[-1].text.replace("\\", "")


async def test_bot_connector_server_errors_on_edits_do_not_lose_the_answer(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    answer = slow_answer(dify_app, 80, 2.0)
    connector.fail_next(502, method="PUT", code="BadGateway")
    connector.fail_next(503, method="PUT", code="ServiceUnavailable")
    await ask(bot, connector, "Explain the travel policy")
    await connector.wait_for(final_shown(connector, answer[-12:]), within=20)
    puts = [c for c in connector.calls if c.method == "PUT"]
    assert [c.status for c in puts[:2]] == [502, 503]
    assert puts[-1].status == 200 and answer in puts[-1].text.replace("\\", "")
