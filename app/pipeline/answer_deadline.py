"""Deadlines on one streamed answer that Dify's keep-alive pings cannot satisfy.

The Dify client's own timeouts (first event, idle) count every SSE event, pings included, and
Dify pings every 10 s for as long as its task lives (up to ``APP_MAX_EXECUTION_TIME``, 20 minutes
by default). A task that hangs therefore keeps a user watching a status line for 20 minutes. Two
bounds close that gap:

* ``first_content``: from the request to the first event that is not a ping (text, a workflow
  or node step, an agent thought, any event Dify sends for a reason);
* ``answer``: from the request to the end of the answer, whatever arrives meanwhile.

Either one raises :class:`~app.dify.errors.DifyTimeout` (phase ``first_content`` or ``answer``);
the pipeline then stops the Dify task and tells the thread.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from app.dify.errors import DifyTimeout
from app.dify.events import DifyEvent, Ping


class StreamDeadline:
    """``async with StreamDeadline(first_content=..., answer=...) as d:`` around the reading of
    one stream; call :meth:`saw` with every event. Both bounds count from construction."""

    __slots__ = ("_answer_at", "_cm", "content_started")

    def __init__(self, *, first_content: float, answer: float) -> None:
        now = asyncio.get_running_loop().time()
        self._answer_at = now + answer
        self.content_started = False
        self._cm = asyncio.timeout_at(min(now + first_content, self._answer_at))

    async def __aenter__(self) -> StreamDeadline:
        await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._cm.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if self.content_started:
                raise DifyTimeout(phase="answer") from None
            raise DifyTimeout(phase="first_content") from None

    def saw(self, ev: DifyEvent) -> None:
        """Note one event: the first that is not a ping moves the bound to the answer's end."""
        if not self.content_started and type(ev) is not Ping:
            self.content_started = True
            self._cm.reschedule(self._answer_at)


__all__ = ["StreamDeadline"]
