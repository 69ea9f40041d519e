"""Teams 1:1 chats: answers stream with Teams' streaming protocol, and survive its limits."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import pytest_asyncio

from tests.fakes.bot_connector import Call, FakeBotConnector

pytestmark = pytest.mark.usefixtures("teams_env")


@pytest_asyncio.fixture(loop_scope="session")
async def bot(make_service: Any, connector: FakeBotConnector, dify_app: Any) -> Any:
    env = {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}
    return await make_service(env, adapters=["teams"])


def teams_adapter(service: Any) -> Any:
    return next(a for a in service.adapters if a.name == "teams")


def slow_answer(dify_app: Any, words: int, seconds: float) -> str:
    answer = " ".join(f"word{i}" for i in range(words))
    dify_app.answer = answer
    dify_app.chunk_size = max(1, len(answer) // 20)
    dify_app.chunk_delay = seconds / 20
    return answer


def stream_calls(connector: FakeBotConnector) -> list[Call]:
    return [c for c in connector.calls if c.streaminfo is not None]


async def test_personal_answer_streams_informative_then_updates_then_final(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    answer = slow_answer(dify_app, 60, 2.5)
    activity = connector.personal("Explain the expense process")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(lambda f: any(c.stream_type == "final" for c in f.calls), within=15)
    calls = stream_calls(connector)
    assert all(200 <= c.status < 300 for c in calls), connector.describe()
    first, *updates, final = calls
    # 1. informative typing; its 201 carries the stream id.
    assert first.type == "typing" and first.stream_type == "informative"
    assert first.streaminfo == {
        "type": "streaminfo",
        "streamType": "informative",
        "streamSequence": 1,
    }
    assert first.status == 201
    stream_id = first.response["id"]
    # 2. streaming typing updates: same stream, sequence + 1 each, growing full text.
    assert len(updates) >= 1
    for n, c in enumerate(updates, start=2):
        assert c.type == "typing" and c.stream_type == "streaming"
        assert c.streaminfo == {
            "type": "streaminfo",
            "streamType": "streaming",
            "streamSequence": n,
            "streamId": stream_id,
        }
        assert c.status == 202
    texts = [c.text for c in updates]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # each extends the last
    assert answer.startswith(texts[-1])
    # At most one streaming request per second.
    times = [c.at for c in calls]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))
    # 3. the final message: no sequence, same id, the whole answer, AI label and feedback.
    assert final.type == "message"
    assert final.streaminfo == {"type": "streaminfo", "streamType": "final", "streamId": stream_id}
    assert final.text.startswith(answer.replace("_", "\\_")[:40]) or answer in final.text
    assert any(
        "AIGeneratedContent" in (e.get("additionalType") or []) for e in final.body["entities"]
    )
    assert final.body["channelData"] == {"feedbackLoop": {"type": "default"}}
    assert final.body["conversation"]["id"] == activity["conversation"]["id"]


async def test_user_pressing_stop_stops_the_dify_answer(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    slow_answer(dify_app, 200, 20.0)
    activity = connector.personal("Write me a long essay")
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(
        lambda f: any(c.stream_type == "streaming" and c.status == 202 for c in f.calls), within=10
    )
    connector.cancel_streams = True  # the user pressed Stop in Teams
    await connector.wait_for(lambda f: any(c.status == 403 for c in f.calls), within=10)
    await connector.wait_for(lambda f: bool(dify_app.stopped), within=10)
    assert len(dify_app.stopped) == 1
    refused_at = next(i for i, c in enumerate(connector.calls) if c.status == 403)
    await connector.wait_for(lambda f: not dify_app.running, within=10)
    # Nothing more is streamed or posted into the cancelled stream.
    assert [c for c in connector.calls[refused_at + 1 :] if c.status < 300] == []


async def test_stream_nearing_the_two_minute_limit_continues_as_edits(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    teams_adapter(bot).stream_window = 1.5  # stands in for Teams' 2 minutes
    answer = slow_answer(dify_app, 80, 3.5)
    await connector.deliver(bot.base_url, connector.personal("Tell me everything"))
    await connector.wait_for(
        lambda f: any(c.method == "PUT" and answer[-10:] in c.text for c in f.calls), within=20
    )
    final = next(c for c in connector.calls if c.stream_type == "final")
    stream_id = stream_calls(connector)[0].response["id"]
    puts = connector.sent("PUT")
    assert puts and all(p.activity_id == stream_id for p in puts)
    assert final.at - stream_calls(connector)[0].at < 3.5
    assert not any(c.stream_type == "streaming" for c in connector.calls if c.at > final.at)


async def test_streaming_refused_in_the_chat_falls_back_to_edits(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    # A chat Teams reports as personal but where streaming is refused (405).
    activity = connector.personal("hello", chat="19:legacy-1on1@unq.gbl.spaces")
    dify_app.answer = "Hi! How can I help?"
    await connector.deliver(bot.base_url, activity)
    await connector.wait_for(lambda f: any("How can I help" in c.text for c in f.sent()))
    assert connector.calls[0].status == 405
    placeholder = connector.sent("POST")[0]
    assert placeholder.type == "message" and placeholder.stream_type is None
    assert connector.visible_text(
        placeholder.conversation_id, placeholder.response["id"]
    ).startswith("Hi! How can I help?")


async def test_rewritten_answer_waits_for_the_final_message_instead_of_breaking_the_stream(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    slow_answer(dify_app, 40, 2.5)
    dify_app.replace_with = "A corrected answer, replacing what streamed."
    await connector.deliver(bot.base_url, connector.personal("Explain the expense process"))
    await connector.wait_for(lambda f: any(c.stream_type == "final" for c in f.calls), within=15)
    assert all(c.status < 300 for c in connector.calls), connector.describe()
    final = next(c for c in connector.calls if c.stream_type == "final")
    assert final.text.startswith("A corrected answer, replacing what streamed.")


async def test_stream_ended_by_teams_continues_in_a_second_message(
    bot: Any, connector: FakeBotConnector, dify_app: Any
) -> None:
    answer = slow_answer(dify_app, 60, 2.0)
    await connector.deliver(bot.base_url, connector.personal("Tell me everything"))
    await connector.wait_for(lambda f: any(c.stream_type == "informative" for c in f.sent()))
    # Teams ends the stream on its own (time or size), not the user.
    connector.fail_next(
        403, method="POST", code="ContentStreamNotAllowed", message="Stream time exceeded"
    )
    await connector.wait_for(
        lambda f: any(c.body.get("entities") and c.type == "message" for c in f.sent()),
        within=15,
    )
    assert not dify_app.stopped  # the answer went on
    final = next(c for c in connector.sent() if c.type == "message" and c.body.get("entities"))
    stream_id = stream_calls(connector)[0].response["id"]
    assert final.stream_type is None and final.activity_id != stream_id
    assert answer.split()[-1] in final.text
    assert not any(c.stream_type == "final" for c in connector.calls)
