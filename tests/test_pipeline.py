"""The pipeline end to end: console messages -> real Redis -> fake Dify on the wire -> a reply."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.pipeline.model import IncomingMessage, Kind, ReplyExtras, Speaker, ThreadKey
from tests.fakes.dify import Fault

THREAD = 0


def new_thread() -> ThreadKey:
    global THREAD
    THREAD += 1
    return ThreadKey("console", "W1", "C1", f"{time.time():.6f}-{THREAD}")


def message(
    thread: ThreadKey, text: str, *, event: str | None = None, speaker: str = "U1"
) -> IncomingMessage:
    return IncomingMessage(
        key=thread,
        event_id=event or f"ev-{time.monotonic_ns()}",
        speaker=Speaker(id=speaker, name=f"User {speaker}"),
        text=text,
        kind=Kind.MENTION,
    )


async def ask(service: Any, msg: IncomingMessage) -> MemoryReply:
    reply = MemoryReply()
    await service.bridge.handle(msg, reply, CONSOLE_LIMITS)
    return reply


def extras(reply: MemoryReply) -> ReplyExtras:
    """What a finished answer carried besides its text."""
    assert reply.extras is not None, "the answer finished"
    return reply.extras


def chat_calls(fake: Any, app: Any) -> list[Any]:
    return [r for r in fake.requests_to("/chat-messages") if r.api_key == app.api_key]


async def test_an_answer_streams_as_growing_edits_and_ends_with_the_full_text(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "The quick brown fox jumps over the lazy dog. " * 4
    dify_app.chunk_size = 4
    dify_app.chunk_delay = 0.02
    yaml = "routes:\n  - name: fast\n    edit_interval: 0.2\n"
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=yaml)
    reply = await ask(svc, message(new_thread(), "tell me about foxes"))
    assert reply.error is None
    assert reply.final == dify_app.answer
    assert reply.events[0] == ("start", CONSOLE_LIMITS.placeholder)
    assert len(reply.updates) >= 2  # it grew while streaming...
    assert all(dify_app.answer.startswith(u) for u in reply.updates)  # ...as prefixes
    assert len(reply.updates) < 45  # ...but not one edit per chunk


async def test_a_follow_up_in_the_thread_continues_the_same_dify_conversation(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    first = await ask(svc, message(t, "first question"))
    second = await ask(svc, message(t, "second question"))
    assert first.final == "You said: first question"
    assert second.final == "You said: second question"
    calls = chat_calls(fake_dify, dify_app)
    assert calls[0].json["conversation_id"] == ""
    assert calls[1].json["conversation_id"] == extras(first).conversation_id != ""
    assert calls[0].json["response_mode"] == "streaming"


async def test_a_second_person_in_the_thread_continues_the_conversation(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    await ask(svc, message(t, "hello", speaker="alice"))
    reply = await ask(svc, message(t, "and me?", speaker="bob"))
    assert reply.error is None
    calls = chat_calls(fake_dify, dify_app)
    # Dify scopes conversations to `user`: the thread is the user, so bob continues alice's.
    assert calls[0].json["user"] == calls[1].json["user"] == t.dify_user()
    assert calls[1].json["conversation_id"] == extras(reply).conversation_id


async def test_a_retried_event_is_answered_once(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    first = await ask(svc, message(t, "once please", event="Ev-retry"))
    again = await ask(svc, message(t, "once please", event="Ev-retry"))
    assert first.final is not None
    assert again.events == []  # nothing at all: no placeholder, no second answer
    assert len(chat_calls(fake_dify, dify_app)) == 1


async def test_two_quick_messages_are_answered_in_order_in_one_conversation(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.chunk_delay = 0.02
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    m1 = message(t, "one")
    m2 = IncomingMessage(
        key=t,
        event_id="ev-two",
        speaker=m1.speaker,
        text="two",
        kind=Kind.THREAD_REPLY,
        received_at=m1.received_at + 0.001,
    )
    r1, r2 = MemoryReply(), MemoryReply()
    # Both arrive at once; the second must wait for the first and continue its conversation.
    svc.bridge.submit(m1, r1, CONSOLE_LIMITS)
    svc.bridge.submit(m2, r2, CONSOLE_LIMITS)
    await asyncio.wait_for(asyncio.gather(r1.done.wait(), r2.done.wait()), 10)
    calls = chat_calls(fake_dify, dify_app)
    assert [c.json["query"] for c in calls] == ["one", "two"]
    assert calls[0].json["conversation_id"] == ""
    assert calls[1].json["conversation_id"] == extras(r1).conversation_id


async def test_a_follow_up_keeps_the_conversation_alive_for_another_full_ttl(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "CONVERSATION_TTL_DAYS": "2"})
    t = new_thread()
    await ask(svc, message(t, "first"))
    conv = svc.store.k(t, "conv")
    # As if the thread had been quiet for a day and a half.
    await svc.store.redis.expire(conv, 12 * 3600)
    await svc.store.redis.hset(conv, "last_used", 1.0)
    second = await ask(svc, message(t, "and again"))
    assert second.error is None
    assert await svc.store.redis.ttl(conv) > 47 * 3600
    assert await svc.store.redis.ttl(svc.store.k(t, "known")) > 47 * 3600
    record = await svc.store.get_conversation(t)
    assert record is not None and record.last_used > time.time() - 60


async def test_a_vanished_conversation_starts_a_new_one_and_says_so(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    first = await ask(svc, message(t, "remember this"))
    dify_app.delete_conversation(extras(first).conversation_id)
    second = await ask(svc, message(t, "still there?"))
    assert second.error is None
    assert second.final == "You said: still there?"
    assert extras(second).conversation_id != extras(first).conversation_id
    assert any("expired" in n for n in extras(second).notices)
    stored = await svc.store.get_conversation(t)
    assert stored.conversation_id == extras(second).conversation_id


async def test_a_stream_that_ends_early_is_recovered_from_dify_history(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "A complete answer that Dify finished and stored."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.drop(after_chunks=2))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.error is None
    assert reply.final == dify_app.answer
    assert fake_dify.requests_to("/messages")  # recovered through GET /messages


async def test_server_errors_are_retried_before_any_text_and_then_answered(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.faults.append(Fault.http(503, "internal_server_error", "busy"))
    dify_app.faults.append(
        Fault.http(429, "too_many_requests", "Too many requests.", retry_after=0.1)
    )
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "DIFY_MAX_RETRIES": "3"})
    reply = await ask(svc, message(new_thread(), "eventually"))
    assert reply.final == "You said: eventually"
    assert len(chat_calls(fake_dify, dify_app)) == 3


async def test_an_error_event_mid_stream_keeps_the_text_shown_and_explains(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "Part one of the answer, then trouble."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.error_event(after_chunks=3))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.final is None
    assert reply.error is not None
    assert reply.error.startswith("Part one of the")
    assert "AI model failed" in reply.error
    assert reply.ref and len(reply.ref) == 8
    assert len(chat_calls(fake_dify, dify_app)) == 1  # never retried after text was shown


async def test_garbage_from_dify_gives_a_readable_error(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.faults.append(Fault.garbage(b"<html><body>502 Bad Gateway</body></html>"))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "DIFY_MAX_RETRIES": "0"})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.error is not None
    assert "could not be read" in reply.error


async def test_the_circuit_breaker_opens_and_answers_with_the_fallback_at_once(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    for _ in range(2):
        dify_app.faults.append(Fault.http(500, "internal_server_error", "boom"))
    svc = await make_service(
        {
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_MAX_RETRIES": "0",
            "BREAKER_FAILURES": "2",
            "BREAKER_RESET_SECONDS": "0.5",
        }
    )
    for _ in range(2):
        failed = await ask(svc, message(new_thread(), "q"))
        assert failed.error is not None
    calls_before = len(chat_calls(fake_dify, dify_app))
    fast = await ask(svc, message(new_thread(), "q"))
    assert fast.error == (
        "The assistant is not available right now. Please try again in a few minutes."
    )
    assert len(chat_calls(fake_dify, dify_app)) == calls_before  # Dify was not called
    await asyncio.sleep(0.6)  # half-open: one trial goes through and closes it
    healed = await ask(svc, message(new_thread(), "q"))
    assert healed.final == "You said: q"


async def test_no_route_for_a_channel_gets_a_readable_message(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    yaml = """
routes:
  - name: only-slack
    match: {platform: slack}
    dify: {api_key_env: DIFY_API_KEY}
"""
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=yaml)
    reply = await ask(svc, message(new_thread(), "anyone?"))
    assert reply.error is not None and "No Dify app is configured" in reply.error


async def test_saying_reset_starts_a_fresh_conversation_in_the_same_thread(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    first = await ask(svc, message(t, "topic A"))
    reset = await ask(svc, message(t, "reset"))
    assert reset.final and "new conversation" in reset.final
    after = await ask(svc, message(t, "topic B"))
    calls = chat_calls(fake_dify, dify_app)
    assert calls[-1].json["conversation_id"] == ""
    assert extras(after).conversation_id != extras(first).conversation_id


async def test_sources_and_suggestions_come_with_the_final_answer(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.retriever_resources = [
        {
            "position": 1,
            "document_name": "Handbook.pdf",
            "content": "Holidays are...",
            "score": 0.9,
            "dataset_name": "HR",
        }
    ]
    dify_app.suggested_questions = ["How many days?", "Who approves?"]
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "holidays?"))
    assert [s.title for s in extras(reply).sources] == ["Handbook.pdf"]
    assert extras(reply).suggested == ["How many days?", "Who approves?"]
    assert extras(reply).dify_message_id


async def test_an_app_with_follow_up_questions_off_is_not_asked_for_them_after_each_answer(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    # Dify's default: "Suggested questions after answer" off; asking would only get a 403.
    dify_app.suggested_questions = None
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "holidays?"))

    def calls(path: str) -> list[Any]:
        return [r for r in fake_dify.requests_to(path) if r.api_key == dify_app.api_key]

    assert reply.final and extras(reply).suggested == []
    assert calls("/parameters")  # what the app offers was read
    assert not calls("/suggested")

    dify_app.suggested_questions = ["Who approves?"]  # switched on in Dify
    svc.bridge.params.clear()  # (the bridge rereads /parameters every few minutes)
    reply = await ask(svc, message(new_thread(), "holidays?"))
    assert extras(reply).suggested == ["Who approves?"]


async def test_a_stop_request_ends_the_answer_with_what_had_arrived(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "word " * 200
    dify_app.chunk_size = 5
    dify_app.chunk_delay = 0.01
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    t = new_thread()
    reply = MemoryReply()
    svc.bridge.submit(message(t, "long one"), reply, CONSOLE_LIMITS)
    await dify_app.wait_running()
    await asyncio.sleep(0.1)
    assert await svc.bridge.stop(thread=t) is True
    await asyncio.wait_for(reply.done.wait(), 5)
    assert reply.extras is not None and reply.extras.stopped
    assert reply.final is not None and 0 < len(reply.final) < len(dify_app.answer)


async def test_message_too_long_is_refused_before_dify(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "MAX_MESSAGE_CHARS": "10"})
    reply = await ask(svc, message(new_thread(), "x" * 11))
    assert reply.error is not None and "too long" in reply.error
    assert chat_calls(fake_dify, dify_app) == []


async def test_dify_silent_before_the_first_byte_gets_a_clear_message_within_the_timeout(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.faults.append(Fault.slow_first_byte(5))
    svc = await make_service(
        {
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_MAX_RETRIES": "0",
            "DIFY_FIRST_EVENT_TIMEOUT": "0.5",
        }
    )
    started = time.monotonic()
    reply = await ask(svc, message(new_thread(), "hello?"))
    assert reply.error is not None and "took too long" in reply.error
    assert time.monotonic() - started < 4  # within the configured timeout, not Dify's 5 s


async def test_a_stream_that_goes_silent_midway_ends_with_the_text_so_far_and_a_message(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "Half of the answer and then silence."
    dify_app.chunk_size = 6
    dify_app.faults.append(Fault.stall(after_chunks=2, seconds=5))
    svc = await make_service(
        {
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_MAX_RETRIES": "0",
            "DIFY_IDLE_TIMEOUT": "0.5",
        }
    )
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.final is None
    assert reply.error is not None
    assert reply.error.startswith("Half of")  # what was shown stays...
    assert "took too long" in reply.error  # ...followed by what happened


async def test_with_one_start_place_a_long_answer_does_not_hold_back_the_next_question(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    # The start gate is held until the first words are shown, not until the answer ends.
    from app.pipeline.admission import StartGate

    long = "A long, slow answer. " * 10
    dify_app.answer = lambda query, conv: long if query == "first question" else "Short one."
    dify_app.chunk_size = 5
    dify_app.chunk_delay = 0.05  # the long answer streams for ~2 s
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    svc.bridge.starts = StartGate(limit=1, hold=30)
    first = asyncio.ensure_future(ask(svc, message(new_thread(), "first question")))
    await asyncio.sleep(0.3)
    second = await asyncio.wait_for(ask(svc, message(new_thread(), "second question")), 15)
    assert not first.done()  # the second answer finished while the first still streams
    assert second.final == "Short one."
    assert (await first).final == long
