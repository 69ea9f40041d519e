"""An ephemeral answer through a slash command's or a click's ``response_url``.

Used where the bot cannot post in the channel (``not_in_channel``), and for short notes only the
clicking person should see.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog

from adapters.slack import _blocks as B
from app.errors import PlatformRateLimited
from app.pipeline.forms import HumanForm
from app.pipeline.model import ReplyExtras

log = structlog.get_logger(__name__)


class ResponseUrlReply:
    """An ephemeral answer (only the asker sees it) through a slash command's ``response_url``.

    Slack allows five posts per ``response_url`` within 30 minutes, so only the final answer (or the
    error) is posted: no progressive edits.
    """

    def __init__(self, session: aiohttp.ClientSession, response_url: str) -> None:
        self._session = session
        self._url = response_url

    async def _send(self, text: str, blocks: list[B.Block]) -> None:
        body: dict[str, Any] = {
            "response_type": "ephemeral",
            "replace_original": False,
            "text": text,
            "blocks": blocks,
        }
        try:
            async with self._session.post(
                self._url, json=body, timeout=aiohttp.ClientTimeout(total=15)
            ) as resp:
                if resp.status == 429:
                    raise PlatformRateLimited(
                        float(resp.headers.get("Retry-After", "1") or 1), method="response_url"
                    )
                if resp.status >= 400:
                    log.warning("slack.response_url_failed", status=resp.status)
        except aiohttp.ClientError as e:
            log.warning("slack.response_url_failed", error=type(e).__name__)

    async def say(self, text: str) -> None:
        """A short ephemeral note (usage help, "nothing to stop")."""
        await self._send(text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}])

    async def start(self, placeholder: str) -> None:
        return None

    async def update(self, text: str, *, status: str | None = None) -> None:
        return None

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        md = B.split(text)[0]
        tail = B.final_extras_blocks(extras, feedback=False, suggested=False)
        await self._send(B.fallback_text(md), B.answer_blocks(md) + tail)

    def resume_token(self) -> None:
        """A private reply lives behind a response_url that expires: nothing to resume."""
        return None

    async def fail(self, message: str, *, ref: str) -> None:
        await self._send(B.fallback_text(message), B.error_blocks(message, ref))

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        # A private reply has no thread to keep the form in: say where it can be answered.
        names = ", ".join(f"“{f.title}”" for f in forms)
        note = (
            f"The assistant now waits for an answer to {names}, which cannot be given in a "
            "private reply: please answer it in Dify, or ask in a channel the app is in."
        )
        md = f"{B.split(text)[0]}\n\n{note}" if text.strip() else note
        await self._send(B.fallback_text(md), B.answer_blocks(md))
