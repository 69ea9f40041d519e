"""Answers that would never end, or never stop growing, end in the thread with a clear note:
a Dify that only pings, an answer that streams past its deadline, a connection dropped
mid-answer, an answer too large for the thread. Console replies, real Redis, fake Dify on the
wire."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from adapters.console import CONSOLE_LIMITS, MemoryReply
from tests.fakes.dify import Fault
from tests.test_pipeline import ask, message, new_thread


async def _until(predicate: Any, timeout: float = 3.0) -> None:  # noqa: ASYNC109 - test helper
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the fake's state has no event to wait on
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- item 5: deadlines


async def test_a_dify_that_only_pings_is_given_up_on_and_the_thread_is_told(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.faults.append(Fault.pings(after_chunks=0, interval=0.05))
    svc = await make_service(
        {
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_MAX_RETRIES": "0",
            # Pings every 50 ms satisfy both of the client's own timeouts...
            "DIFY_FIRST_EVENT_TIMEOUT": "0.5",
            "DIFY_IDLE_TIMEOUT": "0.5",
            # ...but not the first-content deadline.
            "DIFY_FIRST_CONTENT_TIMEOUT": "0.6",
        }
    )
    started = time.monotonic()
    reply = await ask(svc, message(new_thread(), "are you there?"))
    assert time.monotonic() - started < 5
    assert reply.final is None
    assert reply.error is not None
    assert "did not start answering in time, so I stopped it" in reply.error
    assert reply.ref
    # Pings carry no task id, so the bridge can only hang up; Dify's hung task runs on.
    await _until(lambda: bool(dify_app.hung))
    assert not [r for r in fake_dify.requests_to("/stop") if r.api_key == dify_app.api_key]


async def test_an_answer_that_streams_past_its_deadline_is_stopped_in_dify_and_keeps_its_text(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "The first words arrive, then the model hangs forever."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.pings(after_chunks=3, interval=0.05))
    yaml = """
routes:
  - name: slow-app
    answer_timeout: 0.8
    dify: {api_key_env: DIFY_API_KEY}
"""
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key, "DIFY_IDLE_TIMEOUT": "0.5"}, bridge_yaml=yaml
    )
    t = new_thread()
    reply = await ask(svc, message(t, "tell me everything"))
    assert reply.final is None and reply.error is not None
    assert reply.error.startswith("The first words")  # what was shown stays...
    assert "took too long, so I stopped it here" in reply.error  # ...with what happened
    # The Dify task was stopped through Dify's stop API, as the thread's user.
    stops = [r for r in fake_dify.requests_to("/stop") if r.api_key == dify_app.api_key]
    assert len(stops) == 1
    assert stops[0].path.startswith("/chat-messages/")
    assert stops[0].json == {"user": t.dify_user()}
    assert dify_app.stopped and not dify_app.hung


async def test_the_deadlines_count_pings_for_nothing_but_real_events_for_the_first_content(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    # A chatflow starts with a ping and workflow events: those are real progress, so a slow
    # but working app is not cut off by the first-content deadline.
    dify_app.mode = "advanced-chat"
    dify_app.answer = "Slow but steady."
    dify_app.chunk_size = 4
    dify_app.chunk_delay = 0.15
    yaml = """
routes:
  - name: flow
    first_content_timeout: 0.3
    dify: {api_key_env: DIFY_API_KEY, mode: advanced-chat}
"""
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=yaml)
    reply = await ask(svc, message(new_thread(), "go"))
    assert reply.error is None
    assert reply.final == "Slow but steady."


async def test_a_stop_click_after_a_deadline_finds_nothing_left_running(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "Some words and then nothing but pings."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.pings(after_chunks=2, interval=0.05))
    svc = await make_service(
        {
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_ANSWER_TIMEOUT": "0.6",
        }
    )
    t = new_thread()
    reply = MemoryReply()
    svc.bridge.submit(message(t, "q"), reply, CONSOLE_LIMITS)
    await asyncio.wait_for(reply.done.wait(), 5)
    assert reply.error is not None and "stopped it here" in reply.error
    assert await svc.bridge.stop(thread=t) is False  # the answer's task is gone from the store


# ---------------------------------------------------------------------- item 6: partial answers


PARTIAL = "may be incomplete"


async def test_an_answer_dify_finished_after_a_dropped_connection_is_shown_whole_with_buttons(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "A complete answer that Dify finished and stored after the drop."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.drop(after_chunks=2, stored="complete"))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.error is None
    assert reply.final == dify_app.answer
    assert reply.extras is not None and not reply.extras.partial
    assert reply.extras.dify_message_id  # feedback buttons have their message id
    assert not any(PARTIAL in n for n in reply.extras.notices)


async def test_an_answer_cut_off_while_dify_was_still_writing_it_is_shown_as_partial(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "Only the start of this answer ever arrives anywhere at all."
    dify_app.chunk_size = 5
    dify_app.suggested_questions = ["More?"]
    dify_app.faults.append(Fault.drop(after_chunks=3, stored="partial"))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.error is None
    assert reply.final == "Only the start "  # what had arrived, nothing invented
    assert reply.extras is not None and reply.extras.partial
    assert any(PARTIAL in n for n in reply.extras.notices)  # a visible note...
    assert reply.extras.dify_message_id is None  # ...no feedback buttons...
    assert reply.extras.suggested == []  # ...and no follow-up suggestions
    assert not [r for r in fake_dify.requests_to("/suggested") if r.api_key == dify_app.api_key]


async def test_an_answer_whose_generation_failed_after_the_drop_is_shown_as_partial(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "Some text, then the model failed behind the scenes."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.drop(after_chunks=4, stored="error"))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.final == "Some text, then the "
    assert reply.extras is not None and reply.extras.partial
    assert reply.extras.dify_message_id is None


async def test_a_drop_where_dify_stored_nothing_shows_what_arrived_as_partial(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    # Dify saves a chat answer only when it ends: a generation that died with the connection
    # leaves an empty answer behind.
    dify_app.answer = "Words that made it before the line went dead."
    dify_app.chunk_size = 6
    dify_app.faults.append(Fault.drop(after_chunks=2, stored="none"))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.final == "Words that m"
    assert reply.extras is not None and reply.extras.partial
    assert any(PARTIAL in n for n in reply.extras.notices)


# ---------------------------------------------------------------------- item 7: huge answers


def _huge(total_chars: int) -> str:
    para = "A paragraph of a very long answer that goes on and on about everything. " * 4
    out = []
    n = 0
    i = 0
    while n < total_chars:
        line = f"{i}. {para}\n\n"
        out.append(line)
        n += len(line)
        i += 1
    return "".join(out)


async def test_a_huge_answer_in_one_event_is_cut_to_the_message_cap_with_a_note(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    # 5 MB in one SSE event, as once flooded a thread with 40+ messages.
    dify_app.answer = _huge(5_000_000)
    dify_app.chunk_size = 10**7
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "MAX_MESSAGES_PER_ANSWER": "3"})
    reply = await ask(svc, message(new_thread(), "tell me everything"))
    assert reply.error is None and reply.final is not None and reply.extras is not None
    cap = 3 * CONSOLE_LIMITS.max_message_chars
    assert all(len(u) <= cap for u in reply.updates)  # never more than the cap on screen
    assert 2 * CONSOLE_LIMITS.max_message_chars < len(reply.final) <= cap
    assert dify_app.answer.startswith(reply.final.rstrip()[:1000])
    # The console cannot attach a file: the answer is cut, and says so.
    assert reply.extras.full_text_file is None
    assert any("longer than 3 messages, so it was cut here" in n for n in reply.extras.notices)
    assert reply.extras.dify_message_id  # a complete answer: feedback still works


async def test_an_answer_that_fits_is_left_alone(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = _huge(150_000)
    dify_app.chunk_size = 10**6
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "MAX_MESSAGES_PER_ANSWER": "3"})
    reply = await ask(svc, message(new_thread(), "q"))
    assert reply.final == dify_app.answer.strip() or reply.final == dify_app.answer
    assert reply.extras is not None and not any("cut" in n for n in reply.extras.notices)


def test_a_cut_answer_splits_back_into_at_most_the_cap_and_never_breaks_a_code_block() -> None:
    from app.pipeline.answer_size import AnswerSize
    from app.render.markdown import split_markdown

    code = "```python\n" + "\n".join(f"print({i})" for i in range(3000)) + "\n```\n\n"
    text = ("Some prose before the code. " * 40 + "\n\n" + code) * 20
    size = AnswerSize(max_chars=5000, max_messages=4)
    shown, cut = size.final(text)
    assert cut
    parts = split_markdown(shown, 5000)
    assert len(parts) <= 4
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert size.final("short")[0] == "short" and not size.final("short")[1]


async def test_the_tokens_of_an_answer_recovered_after_a_drop_are_still_counted(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    # message_end (which carries the usage) never arrived: Dify's stored message has the count.
    from app.state.limits import month_of

    dify_app.answer = "A complete answer that Dify finished and stored after the drop."
    dify_app.chunk_size = 5
    dify_app.faults.append(Fault.drop(after_chunks=2, stored="complete"))
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = await ask(svc, message(new_thread(), "count me", speaker="U9"))
    assert reply.final == dify_app.answer
    stored = next(m for m in dify_app.messages.values() if m.query == "count me")
    rows = await svc.bridge.limiter.usage(month=month_of(time.time()))
    assert [(r.user, r.tokens) for r in rows if r.user == "U9"] == [
        ("U9", stored.message_tokens + stored.answer_tokens)
    ]
