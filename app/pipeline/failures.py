"""How a failed answer reaches the user: a reference to find it in the logs, and a fail that
never raises (the answer is already failing; a second error must not hide the first)."""

from __future__ import annotations

import secrets

import structlog

from app.pipeline.model import Reply

log = structlog.get_logger(__name__)


def new_ref() -> str:
    """A short id shown to the user and logged with the failure, to find one in the other."""
    return secrets.token_hex(4)


async def safe_fail(reply: Reply, message: str, ref: str) -> None:
    """``reply.fail``, with a failure of its own logged instead of raised."""
    try:
        await reply.fail(message, ref=ref)
    except Exception as e:
        log.error("reply.fail_failed", error=type(e).__name__)


__all__ = ["new_ref", "safe_fail"]
