"""What a finished chat answer brings besides its text, read from Dify after the stream.

Each lookup may fail without touching the answer: the answer stands without it.
"""

from __future__ import annotations

import asyncio

import structlog

from app.dify.client import DifyClient
from app.dify.errors import DifyError, DifyStreamError
from app.dify.events import StreamError

log = structlog.get_logger(__name__)

# Dify's name for a conversation it has not (yet) named.
_DEFAULT_NAME = "New conversation"


async def suggested(client: DifyClient, message_id: str, user: str) -> list[str]:
    """Up to five follow-up questions; [] when the app has them off or Dify is unavailable."""
    try:
        return (await client.suggested(message_id, user=user))[:5]
    except DifyError:
        return []


async def conversation_name(client: DifyClient, conversation_id: str, user: str) -> str:
    """Dify's (auto-generated) name of a conversation; "" when unknown or still the default."""
    try:
        items = await client.conversations(user=user, limit=5)
    except DifyError as e:
        log.info("dify.conversation_name_unavailable", error=type(e).__name__)
        return ""
    for item in items:
        if item.get("id") == conversation_id:
            name = item.get("name")
            if isinstance(name, str) and name.strip() and name != _DEFAULT_NAME:
                return name.strip()[:200]
    return ""


async def chat_extras(
    client: DifyClient,
    *,
    user: str,
    message_id: str,
    conversation_id: str | None,
    want_suggested: bool,
    want_name: bool,
) -> tuple[list[str], str]:
    """Suggested follow-ups and (first answer of a conversation only) its name, side by side."""

    async def none_list() -> list[str]:
        return []

    async def none_name() -> str:
        return ""

    follow_ups, name = await asyncio.gather(
        suggested(client, message_id, user) if want_suggested else none_list(),
        conversation_name(client, conversation_id, user)
        if want_name and conversation_id
        else none_name(),
    )
    return follow_ups, name


def stream_error(ev: StreamError) -> DifyError:
    """An ``error`` event as the exception the failure path expects."""
    return DifyStreamError(ev.message, status=ev.status, code=ev.code)


__all__ = ["chat_extras", "conversation_name", "stream_error", "suggested"]
