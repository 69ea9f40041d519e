"""structlog set-up: JSON or console, contextvars for correlation ids, redaction as last defence.

Message text and tokens are never passed to a log call; the scrubbing processor (from the
redaction package) is the safety net behind that rule, so it runs last before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog


def _scrubber() -> Any:
    try:
        from app.redact import scrub_processor
    except ImportError:  # redaction package not importable: keep logging rather than crash
        return None
    return scrub_processor


def _drop_color_message(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    event_dict.pop("color_message", None)
    return event_dict


# Third-party loggers can include payloads at DEBUG; they stay at WARNING unless asked for more.
# Adapters add their SDKs' loggers with :func:`quiet`.
_QUIET: set[str] = {"aiohttp.access", "httpx", "redis", "markdown_it"}


def quiet(*loggers: str) -> None:
    """Keep these third-party loggers at WARNING or above, now and after every :func:`configure`."""
    _QUIET.update(loggers)
    for name in loggers:
        _quiet(name)


def _quiet(name: str) -> None:
    logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def configure(
    level: str = "INFO", fmt: str = "json", stream: TextIO | None = None, *, cache: bool = False
) -> None:
    """Configure structlog and route stdlib logging (aiohttp, the platforms' SDKs) through it.

    Everything goes to ``stream`` (default: stderr). ``cache``: the service configures once
    and for good, so each module's logger is built on first use and kept (a disabled level
    then costs nothing per call; uncached, every call rebuilds the bound logger). Left off
    where logging may be reconfigured later in the same process (tests)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _drop_color_message,
    ]
    scrub = _scrubber()
    if scrub is not None:
        shared.append(scrub)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _QUIET:
        _quiet(noisy)
