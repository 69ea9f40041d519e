"""Files both ways: attachments downloaded with the bot token, Dify's files uploaded to a thread.

Slack answers a file download made without the ``files:read`` scope with **200 and an HTML login
page**, so the content type of the response is checked, not only the status.

The bot token goes only to Slack's own file hosts (``https://files.slack.com`` and the other
``*.slack.com`` / ``*.slack-gov.com`` hosts) and to the host of the configured ``SLACK_API_URL``
(a proxy or a test double). A file whose URL names any other host is refused with a plain
message in the thread and never fetched: an event that points ``url_private`` elsewhere would
otherwise hand the token to that host. aiohttp drops the header on a redirect to another origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import structlog

from adapters.slack._webapi import SlackApi
from app.errors import UserFacingError
from app.pipeline.model import Attachment, OutFile

log = structlog.get_logger(__name__)

# Dify's default upload limits are 15 MB for documents and 10 MB for images; 20 MB leaves room for
# deployments that raised them, and bounds the memory one message can take.
MAX_FILE_BYTES = 20 * 1024 * 1024
_ALLOWED_PREFIXES = ("image/", "audio/", "video/", "text/")
_ALLOWED_TYPES = frozenset(
    {
        "application/pdf",
        "application/json",
        "application/xml",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/epub+zip",
        "message/rfc822",
    }
)
_SKIPPED_MODES = frozenset({"tombstone", "hidden_by_limit", "external"})
# A clip recorded in Slack (microphone button) carries this file subtype.
_AUDIO_CLIP = "slack_audio"


def allowed_type(mime: str) -> bool:
    mime = mime.split(";", 1)[0].strip().lower()
    return mime in _ALLOWED_TYPES or mime.startswith(_ALLOWED_PREFIXES)


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


def _clip_mime(mime: str, filetype: str) -> str:
    """The audio type of a recorded Slack clip: Slack labels some clips ``video/mp4`` (the
    container), and Dify's speech-to-text takes ``audio/*`` types only."""
    if mime.startswith("audio/"):
        return mime
    if mime.startswith("video/"):
        return "audio/" + mime.split("/", 1)[1]
    return "audio/webm" if filetype == "webm" else "audio/mp4"


_SLACK_FILE_DOMAINS = ("slack.com", "slack-gov.com")


def token_may_go_to(url: str, api_url: str) -> bool:
    """True if ``url`` is on one of Slack's file hosts (HTTPS) or the configured API host."""
    try:
        target, api = urlsplit(url), urlsplit(api_url)
        port, api_port = target.port, api.port
    except ValueError:
        return False
    host = (target.hostname or "").lower()
    if not host:
        return False
    if (target.scheme, host, port) == (api.scheme, (api.hostname or "").lower(), api_port):
        return True
    return (
        target.scheme == "https"
        and port in (None, 443)
        and any(host == d or host.endswith("." + d) for d in _SLACK_FILE_DOMAINS)
    )


def attachments_from_event(
    files: tuple[dict[str, Any], ...],
    *,
    token: str | None,
    session: aiohttp.ClientSession,
    api_url: str,
) -> tuple[Attachment, ...]:
    """Turn a message's ``files`` into :class:`Attachment` s whose ``fetch`` downloads them
    (or, for a file on a host that is not Slack's, refuses to)."""
    out: list[Attachment] = []
    for f in files:
        if _str(f, "mode") in _SKIPPED_MODES:
            continue
        url = _str(f, "url_private_download") or _str(f, "url_private")
        name = (_str(f, "name") or _str(f, "title") or "file")[:200]
        mime = _str(f, "mimetype") or "application/octet-stream"
        clip = _str(f, "subtype") == _AUDIO_CLIP
        if clip:
            mime = _clip_mime(mime.lower(), _str(f, "filetype").lower())
        size = f.get("size")
        size = size if isinstance(size, int) and size >= 0 else 0
        if not url.startswith(("https://", "http://")):
            continue
        out.append(
            Attachment(
                name=name,
                mime_type=mime,
                size=size,
                url=url,
                is_audio=clip or mime.startswith("audio/"),
                fetch=(
                    _fetcher(url, name, mime, size, token, session)
                    if token_may_go_to(url, api_url)
                    else _foreign(url, name)
                ),
            )
        )
    return tuple(out)


def _foreign(url: str, name: str) -> Callable[[], Awaitable[bytes]]:
    async def refuse() -> bytes:
        host = urlsplit(url).hostname or "?"
        log.warning("slack.file_host_refused", host=host[:100])
        raise UserFacingError(
            f"I didn't open “{name}”: it is not stored in Slack, and I only download files "
            "from Slack itself.",
            kind="file",
        )

    return refuse


def _fetcher(
    url: str,
    name: str,
    mime: str,
    size: int,
    token: str | None,
    session: aiohttp.ClientSession,
) -> Callable[[], Awaitable[bytes]]:
    async def fetch() -> bytes:
        if size > MAX_FILE_BYTES:
            raise UserFacingError(
                f"The file “{name}” is too large ({size // (1024 * 1024)} MB); "
                f"the limit is {MAX_FILE_BYTES // (1024 * 1024)} MB.",
                kind="file",
            )
        if not allowed_type(mime):
            raise UserFacingError(
                f"I can't read files of type {mime} (“{name}”). Images, PDFs, text and "
                "Office documents work.",
                kind="file",
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
            ) as resp:
                ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if resp.status != 200 or (
                    ctype == "text/html" and not mime.startswith("text/html")
                ):
                    log.warning("slack.file_download_refused", status=resp.status, ctype=ctype)
                    raise UserFacingError(
                        f"I couldn't download “{name}” from Slack. The app may be missing the "
                        "files:read permission; ask your admin to reinstall it.",
                        kind="file",
                    )
                data = await resp.content.read(MAX_FILE_BYTES + 1)
        except aiohttp.ClientError as e:
            log.warning("slack.file_download_failed", error=type(e).__name__)
            raise UserFacingError(
                f"I couldn't download “{name}” from Slack. Please try again.", kind="file"
            ) from e
        if len(data) > MAX_FILE_BYTES:
            raise UserFacingError(f"The file “{name}” is too large.", kind="file")
        return data

    return fetch


async def prefetch(attachments: tuple[Attachment, ...]) -> tuple[Attachment, ...]:
    """Download every attachment now; raise :class:`UserFacingError` for the first refused one.

    Runs after the ack, before the message is handed to the bridge, so a file the bot may not
    read is answered in plain words instead of failing deep inside the pipeline.
    """
    out: list[Attachment] = []
    for att in attachments:
        if att.fetch is None:
            continue
        data = await att.fetch()
        out.append(
            Attachment(
                name=att.name,
                mime_type=att.mime_type,
                size=len(data),
                url=att.url,
                is_audio=att.is_audio,
                fetch=_cached(data),
            )
        )
    return tuple(out)


def _cached(data: bytes) -> Callable[[], Awaitable[bytes]]:
    async def fetch() -> bytes:
        return data

    return fetch


def _filename(f: OutFile, n: int) -> str:
    if f.name:
        return f.name[:200]
    tail = urlsplit(f.url).path.rsplit("/", 1)[-1]
    if tail and "." in tail:
        return tail[:200]
    ext = {"image": "png", "audio": "mp3", "video": "mp4"}.get(f.type, "bin")
    return f"file-{n}.{ext}"


async def upload_out_files(
    api: SlackApi,
    session: aiohttp.ClientSession,
    files: list[OutFile],
    *,
    channel: str,
    thread_ts: str,
    dify_origin: str | None,
) -> list[str]:
    """Put Dify's files into the thread (getUploadURLExternal, POST, completeUploadExternal).

    Returns the names of files that could not be delivered (the caller tells the user).
    """
    failed: list[str] = []
    for n, f in enumerate(files, start=1):
        name = _filename(f, n)
        url = f.url if urlsplit(f.url).scheme else urljoin((dify_origin or "") + "/", f.url)
        if not url.startswith(("http://", "https://")):
            failed.append(name)
            continue
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(
                        resp.request_info, resp.history, status=resp.status
                    )
                data = await resp.content.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES or not data:
                failed.append(name)
                continue
            if not await _upload(api, session, name, data, channel=channel, thread_ts=thread_ts):
                failed.append(name)
        except Exception as e:  # one file failing must not lose the answer
            log.warning("slack.file_upload_failed", error=type(e).__name__)
            failed.append(name)
    return failed


async def upload_text(
    api: SlackApi,
    session: aiohttp.ClientSession,
    text: str,
    *,
    name: str,
    channel: str,
    thread_ts: str,
) -> bool:
    """Put ``text`` into the thread as a file (an answer too long for its messages)."""
    try:
        return await _upload(
            api, session, name, text.encode("utf-8"), channel=channel, thread_ts=thread_ts
        )
    except Exception as e:  # the answer itself is already shown; the caller says what failed
        log.warning("slack.file_upload_failed", error=type(e).__name__)
        return False


async def _upload(
    api: SlackApi,
    session: aiohttp.ClientSession,
    name: str,
    data: bytes,
    *,
    channel: str,
    thread_ts: str,
) -> bool:
    """getUploadURLExternal, POST the bytes, completeUploadExternal into the thread."""
    ticket = await api.call("files.getUploadURLExternal", filename=name, length=len(data))
    upload_url, file_id = ticket.get("upload_url"), ticket.get("file_id")
    if not isinstance(upload_url, str) or not isinstance(file_id, str):
        return False
    async with session.post(upload_url, data=data, timeout=aiohttp.ClientTimeout(total=120)) as up:
        if up.status != 200:
            raise aiohttp.ClientResponseError(up.request_info, up.history, status=up.status)
    await api.call(
        "files.completeUploadExternal",
        files=[{"id": file_id, "title": name}],
        channel_id=channel,
        thread_ts=thread_ts,
    )
    return True
