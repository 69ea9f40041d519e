"""Files people send the bot in Teams, handed to the core as lazily downloaded attachments.

Three shapes arrive: a file sent in a 1:1 chat
(``application/vnd.microsoft.teams.file.download.info`` with a pre-authorised SharePoint
``downloadUrl``; needs ``supportsFiles`` in the manifest), an image pasted into the message
(``image/*`` with a ``contentUrl`` on the Bot Connector, which wants the bot's token) and an audio
clip (``audio/*`` with a ``contentUrl``, fetched the same way; the core transcribes it when the
message has no text). The token is only ever sent to the host of the activity's own
``serviceUrl``.
Downloads stop at ``MAX_BYTES`` (Dify's default upload limit) and never block the loop.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from adapters.teams.tokens import TokenSource
from app.errors import UserFacingError
from app.pipeline.model import Attachment

FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
MAX_BYTES = 15 * 1024 * 1024
MAX_FILES = 5


class Downloader:
    """Fetches attachment bytes with the adapter's HTTP session."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tokens: TokenSource,
        allow_url: Callable[[str], bool],
        timeout: float = 30.0,
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._allow = allow_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def fetcher(self, url: str, *, token: bool) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            return await self._get(url, token=token)

        return fetch

    async def _get(self, url: str, *, token: bool) -> bytes:
        if not self._allow(url):
            raise UserFacingError("That file's address is not one the bot may download from.")
        headers: dict[str, str] = {}
        if token:
            auth = await self._tokens.header()
            if auth:
                headers["Authorization"] = auth
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise UserFacingError(
                        f"The attached file could not be downloaded (HTTP {resp.status})."
                    )
                if (resp.content_length or 0) > MAX_BYTES:
                    raise _too_big()
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > MAX_BYTES:
                        raise _too_big()
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UserFacingError("The attached file could not be downloaded.") from e


def _too_big() -> UserFacingError:
    return UserFacingError(f"The attached file is larger than {MAX_BYTES // (1024 * 1024)} MB.")


def _concrete(ctype: str, name: str, default: str) -> str:
    """``image/*`` or ``audio/*`` made concrete from the file name, else ``default``."""
    if not ctype.endswith("/*"):
        return ctype
    guessed = mimetypes.guess_type(name)[0] if name else None
    major = ctype.split("/", 1)[0]
    return guessed if guessed and guessed.startswith(major + "/") else default


def _extension(mime: str) -> str:
    """``.mp3`` for ``audio/mpeg``; ``.wav`` for ``audio/wav`` (which mimetypes does not know)."""
    known = mimetypes.guess_extension(mime)
    if known:
        return known
    sub = mime.split("/", 1)[-1].split(";", 1)[0]
    sub = sub.removeprefix("x-")
    return "." + sub if sub.isalnum() else ".bin"


def attachments(
    raw: tuple[dict[str, Any], ...], *, service_url: str, downloader: Downloader
) -> tuple[Attachment, ...]:
    """The files and pasted images of one activity (other attachment kinds are ignored)."""
    out: list[Attachment] = []
    service_host = urlsplit(service_url).hostname
    for a in raw:
        ctype = a.get("contentType")
        raw_name = a.get("name")
        name = raw_name if isinstance(raw_name, str) else ""
        content = a.get("content") if isinstance(a.get("content"), dict) else {}
        if ctype == FILE_DOWNLOAD_INFO:
            url = (content or {}).get("downloadUrl")
            if not isinstance(url, str):
                continue
            file_type = str((content or {}).get("fileType") or "")
            name = name or f"file.{file_type or 'bin'}"
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            out.append(
                Attachment(
                    name=name,
                    mime_type=mime,
                    size=0,
                    fetch=downloader.fetcher(url, token=False),
                    is_audio=mime.startswith("audio/"),
                )
            )
        elif isinstance(ctype, str) and ctype.startswith(("image/", "audio/")):
            url = a.get("contentUrl")
            if not isinstance(url, str):
                continue
            # The bot's token only goes back to the Bot Connector that sent the activity.
            same_host = urlsplit(url).hostname == service_host
            audio = ctype.startswith("audio/")
            mime = _concrete(ctype, name, "audio/mpeg" if audio else "image/png")
            out.append(
                Attachment(
                    name=name or ("voice" if audio else "image") + _extension(mime),
                    mime_type=mime,
                    size=0,
                    fetch=downloader.fetcher(url, token=same_host),
                    is_audio=audio,
                )
            )
        if len(out) >= MAX_FILES:
            break
    return tuple(out)
