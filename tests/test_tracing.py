"""With tracing on, each pipeline step, the Dify call and the platform calls are spans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.server import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)


async def test_an_answer_is_traced_step_by_step(
    make_service: Any, dify_app: Any, spans: InMemorySpanExporter
) -> None:
    dify_app.answer = "secret answer text"
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    reply = MemoryReply()
    msg = IncomingMessage(
        key=ThreadKey("console", "w", "c", "traced"),
        event_id="tr1",
        speaker=Speaker("u"),
        text="my question text",
        kind=Kind.DIRECT,
    )
    await svc.bridge.handle(msg, reply, CONSOLE_LIMITS)
    names = [s.name for s in spans.get_finished_spans()]
    for expected in (
        "bridge.answer",
        "bridge.redact",
        "platform.start",
        "bridge.turn",
        "dify.stream",
        "platform.finish",
    ):
        assert expected in names
    # Attributes carry ids and counts, never message text.
    for s in spans.get_finished_spans():
        for value in (s.attributes or {}).values():
            assert "question text" not in str(value) and "answer text" not in str(value)


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing.configure(None) is False
    with tracing.span("nothing") as s:
        assert s is None
