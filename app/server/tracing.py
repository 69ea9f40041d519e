"""Optional OpenTelemetry traces: one span per pipeline step, Dify call and platform call.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the ``otel`` extra is installed; then
:func:`span` opens real spans. Otherwise it costs one ``is None`` check. Span attributes carry ids
and counts only, never message text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_tracer: Any = None


def configure(endpoint: str | None, *, service_name: str = "dify-bridge") -> bool:
    """Export spans over OTLP/HTTP to ``endpoint``; False (with a log line) if not possible."""
    global _tracer
    if not endpoint:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "otel.unavailable",
            hint="OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed: "
            "pip install 'dify-bridge[otel]'",
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("dify_bridge")
    log.info("otel.enabled", endpoint=url)
    return True


def use_provider(provider: Any) -> None:
    """Send spans to an already built ``TracerProvider`` (tests, embedding); None turns off."""
    global _tracer
    _tracer = provider.get_tracer("dify_bridge") if provider is not None else None


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` when tracing is on, else nothing."""
    if _tracer is None:
        yield None
        return
    clean = {k: v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
    with _tracer.start_as_current_span(name, attributes=clean) as s:
        yield s
