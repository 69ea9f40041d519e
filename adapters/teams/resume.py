"""Closing an answer whose replica died, from the resume token its reply handle saved.

The token (``EditReply.resume_token``) holds the conversation reference and, once posted, the
placeholder's activity id; another replica reads it back here and ends the answer with ``text``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import structlog

from adapters.teams import _sdk
from adapters.teams.connector import BotConnector
from app.errors import PlatformError

log = structlog.get_logger(__name__)


async def close_answer(connector: BotConnector, token: Mapping[str, str], text: str) -> None:
    """Edit the answer's placeholder to ``text``, else post ``text`` in its chat."""
    service_url, conv_id = token.get("service_url", ""), token.get("conversation_id", "")
    tenant = token.get("tenant", "")
    if not service_url or not conv_id:
        return
    reply_to = token.get("reply_to_id") or None
    base = _sdk.base_activity(
        bot=(token.get("bot_id", ""), token.get("bot_name", "")),
        user=None,
        conversation=json.loads(token.get("conversation") or "{}"),
        reply_to_id=reply_to,
    )
    activity_id = token.get("activity_id")
    if activity_id:
        try:
            await connector.put(
                service_url,
                conv_id,
                activity_id,
                _sdk.build_activity(base, type=_sdk.MESSAGE, text=text, activity_id=activity_id),
                tenant=tenant,
                urgent=True,
            )
            return
        except PlatformError as e:  # gone meanwhile: say it in the chat instead
            log.info("teams.resume_update_failed", code=e.code)
    await connector.post(
        service_url,
        conv_id,
        _sdk.build_activity(base, type=_sdk.MESSAGE, text=text),
        tenant=tenant,
        reply_to=reply_to if token.get("conversation_type") == "channel" else None,
    )
