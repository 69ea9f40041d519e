"""The structlog processor scrubs what slips into log events, nested values too."""

from __future__ import annotations

import json

import structlog

from app.redact import scrub_processor


def render(**event: object) -> dict[str, object]:
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            structlog.processors.format_exc_info,
            scrub_processor,
            structlog.processors.JSONRenderer(),
        ],
    )
    line: dict[str, object] = json.loads(logger.info("evt", **event))
    return line


def test_log_line_quoting_user_input_is_scrubbed() -> None:
    out = render(detail="user said: mail me at bob@example.com or 090-1234-5678")
    assert out["detail"] == "user said: mail me at [EMAIL] or [PHONE]"
    assert out["event"] == "evt"


def test_nested_dicts_lists_and_tuples_are_scrubbed_without_touching_the_caller_objects() -> None:
    payload = {
        "inputs": {"email": "carol@example.com", "n": 3},
        "history": ["call 03-1234-5678", ("token", "xoxb-1234567890-abcdefghijKLMNOP")],
        "url": "postgres://admin:s3cr3t@db/app",
    }
    out = render(payload=payload)
    assert out["payload"] == {
        "inputs": {"email": "[EMAIL]", "n": 3},
        "history": ["call [PHONE]", ["token", "[SECRET]"]],
        "url": "postgres://[URL_CREDENTIALS]@db/app",
    }
    assert payload["inputs"] == {"email": "carol@example.com", "n": 3}  # caller's dict unchanged


def test_card_number_logged_as_an_int_is_scrubbed_but_ordinary_numbers_are_kept() -> None:
    out = render(card=4111111111111111, status=200, latency_ms=12.5, ok=True, none=None)
    assert out == {"card": "[CREDIT_CARD]", "status": 200, "latency_ms": 12.5, "ok": True,
                   "none": None, "event": "evt"}  # fmt: skip


def test_exception_text_is_scrubbed_after_formatting() -> None:
    try:
        raise ValueError("bad address dave@example.com")
    except ValueError:
        out = render(exc_info=True)
    assert "dave@example.com" not in str(out["exception"])
    assert "[EMAIL]" in str(out["exception"])


def test_ids_timestamps_and_hashes_in_logs_stay_readable() -> None:
    event = {
        "thread": "3f2a9c1e4b5d6f7a8b9c0d1e",
        "ts": "2026-11-23T10:15:30.123Z",
        "slack_ts": "1732345678.123456",
        "request_id": "123e4567-e89b-12d3-a456-426614174000",
        "user": "U0123ABCD",
    }
    out = render(**event)
    assert {k: out[k] for k in event} == event


def test_deeply_nested_values_do_not_recurse_forever() -> None:
    deep: dict[str, object] = {"v": "erin@example.com"}
    for _ in range(50):
        deep = {"d": deep}
    out = render(deep=deep)
    assert isinstance(out["deep"], dict)
