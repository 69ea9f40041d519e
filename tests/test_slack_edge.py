"""Slack's requests as they really arrive: in several writes, chunked, large, or malformed.

The client here speaks HTTP/1.1 over a raw socket, so a body can arrive in pieces with pauses
between them (as a proxy or a slow network delivers it) or with chunked transfer encoding.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests import test_slack_support as _support
from tests.fakes.slack_api import sign
from tests.test_slack_support import CHANNEL, SECRET

fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def raw_post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    writes: int = 1,
    chunked: bool = False,
    pause: float = 0.05,
) -> tuple[int, str]:
    """POST ``body`` in ``writes`` separate writes (``pause`` apart); the status and body."""
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, port = host_port.split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    size = -(-len(body) // writes)
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        frames = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces if p] + [b"0\r\n\r\n"]
        # The terminating chunk goes with the last piece: as many writes as asked.
        frames[-2:] = [frames[-2] + frames[-1]] if len(frames) > 1 else frames[-1:]
    else:
        head += f"Content-Length: {len(body)}\r\n\r\n"
        frames = pieces
    writer.write(head.encode())
    for n, frame in enumerate(frames):
        if n:
            await writer.drain()
            await asyncio.sleep(pause)
        writer.write(frame)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


def signed(body: str, **extra: str) -> dict[str, str]:
    headers = sign(SECRET, body)
    headers.update(extra)
    return headers


def padded_mention(bot: Any, text: str, size: int) -> tuple[dict[str, Any], str]:
    """A mention event whose body is about ``size`` bytes (long message text, as when someone
    pastes a log), and that body as Slack would send it."""
    ev = bot.mention(text)
    body = bot.fake.event_body(bot.team, ev)
    data = json.loads(body)
    data["event"]["blocks"] = [{"type": "rich_text", "pad": "x" * max(0, size - len(body))}]
    return ev, json.dumps(data)


@pytest.mark.parametrize(
    ("size", "writes", "chunked"),
    [(300_000, 1, False), (40_000, 2, False), (2_000, 2, True), (60_000, 5, True)],
    ids=["300KB-one-write", "40KB-two-writes", "2KB-chunked-two-writes", "60KB-chunked-five"],
)
async def test_a_signed_mention_is_answered_however_its_body_arrives(
    slack_bot: Any, size: int, writes: int, chunked: bool
) -> None:
    bot = await slack_bot()
    ev, body = padded_mention(bot, "what is in this long paste?", size)
    status, _ = await raw_post(
        bot.events_url, body.encode(), signed(body), writes=writes, chunked=chunked
    )
    assert status == 200
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    assert answer.visible_text().strip() == "You said: what is in this long paste?"


async def test_a_click_on_a_long_answer_arrives_in_pieces_and_still_counts(slack_bot: Any) -> None:
    bot = await slack_bot()
    bot.dify.answer = "A long answer. " * 600  # ~9 KB of blocks come back in the click
    ev = bot.mention("explain everything")
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])
    like = next(b for b in answer.buttons() if b["action_id"] == "dify_like")
    body, headers = bot.fake.interaction(
        bot.fake.block_action(bot.team, answer, like), secret=SECRET
    )
    assert len(body) > 9000
    status, _ = await raw_post(bot.events_url, body.encode(), headers, writes=3, chunked=True)
    assert status == 200
    await bot.fake.wait_for(lambda: "Feedback from <@U0USER>" in answer.context_text())
    (dify_msg,) = bot.dify.messages.values()
    assert dify_msg.feedback and dify_msg.feedback["rating"] == "like"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_gets_413_and_is_never_processed(
    slack_bot: Any, chunked: bool
) -> None:
    bot = await slack_bot({"MAX_BODY_BYTES": "20000"})
    _ev, body = padded_mention(bot, "too big", 30_000)
    status, _ = await raw_post(
        bot.events_url, body.encode(), signed(body), writes=3, chunked=chunked
    )
    assert status == 413
    await bot.idle()
    assert not bot.dify.messages
    assert not bot.fake.calls_to("chat.postMessage")


async def test_a_body_that_stops_arriving_gets_408(
    slack_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.slack import _edge

    monkeypatch.setattr(_edge, "BODY_READ_SECONDS", 0.3)
    bot = await slack_bot()
    body = bot.fake.event_body(bot.team, bot.mention("slow"))
    host_port = bot.service.base_url.removeprefix("http://")
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items())
    writer.write(
        f"POST /slack/events HTTP/1.1\r\nHost: {host_port}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body.encode()[:100]
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 408 " in status_line


def _plain(
    logs: list[MutableMapping[str, Any]], caplog: pytest.LogCaptureFixture
) -> list[MutableMapping[str, Any]]:
    """The refusals logged; fails if anything was logged with a traceback or as an error."""
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not [e for e in logs if e.get("exc_info") or e.get("log_level") == "error"]
    return [e for e in logs if e["event"] == "slack.request_refused"]


@pytest.mark.parametrize(
    ("case", "edit"),
    [
        ("missing timestamp", lambda h: h.pop("X-Slack-Request-Timestamp")),
        ("non-numeric timestamp", lambda h: h.update({"X-Slack-Request-Timestamp": "soon"})),
        ("unicode digits", lambda h: h.update({"X-Slack-Request-Timestamp": "١٧٠٠٠٠٠٠٠٠"})),
        ("non-ASCII signature", lambda h: h.update({"X-Slack-Signature": "v0=ünïcödé"})),
        ("signature of another length", lambda h: h.update({"X-Slack-Signature": "v0=abc"})),
        ("missing signature", lambda h: h.pop("X-Slack-Signature")),
    ],
)
async def test_odd_signature_headers_get_401_with_one_plain_log_line(
    slack_bot: Any, caplog: pytest.LogCaptureFixture, case: str, edit: Any
) -> None:
    bot = await slack_bot()
    ev = bot.mention(f"forged: {case}")
    body = bot.fake.event_body(bot.team, ev)
    headers = signed(body)
    edit(headers)
    # Raw bytes: aiohttp's client would refuse to send a non-ASCII header value itself.
    wire = dict(headers)
    with capture_logs() as logs:
        status, text = await raw_post_latin1(bot.events_url, body.encode(), wire)
        await bot.idle()
    assert status == 401, case
    assert "signature" in text or "timestamp" in text
    (line,) = _plain(logs, caplog)
    assert line["status"] == 401
    assert not bot.dify.messages


async def raw_post_latin1(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """Like :func:`raw_post` in one write, header values sent as UTF-8 bytes as they come."""
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


async def test_a_stale_timestamp_still_gets_401(slack_bot: Any, caplog: Any) -> None:
    bot = await slack_bot()
    body = bot.fake.event_body(bot.team, bot.mention("replayed from last week"))
    headers = sign(SECRET, body, int(time.time()) - 7 * 86400)
    with capture_logs() as logs:
        status, _ = await raw_post(bot.events_url, body.encode(), headers)
    assert status == 401
    (line,) = _plain(logs, caplog)
    assert "old" in line["reason"]


@pytest.mark.parametrize(
    ("case", "body", "content_type"),
    [
        ("invalid JSON", '{"type": "event_callback", "event": {', "application/json"),
        ("event is a string", '{"type": "event_callback", "event": "app_mention"}', None),
        ("event is a list", '{"type": "event_callback", "event": [1, 2]}', None),
        ("event without type", '{"type": "event_callback", "event": {"text": "hi"}}', None),
        ("JSON array", '[{"type": "event_callback"}]', "application/json"),
        ("payload not JSON", "payload=%7Bnot+json", "application/x-www-form-urlencoded"),
        ("payload a list", "payload=%5B1%5D", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_signed_body_of_the_wrong_shape_gets_400_and_one_plain_log_line(
    slack_bot: Any, caplog: pytest.LogCaptureFixture, case: str, body: str, content_type: Any
) -> None:
    bot = await slack_bot()
    headers = signed(body)
    if content_type:
        headers["Content-Type"] = content_type
    with capture_logs() as logs:
        status, _ = await raw_post(bot.events_url, body.encode(), headers, writes=2)
        await bot.idle()
        await asyncio.sleep(0.1)  # a background task would have failed by now
    assert status == 400, case
    (line,) = _plain(logs, caplog)
    assert line["status"] == 400
    assert not [e for e in logs if e["event"] == "task.crashed"]
    # The service goes on answering.
    ev = bot.mention("still there?")
    assert await bot.send(ev) == 200
    await bot.final(CHANNEL, ev["ts"])
