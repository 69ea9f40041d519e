"""Which event loop runs the service: uvloop where it is installed (the default), else asyncio's.

uvloop runs the same asyncio code with its loop, sockets and timers in C; with a thousand answers
streaming it keeps the loop lag well below the pure-Python loop's (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from app.errors import ConfigError

T = TypeVar("T")
KINDS = ("auto", "uvloop", "asyncio")


def loop_factory(kind: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``kind`` (default: the ``EVENT_LOOP`` variable); None = asyncio's own."""
    kind = (kind if kind is not None else os.environ.get("EVENT_LOOP", "auto")).strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"must be one of {', '.join(KINDS)}, not {kind!r}", key="EVENT_LOOP")
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError(
                "uvloop is not installed (pip install uvloop), or set it to auto",
                key="EVENT_LOOP",
            ) from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, kind: str | None = None) -> T:
    """``asyncio.run`` on the configured loop."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)


def name() -> str:
    """The running loop's kind, for logs and benchmark output."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
