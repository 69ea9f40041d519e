"""Logs never carry message text, personal data or tokens, and carry correlation ids."""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.server import logs
from tests import test_slack_support as _support
from tests.fakes.bot_connector import FakeBotConnector
from tests.test_slack_support import CHANNEL

PII = [
    "jane.doe@example.com",
    "+81 90-1234-5678",
    "4111 1111 1111 1111",
    "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The service's real log configuration (JSON, DEBUG), writing into a buffer we can scan."""
    buffer = io.StringIO()
    logs.configure("DEBUG", "json", stream=buffer)
    yield buffer
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


async def test_personal_data_and_tokens_never_reach_the_logs(
    make_service: Any, dify_app: Any, json_logs: io.StringIO
) -> None:
    # Dify echoes the (redacted) question; the redaction mode is off for one route to prove the
    # log scrubber is a second line of defence even when text is sent unredacted.
    dify_app.answer = lambda q, conv: f"Echo: {q}"
    yaml = "routes:\n  - name: open\n    redaction: {mode: 'off'}\n"
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key, "LOG_LEVEL": "DEBUG"}, bridge_yaml=yaml
    )
    thread = ThreadKey("console", "w", "c", uuid.uuid4().hex)
    reply = MemoryReply()
    msg = IncomingMessage(
        key=thread,
        event_id="log-1",
        speaker=Speaker("U1", "Jane"),
        text="Contact " + " and ".join(PII),
        kind=Kind.DIRECT,
    )
    await svc.bridge.handle(msg, reply, CONSOLE_LIMITS)
    # A logger that is handed PII by mistake is scrubbed too.
    careless = structlog.get_logger("careless")
    careless.info("oops", detail="mail jane.doe@example.com", nested={"k": [PII[3]]})
    text = err = json_logs.getvalue()
    assert reply.final is not None
    assert "jane.doe@example.com" in reply.final  # the user still sees it
    for secret in PII:
        assert secret not in text, secret
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    received = [e for e in events if e.get("event") == "message.received"]
    assert received and received[0]["event_id"] == "log-1"
    assert received[0]["thread"] == thread.log_id  # a hash, not the raw thread id
    finished = [e for e in events if e.get("event") == "answer.finished"]
    assert finished and "dify_task" in finished[0] and "ref" in finished[0]


fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def test_slack_messages_with_personal_data_leave_no_trace_in_the_logs(
    slack_bot: Any, json_logs: io.StringIO
) -> None:
    bot = await slack_bot()
    bot.dify.answer = lambda q, conv: f"Echo: {q}"
    ev = bot.mention("mail " + " and ".join(PII))
    await bot.send(ev)
    await bot.final(CHANNEL, ev["ts"], timeout=15)
    text = json_logs.getvalue()
    assert '"message.received"' in text and '"platform": "slack"' in text
    for secret in PII:
        assert secret not in text, secret
    # The bot token used for every Web API call never appears either.
    assert bot.team.bot_token not in text


async def test_teams_messages_with_personal_data_leave_no_trace_in_the_logs(
    make_service: Any, dify_app: Any, json_logs: io.StringIO
) -> None:
    connector = FakeBotConnector()
    await connector.start()
    try:
        os.environ["MICROSOFT_TOKEN_URL"] = connector.token_url
        dify_app.answer = lambda q, conv: f"Echo: {q}"
        bot = await make_service(
            {**connector.service_env(), "DIFY_API_KEY": dify_app.api_key}, adapters=["teams"]
        )
        activity = connector.channel_mention("mail " + " and ".join(PII))
        status, _, _ = await connector.deliver(bot.base_url, activity)
        assert status == 200
        await connector.wait_for(
            lambda f: any("Echo" in (c.text or "") for c in f.sent()), within=15
        )
        text = json_logs.getvalue()
        assert '"platform": "teams"' in text
        for secret in PII:
            assert secret not in text, secret
    finally:
        os.environ.pop("MICROSOFT_TOKEN_URL", None)
        await connector.stop()
