"""The SSE decoder turns Dify's byte stream into typed events, however the network splits it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.dify import (
    AgentThought,
    DifyProtocolError,
    MessageEnd,
    MessageFile,
    NodeEvent,
    Other,
    Ping,
    SSEDecoder,
    StreamError,
    TextDelta,
    TextReplace,
    WorkflowFinished,
    WorkflowPaused,
    WorkflowStarted,
    is_terminal,
    parse_event,
)

ENV = {
    "conversation_id": "c-1",
    "message_id": "m-1",
    "created_at": 1760000000,
    "task_id": "t-1",
}


def frame(obj: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


# A realistic chat transcript: Japanese and emoji text, a ping, an unknown event, the end.
TRANSCRIPT = b"".join(
    [
        frame(
            {
                "event": "message",
                **ENV,
                "id": "m-1",
                "answer": "こんにちは",
                "from_variable_selector": None,
            }
        ),
        b"event: ping\n\n",
        frame(
            {
                "event": "message",
                **ENV,
                "id": "m-1",
                "answer": " 👋 there",
                "from_variable_selector": None,
            }
        ),
        frame({"event": "tts_message", **ENV, "audio": "AAAA"}),
        frame(
            {
                "event": "message_replace",
                **ENV,
                "answer": "[redacted]",
                "reason": "output_moderation",
            }
        ),
        frame(
            {
                "event": "message_end",
                **ENV,
                "id": "m-1",
                "metadata": {
                    "annotation_reply": None,
                    "retriever_resources": [{"position": 1, "document_name": "Guide.pdf"}],
                    "usage": {"total_tokens": 30, "total_price": "0.0000086"},
                },
                "files": None,
            }
        ),
    ]
)


def decode_all(chunks: list[bytes]) -> list[object]:
    d = SSEDecoder()
    out: list[object] = []
    for c in chunks:
        out.extend(d.feed(c))
    out.extend(d.close())
    return out


def test_a_whole_chat_transcript_decodes_into_typed_events() -> None:
    events = decode_all([TRANSCRIPT])
    kinds = [type(e) for e in events]
    assert kinds == [TextDelta, Ping, TextDelta, Other, TextReplace, MessageEnd]
    first = events[0]
    assert isinstance(first, TextDelta)
    assert first.answer == "こんにちは"
    assert (first.conversation_id, first.message_id, first.task_id) == ("c-1", "m-1", "t-1")
    end = events[-1]
    assert isinstance(end, MessageEnd) and is_terminal(end)
    assert end.usage["total_tokens"] == 30
    assert end.retriever_resources[0]["document_name"] == "Guide.pdf"
    assert end.files == []
    assert isinstance(events[3], Other) and events[3].event == "tts_message"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=40))
def test_events_are_the_same_however_the_bytes_are_split(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [
        TRANSCRIPT[a:b] for a, b in zip([0, *points], [*points, len(TRANSCRIPT)], strict=True)
    ]
    assert decode_all(chunks) == decode_all([TRANSCRIPT])


def test_every_single_byte_boundary_including_inside_multibyte_characters() -> None:
    whole = decode_all([TRANSCRIPT])
    for i in range(1, len(TRANSCRIPT)):
        assert decode_all([TRANSCRIPT[:i], TRANSCRIPT[i:]]) == whole, f"split at byte {i}"
    assert decode_all([bytes([b]) for b in TRANSCRIPT]) == whole


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=50), st.integers(min_value=1, max_value=7))
def test_any_unicode_answer_survives_byte_by_byte_delivery(text: str, step: int) -> None:
    raw = frame({"event": "message", **ENV, "answer": text})
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
    events = decode_all(chunks)
    assert len(events) == 1
    assert isinstance(events[0], TextDelta) and events[0].answer == text


def test_crlf_and_lone_cr_line_endings_are_understood() -> None:
    lf = decode_all([TRANSCRIPT])
    crlf = TRANSCRIPT.replace(b"\n", b"\r\n")
    cr = TRANSCRIPT.replace(b"\n", b"\r")
    assert decode_all([crlf]) == lf
    assert decode_all([cr]) == lf
    # A CRLF split exactly between CR and LF must not count as two line ends.
    for i in range(1, len(crlf)):
        assert decode_all([crlf[:i], crlf[i:]]) == lf


def test_ping_comments_ids_and_retry_fields_are_tolerated() -> None:
    raw = b": keep-alive comment\nevent: ping\n\nid: 7\nretry: 1000\n" + frame(
        {"event": "message", **ENV, "answer": "ok"}
    )
    events = decode_all([raw])
    assert [type(e) for e in events] == [Ping, TextDelta]


def test_data_split_over_several_lines_is_joined_with_newlines() -> None:
    raw = b'data: {"event":"message",\ndata: "answer":"two lines"}\n\n'
    (ev,) = decode_all([raw])
    assert isinstance(ev, TextDelta) and ev.answer == "two lines"


def test_the_sse_event_field_names_an_event_whose_json_has_no_event_key() -> None:
    (ev,) = decode_all([b'event: message\ndata: {"answer":"x"}\n\n'])
    assert isinstance(ev, TextDelta) and ev.event == "message"


def test_a_final_event_without_its_blank_line_is_flushed_at_close() -> None:
    raw = frame({"event": "message_end", **ENV, "metadata": {}})[:-2]
    d = SSEDecoder()
    assert d.feed(raw) == []
    (ev,) = d.close()
    assert isinstance(ev, MessageEnd)


def test_a_leading_utf8_bom_is_ignored() -> None:
    (ev,) = decode_all([b"\xef\xbb\xbf" + frame({"event": "message", "answer": "x"})])
    assert isinstance(ev, TextDelta)


def test_an_html_error_page_is_a_protocol_error_not_a_hang() -> None:
    d = SSEDecoder()
    with pytest.raises(DifyProtocolError):
        d.feed(b"<html>\n<body>502 Bad Gateway</body>\n</html>\n")


def test_broken_json_is_a_protocol_error_that_keeps_the_good_events_before_it() -> None:
    good = frame({"event": "message", **ENV, "answer": "fine"})
    d = SSEDecoder()
    with pytest.raises(DifyProtocolError) as info:
        d.feed(good + b"data: {not json\n\n")
    events = getattr(info.value, "events", [])
    assert len(events) == 1 and isinstance(events[0], TextDelta)


def test_json_that_is_not_an_object_is_a_protocol_error() -> None:
    with pytest.raises(DifyProtocolError):
        decode_all([b"data: [1,2,3]\n\n"])


def test_an_endless_line_is_refused_instead_of_eating_memory() -> None:
    d = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(DifyProtocolError):
        for _ in range(100):
            d.feed(b"data: " + b"x" * 100)


def test_text_deltas_come_from_message_agent_message_text_chunk_and_the_message_file_quirk() -> (
    None
):
    cases: list[dict[str, Any]] = [
        {"event": "message", "answer": "a"},
        {"event": "agent_message", "answer": "b"},
        {"event": "text_chunk", "task_id": "t", "workflow_run_id": "w", "data": {"text": "c"}},
        # Dify quirk: deltas after an assistant file arrive as message_file with an answer.
        {"event": "message_file", "answer": "d", "from_variable_selector": None},
        # Any future event with a string answer is treated as text too.
        {"event": "some_new_delta", "answer": "e"},
    ]
    answers = []
    for obj in cases:
        ev = parse_event(obj)
        assert isinstance(ev, TextDelta), obj
        answers.append(ev.answer)
    assert answers == ["a", "b", "c", "d", "e"]


def test_replacements_replace_and_never_count_as_deltas() -> None:
    rep = parse_event({"event": "message_replace", "answer": "full", "reason": "output_moderation"})
    wf = parse_event({"event": "text_replace", "data": {"text": "whole"}})
    assert isinstance(rep, TextReplace) and rep.answer == "full"
    assert isinstance(wf, TextReplace) and wf.answer == "whole"
    assert isinstance(parse_event({"event": "message_end", "answer": "x"}), MessageEnd)


def test_agent_thought_and_message_file_fields() -> None:
    th = parse_event(
        {
            "event": "agent_thought",
            **ENV,
            "id": "th1",
            "position": 1,
            "thought": "",
            "observation": None,
            "tool": "current_time",
            "tool_input": '{"tz":"UTC"}',
        }
    )
    assert isinstance(th, AgentThought)
    assert (th.id, th.position, th.tool, th.observation) == ("th1", 1, "current_time", "")
    f = parse_event(
        {
            "event": "message_file",
            "id": "f1",
            "type": "image",
            "url": "https://x/y.png",
            "belongs_to": "assistant",
        }
    )
    assert isinstance(f, MessageFile) and f.url == "https://x/y.png"


def test_workflow_events_carry_run_id_node_phase_and_outputs() -> None:
    started = parse_event({"event": "workflow_started", "task_id": "t", "data": {"id": "run-1"}})
    assert isinstance(started, WorkflowStarted) and started.workflow_run_id == "run-1"
    node = parse_event(
        {
            "event": "node_finished",
            "workflow_run_id": "run-1",
            "data": {"node_id": "llm", "node_type": "llm", "title": "LLM", "status": "succeeded"},
        }
    )
    assert isinstance(node, NodeEvent)
    assert (node.phase, node.node_type, node.status) == ("finished", "llm", "succeeded")
    it = parse_event({"event": "iteration_next", "data": {"node_id": "it"}})
    assert isinstance(it, NodeEvent) and it.phase == "next"
    done = parse_event(
        {
            "event": "workflow_finished",
            "data": {"status": "failed", "outputs": None, "error": "boom"},
        }
    )
    assert isinstance(done, WorkflowFinished) and is_terminal(done)
    assert (done.status, done.outputs, done.error) == ("failed", {}, "boom")
    assert isinstance(parse_event({"event": "workflow_paused", "data": {}}), WorkflowPaused)


def test_error_events_are_terminal_and_give_a_user_message() -> None:
    ev = parse_event(
        {
            "event": "error",
            **ENV,
            "code": "completion_request_error",
            "status": 400,
            "message": "[openai] Rate Limit",
        }
    )
    assert isinstance(ev, StreamError) and is_terminal(ev)
    assert ev.task_id == "t-1"
    err = ev.to_exception()
    assert err.code == "completion_request_error" and err.status == 400
    assert "try again" in err.user_message.lower()
    assert "openai" not in err.user_message


def test_wrongly_typed_fields_degrade_instead_of_crashing() -> None:
    ev = parse_event({"event": "message", "answer": 42, "conversation_id": 7})
    assert isinstance(ev, Other)
    end = parse_event({"event": "message_end", "metadata": "nope", "files": {"x": 1}})
    assert isinstance(end, MessageEnd) and end.usage == {} and end.files == []
    err = parse_event({"event": "error", "status": "503"})
    assert isinstance(err, StreamError) and err.status == 503 and err.code == "unknown_error"


def test_an_object_without_an_event_name_is_a_protocol_error() -> None:
    with pytest.raises(DifyProtocolError):
        parse_event({"answer": "x"})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_arbitrary_bytes_give_events_or_a_protocol_error_never_a_crash(chunks: list[bytes]) -> None:
    d = SSEDecoder(max_event_bytes=4096)
    try:
        for c in chunks:
            d.feed(c)
        d.close()
    except DifyProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["event", "answer", "data", "metadata", "status", "id", "position"]),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
        ),
    )
)
def test_any_json_object_parses_to_an_event_or_a_protocol_error(obj: dict[str, object]) -> None:
    try:
        parse_event(obj)
    except DifyProtocolError:
        assert not isinstance(obj.get("event"), str) or not obj.get("event")
