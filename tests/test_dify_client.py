"""The Dify client against the fake Dify server: streaming, errors, retries, timeouts, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import sys
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

import httpx
import pytest

from app.dify import (
    AgentThought,
    CircuitBreaker,
    ConversationNotFound,
    DifyAuthError,
    DifyBadRequest,
    DifyClient,
    DifyClientPool,
    DifyConnectionError,
    DifyEvent,
    DifyProtocolError,
    DifyQuotaExceeded,
    DifyServerError,
    DifyTimeout,
    DifyTimeouts,
    DifyTooManyRequests,
    MessageEnd,
    MessageFile,
    NodeEvent,
    Ping,
    RetryPolicy,
    StreamError,
    StreamIncomplete,
    TextDelta,
    TextReplace,
    WorkflowFinished,
    WorkflowStarted,
    make_http_client,
)
from app.dify.stream import EventStream, _Pace
from tests.fakes.dify import FakeConversation, FakeDify, Fault

KEY = "app-test-key"
USER = "slack:T1:C1:1712.55"


class Sleeps:
    """Injected ``sleep``: records backoff delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDify]:
    server = FakeDify()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture(params=["aiohttp", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client(request.param)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def aio_http() -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client("aiohttp")
    try:
        yield client
    finally:
        await client.aclose()


def make_client(
    fake: FakeDify,
    http: httpx.AsyncClient,
    *,
    key: str = KEY,
    sleeps: Sleeps | None = None,
    timeouts: DifyTimeouts | None = None,
    retry: RetryPolicy | None = None,
    breaker: CircuitBreaker | None = None,
) -> DifyClient:
    return DifyClient(
        fake.base_url,
        key,
        http=http,
        timeouts=timeouts or DifyTimeouts(connect=2, first_event=5, idle=5, request=5),
        retry=retry or RetryPolicy(),
        breaker=breaker,
        sleep=sleeps or Sleeps(),
        rng=random.Random(7),  # noqa: S311 - deterministic jitter
    )


async def ask(client: DifyClient, query: str = "Hello", **kw: Any) -> list[DifyEvent]:
    kw.setdefault("conversation_id", None)
    kw.setdefault("inputs", {})
    kw.setdefault("user", USER)
    async with aclosing(client.chat_stream(query=query, **kw)) as stream:
        return [ev async for ev in stream]


def text_of(events: list[DifyEvent]) -> str:
    out = ""
    for ev in events:
        if isinstance(ev, TextDelta):
            out += ev.answer
        elif isinstance(ev, TextReplace):
            out = ev.answer
    return out


# ------------------------------------------------------------------ happy paths


async def test_a_question_streams_back_as_text_deltas_ending_with_message_end(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, answer="Hello there! How can I help? 👋", chunk_size=5)
    events = await ask(make_client(fake, http), "Hi bot")
    assert text_of(events) == "Hello there! How can I help? 👋"
    assert isinstance(events[-1], MessageEnd)
    assert sum(isinstance(e, TextDelta) for e in events) == 6
    assert all(e.conversation_id == events[0].conversation_id for e in events)
    sent = fake.requests_to("/chat-messages")[-1]
    assert sent.json["response_mode"] == "streaming"
    assert sent.json["conversation_id"] == ""
    assert sent.json["auto_generate_name"] is False
    assert sent.user == USER
    assert sent.headers["Authorization"] == f"Bearer {KEY}"


async def test_a_paced_stream_reads_a_few_times_per_interval_and_loses_no_word(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    answer = "The quick brown fox jumps over the lazy dog, twice over."
    fake.add_app(KEY, answer=answer, chunk_size=1, chunk_delay=0.01)  # ~0.6 s, 57 events
    client = DifyClient(fake.base_url, KEY, http=aio_http, pace_reads=True)
    stream = client.chat_stream(query="Hi", user=USER, conversation_id=None, inputs={})
    batches: list[list[DifyEvent]] = []
    async with aclosing(stream.batches()) as reads:
        async for batch in reads:
            batches.append(batch)
            if len(batches) == 1:
                stream.pace_reads(0.2)  # as the pipeline does once the first words are shown
    events = [ev for b in batches for ev in b]

    assert text_of(events) == answer
    assert isinstance(events[-1], MessageEnd)
    # Read as they land, 57 events 10 ms apart take dozens of reads; paced, a handful.
    assert len(batches) <= 8, [len(b) for b in batches]
    assert len(batches[0]) < 10  # the first words were not held back


async def test_paced_streams_answering_at_once_read_on_the_same_ticks(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    # Two answers trickling in side by side: paced, each reads on the loop's shared 0.1 s
    # grid, so one wake-up serves both rather than one each at its own moments.
    answer = "word " * 40
    fake.add_app(KEY, answer=answer, chunk_size=5, chunk_delay=0.01)  # ~0.4 s, 40 events
    client = DifyClient(fake.base_url, KEY, http=aio_http, pace_reads=True)
    loop = asyncio.get_running_loop()

    async def read_times() -> tuple[str, list[float]]:
        stream = client.chat_stream(query="Hi", user=USER, conversation_id=None, inputs={})
        events: list[DifyEvent] = []
        times: list[float] = []
        async with aclosing(stream.batches()) as reads:
            async for batch in reads:
                events += batch
                times.append(loop.time())
                stream.pace_reads(0.1)
        return text_of(events), times

    (text_a, times_a), (text_b, times_b) = await asyncio.gather(read_times(), read_times())

    assert text_a == text_b == answer
    # After the first reads (as the data lands), the paced ones fall on multiples of 0.1 s.
    paced = times_a[3:-1] + times_b[3:-1]
    assert paced, (times_a, times_b)
    for t in paced:
        assert (t % 0.1) < 0.03 or (t % 0.1) > 0.097, (t, times_a, times_b)


async def read_asking_for_pace(
    stream: EventStream, seconds: float
) -> tuple[list[DifyEvent], float]:
    """Every event of ``stream``, asking for paced reads after each read; and how long it took."""
    started = time.monotonic()
    events: list[DifyEvent] = []
    async with aclosing(stream.batches()) as reads:
        async for batch in reads:
            events += batch
            stream.pace_reads(seconds)
    return events, time.monotonic() - started


async def test_a_paced_stream_arriving_in_large_reads_is_read_as_it_comes(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    # Ten 5 KB events 30 ms apart: each read is large, so pausing a second after each would
    # only hold the text back (and leave the process idle) without saving a read.
    answer = "".join(chr(ord("a") + i) * 5000 for i in range(10))
    fake.add_app(KEY, answer=answer, chunk_size=5000, chunk_delay=0.03)
    client = DifyClient(fake.base_url, KEY, http=aio_http, pace_reads=True)
    events, seconds = await read_asking_for_pace(
        client.chat_stream(query="Hi", user=USER, conversation_id=None, inputs={}), 1.0
    )

    assert text_of(events) == answer
    assert seconds < 2  # paused after every read: about 10 s


def test_pauses_start_after_two_small_reads_and_end_when_a_read_fills_the_buffer() -> None:
    pace = _Pace(enabled=True)
    pace.saw(300)
    assert not pace.engaged  # one small read: maybe just a burst's first bytes
    pace.saw(9000)
    pace.saw(300)
    assert not pace.engaged  # not two in a row
    pace.saw(300)
    assert pace.engaged  # tokens trickling in: pause between reads
    pace.saw(6000)
    assert pace.engaged  # what a pause gathered: still pacing
    pace.saw(16 * 1024)
    assert not pace.engaged  # a full read: Dify sends faster than the pace reads


async def test_pacing_is_ignored_where_one_read_gives_one_event(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    # httpx's own transport hands over one HTTP chunk (one event) per read: pacing there would
    # read 5 events a second and fall ever further behind Dify, so it stays off.
    answer = "x" * 40
    fake.add_app(KEY, answer=answer, chunk_size=1, chunk_delay=0.01)
    events, seconds = await read_asking_for_pace(
        make_client(fake, http).chat_stream(query="Hi", user=USER, conversation_id=None, inputs={}),
        1.0,
    )

    assert text_of(events) == answer
    assert seconds < 5  # paced at 1 s per read, 40 reads would take 40 s


async def test_a_finished_answer_leaves_nothing_for_the_garbage_collector(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    # With a thousand answers streaming, every object left in a reference cycle waits for a
    # collection that walks them all (pauses of 50-200 ms). An answer's responses, streamed
    # and plain, must be freed the moment they are done with, by reference counting alone.
    fake.add_app(KEY, answer="Hello there, all of you.", chunk_size=4)
    client = make_client(fake, http)
    seen: list[weakref.ref[httpx.Response]] = []

    async def keep(response: httpx.Response) -> None:
        seen.append(weakref.ref(response))

    http.event_hooks["response"].append(keep)
    gc.collect()
    gc.disable()
    try:
        events = await ask(client)
        await client.conversations(user=USER, limit=5)
        alive = [ref() for ref in seen if ref() is not None]
    finally:
        gc.enable()
    assert text_of(events) == "Hello there, all of you."
    assert len(seen) == 2
    assert alive == []


async def test_second_question_in_thread_continues_the_conversation(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    def answer(query: str, conv: FakeConversation) -> str:
        # The conversation holds the earlier turns, not the one being answered.
        return f"turn {len(conv.queries) + 1}: {query}"

    fake.add_app(KEY, answer=answer)
    client = make_client(fake, aio_http)
    first = await ask(client, "one")
    cid = first[0].conversation_id
    assert cid
    second = await ask(client, "two", conversation_id=cid)
    assert text_of(second) == "turn 2: two"
    assert second[-1].conversation_id == cid
    assert fake.requests_to("/chat-messages")[-1].json["conversation_id"] == cid


async def test_someone_else_cannot_continue_a_conversation_they_do_not_own(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY)
    client = make_client(fake, aio_http)
    cid = (await ask(client, "mine"))[0].conversation_id
    assert cid
    with pytest.raises(ConversationNotFound) as info:
        await ask(client, "hijack", conversation_id=cid, user="another-user")
    assert info.value.status == 404 and info.value.code == "not_found"
    assert info.value.message == "Conversation Not Exists."
    assert not info.value.retryable
    assert len(fake.requests_to("/chat-messages")) == 2


async def test_a_deleted_conversation_is_reported_so_the_caller_can_start_a_new_one(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    client = make_client(fake, aio_http)
    cid = (await ask(client))[0].conversation_id
    assert cid
    app.delete_conversation(cid)
    with pytest.raises(ConversationNotFound):
        await ask(client, conversation_id=cid)
    fresh = await ask(client, conversation_id=None)
    assert fresh[0].conversation_id not in (None, cid)


async def test_chatflow_stream_reports_workflow_progress_and_ends_at_message_end(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, mode="advanced-chat", answer="Flow answer", chunk_size=4)
    events = await ask(make_client(fake, http))
    assert isinstance(events[0], Ping)
    assert isinstance(events[1], WorkflowStarted) and events[1].workflow_run_id
    assert any(isinstance(e, NodeEvent) and e.node_type == "llm" for e in events)
    assert text_of(events) == "Flow answer"
    # The stream stops at the first terminal event; workflow_finished is not waited for.
    assert isinstance(events[-1], MessageEnd)
    assert not any(isinstance(e, WorkflowFinished) for e in events)


async def test_agent_tool_steps_arrive_as_thoughts_and_never_mix_into_the_answer(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(
        KEY,
        mode="agent-chat",
        answer="It is 08:00 UTC.",
        agent_thoughts=[
            {"tool": "current_time", "tool_input": '{"tz":"UTC"}', "observation": "08:00"}
        ],
    )
    events = await ask(make_client(fake, aio_http), "What time is it?")
    thoughts = [e for e in events if isinstance(e, AgentThought)]
    assert any(t.tool == "current_time" and t.observation == "08:00" for t in thoughts)
    assert text_of(events) == "It is 08:00 UTC."
    assert isinstance(events[-1], MessageEnd)


async def test_workflow_app_streams_text_chunks_and_ends_with_outputs(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, mode="workflow", answer="Summary done", output_variable="result")
    client = make_client(fake, http)
    async with aclosing(client.workflow_stream(user=USER, inputs={"query": "sum up"})) as s:
        events = [e async for e in s]
    assert text_of(events) == "Summary done"
    done = events[-1]
    assert isinstance(done, WorkflowFinished)
    assert done.status == "succeeded" and done.outputs == {"result": "Summary done"}
    assert fake.requests_to("/workflows/run")[-1].json["inputs"] == {"query": "sum up"}


async def test_completion_app_streams_without_a_conversation(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, mode="completion", answer="Translated.")
    client = make_client(fake, aio_http)
    async with aclosing(client.completion_stream(query="translate", user=USER, inputs={})) as s:
        events = [e async for e in s]
    assert text_of(events) == "Translated."
    assert all(e.conversation_id is None for e in events)
    assert isinstance(events[-1], MessageEnd) and events[-1].message_id


async def test_sources_files_and_moderation_replacement_reach_the_caller(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(
        KEY,
        answer="secret stuff",
        replace_with="This answer was moderated.",
        retriever_resources=[{"position": 1, "document_name": "Handbook.pdf", "score": 0.9}],
        message_files=[{"type": "image", "url": "https://files.example/chart.png"}],
    )
    events = await ask(make_client(fake, aio_http))
    assert text_of(events) == "This answer was moderated."
    files = [e for e in events if isinstance(e, MessageFile)]
    assert files and files[0].url == "https://files.example/chart.png"
    end = events[-1]
    assert isinstance(end, MessageEnd)
    assert end.retriever_resources[0]["document_name"] == "Handbook.pdf"
    assert end.usage["total_tokens"] > 0


# ------------------------------------------------------------- errors, no retry


async def test_an_unknown_api_key_is_an_auth_error_and_is_not_retried(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY)
    sleeps = Sleeps()
    client = make_client(fake, aio_http, key="app-wrong", sleeps=sleeps)
    with pytest.raises(DifyAuthError) as info:
        await ask(client)
    assert info.value.status == 401 and info.value.message == "Access token is invalid"
    assert "administrator" in info.value.user_message
    assert sleeps.delays == [] and len(fake.requests) == 1


async def test_the_plan_quota_is_not_retried_and_says_so(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.faults.append(Fault.http(429, "rate_limit_error", "Rate Limit Error", retry_after=1))
    sleeps = Sleeps()
    with pytest.raises(DifyQuotaExceeded) as info:
        await ask(make_client(fake, aio_http, sleeps=sleeps))
    assert not info.value.retryable
    assert "limit" in info.value.user_message
    assert sleeps.delays == [] and len(fake.requests) == 1


async def test_a_missing_required_input_is_a_bad_request_and_is_not_retried(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(
        KEY,
        user_input_form=[{"text-input": {"variable": "team", "label": "Team", "required": True}}],
    )
    with pytest.raises(DifyBadRequest) as info:
        await ask(make_client(fake, aio_http))
    assert info.value.code == "invalid_param"
    assert info.value.message == "team is required in input form"
    assert len(fake.requests) == 1


async def test_calling_the_wrong_endpoint_for_the_app_mode_names_the_problem(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, mode="workflow")
    fake.add_app("app-chat", mode="chat")
    with pytest.raises(DifyBadRequest) as info:
        await ask(make_client(fake, aio_http))
    assert info.value.code == "not_chat_app"
    chat = make_client(fake, aio_http, key="app-chat")
    with pytest.raises(DifyBadRequest) as info2:
        async with aclosing(chat.completion_stream(query="x", user=USER, inputs={})) as s:
            [e async for e in s]
    assert info2.value.code == "app_unavailable"
    assert "configured" in info2.value.user_message


async def test_an_error_event_mid_stream_is_yielded_last_and_never_retried(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="abcdefghijklmnop", chunk_size=4)
    app.faults.append(Fault.error_event(after_chunks=2))
    sleeps = Sleeps()
    events = await ask(make_client(fake, http, sleeps=sleeps))
    assert text_of(events) == "abcdefgh"
    err = events[-1]
    assert isinstance(err, StreamError)
    assert err.code == "completion_request_error" and err.status == 400
    assert err.task_id is None  # Dify's error events carry no task_id
    assert sleeps.delays == [] and len(fake.requests) == 1


# ----------------------------------------------------------------------- retries


async def test_a_busy_app_is_retried_after_the_time_dify_asks_for(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="finally")
    app.faults.append(Fault.http(429, "too_many_requests", "Too many requests.", retry_after=2))
    sleeps = Sleeps()
    events = await ask(make_client(fake, aio_http, sleeps=sleeps))
    assert text_of(events) == "finally"
    assert sleeps.delays == [2.0]
    assert len(fake.requests_to("/chat-messages")) == 2


async def test_a_retry_after_longer_than_we_are_willing_to_wait_fails_at_once(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.faults.append(Fault.http(429, "too_many_requests", "Too many requests.", retry_after=600))
    sleeps = Sleeps()
    with pytest.raises(DifyTooManyRequests) as info:
        await ask(make_client(fake, aio_http, sleeps=sleeps))
    assert info.value.retry_after == 600
    assert info.value.user_message == "The assistant is busy, try again in a minute."
    assert sleeps.delays == []


async def test_proxy_error_pages_are_retried_with_jittered_exponential_backoff(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="recovered")
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    for _ in range(3):
        app.faults.append(Fault.garbage(html, "text/html", status=502))
    sleeps = Sleeps()
    retry = RetryPolicy(max_retries=3, base_delay=0.5, max_delay=8.0)
    events = await ask(make_client(fake, http, sleeps=sleeps, retry=retry))
    assert text_of(events) == "recovered"
    assert len(sleeps.delays) == 3
    for attempt, delay in enumerate(sleeps.delays):
        assert 0.0 <= delay <= 0.5 * 2**attempt
    assert len(fake.requests_to("/chat-messages")) == 4


async def test_after_the_last_retry_the_server_error_is_raised(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    for _ in range(5):
        app.faults.append(Fault.http(500, "internal_server_error", "Internal Server Error"))
    sleeps = Sleeps()
    with pytest.raises(DifyServerError) as info:
        await ask(make_client(fake, aio_http, sleeps=sleeps, retry=RetryPolicy(max_retries=2)))
    assert info.value.status == 500 and info.value.retryable
    assert len(sleeps.delays) == 2 and len(fake.requests) == 3


async def test_a_connection_dropped_before_any_event_is_retried(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="second try")
    app.faults.append(Fault.drop(after_chunks=0))
    sleeps = Sleeps()
    events = await ask(make_client(fake, http, sleeps=sleeps))
    assert text_of(events) == "second try"
    assert len(sleeps.delays) == 1


async def test_nothing_is_retried_once_text_was_shown(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="The whole answer, stored by Dify.", chunk_size=6)
    app.faults.append(Fault.drop(after_chunks=2))
    sleeps = Sleeps()
    client = make_client(fake, http, sleeps=sleeps)
    seen: list[DifyEvent] = []
    with pytest.raises(StreamIncomplete) as info:
        async with aclosing(
            client.chat_stream(query="q", user=USER, conversation_id=None, inputs={})
        ) as s:
            async for ev in s:
                seen.append(ev)
    assert text_of(seen) == "The whole answer, stored by Dify."[:12]
    err = info.value
    assert err.partial_text == text_of(seen)
    assert err.conversation_id and err.message_id and err.task_id
    assert sleeps.delays == [] and len(fake.requests) == 1
    # Dify kept generating after the disconnect: the stored answer can be recovered.
    recovered = await client.recover_answer(
        conversation_id=err.conversation_id, message_id=err.message_id, user=USER
    )
    assert recovered == "The whole answer, stored by Dify."


async def test_recover_answer_gives_none_for_a_failed_or_unknown_message(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="abcdefgh", chunk_size=2)
    app.faults.append(Fault.error_event(after_chunks=1))
    client = make_client(fake, aio_http)
    events = await ask(client)
    cid, mid = events[0].conversation_id, events[0].message_id
    assert cid and mid
    assert await client.recover_answer(conversation_id=cid, message_id=mid, user=USER) is None
    assert await client.recover_answer(conversation_id=cid, message_id="nope", user=USER) is None
    other = await client.recover_answer(conversation_id=cid, message_id=mid, user="stranger")
    assert other is None


async def test_an_html_page_with_status_200_is_a_protocol_error(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.faults.append(Fault.garbage("<html><body>Login required</body></html>\n", "text/html"))
    sleeps = Sleeps()
    with pytest.raises(DifyProtocolError) as info:
        await ask(make_client(fake, http, sleeps=sleeps))
    assert "event stream" in info.value.message
    assert sleeps.delays == []


async def test_garbage_inside_an_event_stream_is_a_protocol_error(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.faults.append(Fault.garbage(b"data: {broken\n\n", "text/event-stream"))
    with pytest.raises(DifyProtocolError):
        await ask(make_client(fake, aio_http))


# ---------------------------------------------------------------------- timeouts


async def test_a_slow_first_event_times_out_and_the_retry_succeeds(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="quick now")
    app.faults.append(Fault.slow_first_byte(10.0))
    sleeps = Sleeps()
    timeouts = DifyTimeouts(connect=2, first_event=0.3, idle=2, request=2)
    started = time.monotonic()
    events = await ask(make_client(fake, http, sleeps=sleeps, timeouts=timeouts))
    assert text_of(events) == "quick now"
    assert time.monotonic() - started < 5.0  # far less than the 10 s the first try would take
    assert len(sleeps.delays) == 1


async def test_no_first_event_at_all_raises_a_first_event_timeout(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.faults.append(Fault.slow_first_byte(3.0))
    timeouts = DifyTimeouts(connect=2, first_event=0.2, idle=2, request=2)
    retry = RetryPolicy(max_retries=0)
    with pytest.raises(DifyTimeout) as info:
        await ask(make_client(fake, aio_http, timeouts=timeouts, retry=retry))
    assert info.value.phase == "first_event"
    assert "too long" in info.value.user_message


async def test_silence_in_the_middle_of_an_answer_is_an_idle_timeout_with_the_partial_text(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="abcdefghij", chunk_size=3)
    app.faults.append(Fault.stall(after_chunks=2, seconds=10))
    sleeps = Sleeps()
    timeouts = DifyTimeouts(connect=2, first_event=2, idle=0.3, request=2)
    started = time.monotonic()
    with pytest.raises(DifyTimeout) as info:
        await ask(make_client(fake, http, sleeps=sleeps, timeouts=timeouts))
    assert time.monotonic() - started < 5.0  # not the 10 s stall
    assert info.value.phase == "idle" and not info.value.retryable
    assert info.value.partial_text == "abcdef"
    assert info.value.message_id is not None
    assert sleeps.delays == []


async def test_a_server_that_keeps_the_connection_open_after_the_end_does_not_hold_us(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="done", keep_open_seconds=20)
    app.faults.append(Fault.keep_open())
    timeouts = DifyTimeouts(connect=2, first_event=2, idle=10, request=2)
    started = time.monotonic()
    events = await ask(make_client(fake, http, timeouts=timeouts))
    assert isinstance(events[-1], MessageEnd) and text_of(events) == "done"
    assert time.monotonic() - started < 5.0  # the server would hold it for 20 s


async def test_an_unreachable_dify_is_a_connection_error_after_retries(
    aio_http: httpx.AsyncClient,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    client = DifyClient(
        f"http://127.0.0.1:{port}/v1", KEY, http=aio_http, sleep=sleeps, retry=RetryPolicy(2)
    )
    with pytest.raises(DifyConnectionError) as info:
        await ask(client)
    assert info.value.retryable
    assert len(sleeps.delays) == 2
    assert "reached" in info.value.user_message


# ---------------------------------------------------------------- stop & extras


async def test_stopping_a_running_answer_ends_the_stream_with_the_partial_text(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    answer = "word " * 60
    app = fake.add_app(KEY, answer=answer, chunk_size=5, chunk_delay=0.02)
    client = make_client(fake, http)
    events: list[DifyEvent] = []
    async with aclosing(
        client.chat_stream(query="long", user=USER, conversation_id=None, inputs={})
    ) as s:
        async for ev in s:
            events.append(ev)
            if len(events) == 3:
                assert ev.task_id
                await client.stop(ev.task_id, user=USER)
    assert isinstance(events[-1], MessageEnd)
    assert 3 <= len(text_of(events)) // 5 < 60
    assert app.stopped == [events[0].task_id]
    assert [r.path for r in app.requests][-1] == f"/chat-messages/{events[0].task_id}/stop"


async def test_blocking_chat_returns_the_whole_answer(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, answer="All at once")
    fake.add_app("app-agent", mode="agent-chat")
    client = make_client(fake, aio_http)
    body = await client.chat_blocking(query="q", user=USER, conversation_id=None, inputs={})
    assert body["answer"] == "All at once" and body["conversation_id"]
    agent = make_client(fake, aio_http, key="app-agent")
    with pytest.raises(DifyBadRequest) as info:
        await agent.chat_blocking(query="q", user=USER, conversation_id=None, inputs={})
    assert info.value.message == "Agent Chat App does not support blocking mode."


async def test_feedback_and_suggested_questions_for_an_answer(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, suggested_questions=["And then?", "Why?"])
    client = make_client(fake, aio_http)
    mid = (await ask(client))[-1].message_id
    assert mid
    await client.feedback(mid, user=USER, rating="like", content="great")
    assert app.messages[mid].feedback == {"rating": "like", "content": "great"}
    await client.feedback(mid, user=USER, rating=None)
    assert app.messages[mid].feedback is None
    assert await client.suggested(mid, user=USER) == ["And then?", "Why?"]
    app.suggested_questions = None
    assert await client.suggested(mid, user=USER) == []


async def test_app_info_parameters_history_and_conversation_list(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, name="Helpdesk", opening_statement="Hi! Ask me anything.")
    client = make_client(fake, aio_http)
    assert (await client.info())["mode"] == "chat"
    assert (await client.parameters())["opening_statement"] == "Hi! Ask me anything."
    first = await ask(client, "first")
    cid = first[0].conversation_id
    assert cid
    await ask(client, "second", conversation_id=cid)
    history = await client.messages(conversation_id=cid, user=USER)
    assert [m["query"] for m in history] == ["first", "second"]
    convs = await client.conversations(user=USER)
    assert [c["id"] for c in convs] == [cid]
    await client.delete_conversation(cid, user=USER)
    assert await client.conversations(user=USER) == []


async def test_uploaded_file_is_usable_in_the_next_question_of_the_same_user(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    client = make_client(fake, aio_http)
    up = await client.upload_file(
        user=USER, filename="report.pdf", data=b"%PDF-1.4 fake", mime_type="application/pdf"
    )
    assert up["name"] == "report.pdf" and up["size"] == 13
    assert app.uploads[up["id"]].data == b"%PDF-1.4 fake"
    files = [{"type": "document", "transfer_method": "local_file", "upload_file_id": up["id"]}]
    events = await ask(client, "summarise", files=files)
    assert isinstance(events[-1], MessageEnd)
    with pytest.raises(DifyBadRequest) as info:
        await ask(client, "steal", files=files, user="someone-else")
    assert info.value.message == "Invalid upload file"


async def test_voice_messages_are_transcribed_when_the_app_allows_it(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, speech_to_text=True, transcript="what is the weather")
    client = make_client(fake, aio_http)
    text = await client.audio_to_text(
        user=USER, filename="voice.mp3", data=b"ID3fake", mime_type="audio/mp3"
    )
    assert text == "what is the weather"
    app.speech_to_text = False
    with pytest.raises(DifyBadRequest):
        await client.audio_to_text(
            user=USER, filename="voice.mp3", data=b"ID3fake", mime_type="audio/mp3"
        )


async def test_plain_calls_also_retry_on_busy_and_fail_clearly_on_garbage(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.fail_endpoint("info", Fault.http(503, "service_unavailable", "down", retry_after=1))
    app.fail_endpoint("parameters", Fault.garbage("<html>oops</html>", "text/html"))
    sleeps = Sleeps()
    client = make_client(fake, aio_http, sleeps=sleeps)
    assert (await client.info())["name"] == "Fake app"
    assert sleeps.delays == [1.0]
    with pytest.raises(DifyProtocolError):
        await client.parameters()


async def test_bad_arguments_are_refused_before_anything_is_sent(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY)
    client = make_client(fake, aio_http)
    with pytest.raises(ValueError, match="query"):
        client.chat_stream(query="  ", user=USER, conversation_id=None, inputs={})
    with pytest.raises(ValueError, match="user"):
        client.chat_stream(query="q", user="", conversation_id=None, inputs={})
    with pytest.raises(ValueError, match="conversation_id"):
        client.chat_stream(query="q", user=USER, conversation_id="../../etc", inputs={})
    with pytest.raises(ValueError, match="task_id"):
        await client.stop("a/b", user=USER)
    with pytest.raises(ValueError, match="filename"):
        await client.upload_file(user=USER, filename="../x", data=b"x", mime_type="text/plain")
    with pytest.raises(ValueError):
        DifyClient("ftp://x", KEY, http=aio_http)
    assert fake.requests == []


async def test_the_pool_shares_connections_per_url_and_breakers_per_app(fake: FakeDify) -> None:
    fake.add_app(KEY, answer="pooled")
    fake.add_app("app-two")
    pool = DifyClientPool(transport="aiohttp", breaker_failures=2)
    try:
        a = pool.client(fake.base_url, KEY)
        assert pool.client(fake.base_url + "/", KEY) is a
        b = pool.client(fake.base_url, "app-two")
        assert b is not a
        assert pool.breaker(fake.base_url, KEY) is not pool.breaker(fake.base_url, "app-two")
        assert text_of(await ask(a)) == "pooled"
        assert isinstance((await ask(b))[-1], MessageEnd)
    finally:
        await pool.aclose()


async def test_many_concurrent_streams_each_get_their_own_answer(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, answer=lambda q, _c: f"answer to {q}", chunk_size=3)
    client = make_client(fake, aio_http)
    results = await asyncio.gather(*(ask(client, f"q{i}") for i in range(30)))
    assert [text_of(r) for r in results] == [f"answer to q{i}" for i in range(30)]


async def test_a_stream_that_simply_ends_without_a_closing_event_is_incomplete(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    half = (
        'data: {"event":"message","conversation_id":"c-9","message_id":"m-9",'
        '"created_at":1,"task_id":"t-9","id":"m-9","answer":"half an ans"}\n\n'
    )
    app.faults.append(Fault.garbage(half, "text/event-stream"))
    with pytest.raises(StreamIncomplete) as info:
        await ask(make_client(fake, http))
    err = info.value
    assert (err.conversation_id, err.message_id, err.task_id) == ("c-9", "m-9", "t-9")
    assert err.partial_text == "half an ans"
    assert "cut off" in err.user_message


async def test_the_fake_also_runs_as_its_own_process_for_benchmarks_and_manual_tries(
    aio_http: httpx.AsyncClient,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.dify",
        "--port",
        "0",
        "--app",
        "app-wf:workflow",
        "--answer",
        "from another process",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        client = DifyClient(url, "app-wf", http=aio_http)
        async with aclosing(client.workflow_stream(user=USER, inputs={"query": "x"})) as s:
            events = [e async for e in s]
        assert text_of(events) == "from another process"
        assert isinstance(events[-1], WorkflowFinished)
    finally:
        proc.terminate()
        await proc.wait()


async def test_inputs_that_cannot_be_sent_as_json_are_refused_at_call_time(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY)
    client = make_client(fake, aio_http)
    with pytest.raises(ValueError, match="JSON"):
        client.chat_stream(query="q", user=USER, conversation_id=None, inputs={"when": object()})
    assert fake.requests == []


async def test_a_proxy_that_gzips_the_stream_is_understood(
    fake: FakeDify, http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY, answer="compressed but fine ✓", chunk_size=4, gzip=True)
    events = await ask(make_client(fake, http))
    assert text_of(events) == "compressed but fine ✓"
    assert isinstance(events[-1], MessageEnd)


async def test_a_stop_from_someone_who_does_not_own_the_answer_is_ignored_like_dify_does(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="x" * 40, chunk_size=2, chunk_delay=0.01)
    client = make_client(fake, aio_http)
    stream = client.chat_stream(query="q", user=USER, conversation_id=None, inputs={})
    async with aclosing(stream) as s:
        events = []
        async for ev in s:
            events.append(ev)
            if len(events) == 2:
                assert ev.task_id
                await client.stop(ev.task_id, user="not-the-owner")  # answers success anyway
    assert text_of(events) == "x" * 40
    assert app.stopped == []


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_server_that_never_accepts_the_connection_is_a_connect_timeout(
    transport: Literal["aiohttp", "httpx"],
) -> None:
    # A listening socket with a full backlog: the kernel drops further SYNs, so connect hangs.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    http = make_http_client(transport)
    try:
        client = DifyClient(
            f"http://127.0.0.1:{port}/v1",
            KEY,
            http=http,
            timeouts=DifyTimeouts(connect=0.3, first_event=5),
            retry=RetryPolicy(max_retries=0),
        )
        with pytest.raises(DifyTimeout) as info:
            await ask(client)
        assert info.value.phase == "connect" and info.value.retryable
    finally:
        await http.aclose()
        for s in [*fillers, server]:
            s.close()


async def test_an_app_with_its_api_disabled_is_an_auth_problem_for_the_admin(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY)
    app.faults.append(Fault.http(403, "forbidden", "The app's API service has been disabled."))
    with pytest.raises(DifyAuthError) as info:
        await ask(make_client(fake, aio_http))
    assert info.value.status == 403 and not info.value.retryable
    assert "administrator" in info.value.user_message


async def test_conversation_names_follow_auto_generate_name(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(KEY)
    client = make_client(fake, aio_http)
    await ask(client, "Where is the VPN guide?", auto_generate_name=True)
    await ask(client, "unnamed", user="other-thread")
    named = await client.conversations(user=USER)
    assert [c["name"] for c in named] == ["Where is the VPN guide?"]
    plain = await client.conversations(user="other-thread")
    assert [c["name"] for c in plain] == ["New conversation"]


async def test_a_failed_chatflow_run_ends_at_workflow_finished_with_the_error(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    fake.add_app(
        KEY, mode="advanced-chat", workflow_status="failed", workflow_error="LLM node timed out"
    )
    events = await ask(make_client(fake, aio_http))
    done = events[-1]
    assert isinstance(done, WorkflowFinished)
    assert done.status == "failed" and done.error == "LLM node timed out"
    assert not any(isinstance(e, MessageEnd) for e in events)


async def test_more_answers_in_flight_than_aiohttps_default_connection_cap(
    fake: FakeDify, aio_http: httpx.AsyncClient
) -> None:
    app = fake.add_app(KEY, answer="slow and steady", chunk_size=5, chunk_delay=0.3)
    client = make_client(fake, aio_http)
    batch = asyncio.gather(*(ask(client, f"q{i}") for i in range(150)))
    peak = 0
    async with asyncio.timeout(10):
        while peak < 150:
            peak = max(peak, len(app.running))
            await asyncio.sleep(0.01)
    results = await batch
    assert all(text_of(r) == "slow and steady" for r in results)
