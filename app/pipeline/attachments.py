"""User files on their way to Dify: checked against the app's upload rules, then uploaded.

Dify takes files as ``files=[{"type", "transfer_method": "local_file", "upload_file_id"}]``
after ``POST /files/upload`` by the same ``user``. Checking first means a clear sentence in the
thread ("this assistant takes images only") instead of a Dify 400 or a file silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app import texts
from app.dify.appcheck import FileRules
from app.dify.client import DifyClient
from app.dify.errors import DifyProtocolError
from app.pipeline.model import Attachment


def file_type(mime: str) -> str:
    """Dify's file category for a MIME type."""
    major = mime.split("/", 1)[0].lower()
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "document")


def dify_type(att: Attachment, rules: FileRules | None) -> str:
    """The ``type`` to send for ``att``: its category, or ``custom`` when only the app's custom
    extensions let it in (Dify validates the two differently)."""
    ftype = file_type(att.mime_type)
    allowed = rules.allowed_types if rules else None
    if allowed is not None and ftype not in allowed and "custom" in allowed:
        return "custom"
    return ftype


def is_voice(att: Attachment) -> bool:
    """A voice message or audio clip (adapters set ``is_audio``; the MIME type also counts)."""
    return att.is_audio or att.mime_type.lower().startswith("audio/")


def _mb(n: int) -> str:
    return texts.MEGABYTES.format(mb=n / (1024 * 1024))


def _too_large(att: Attachment, size: int, ftype: str, limit: int) -> str:
    name = att.name or texts.FILE_NAMELESS_SUBJECT
    return texts.FILE_TOO_LARGE.format(name=name, size=_mb(size), kind=ftype, limit=_mb(limit))


def check_files(attachments: Sequence[Attachment], rules: FileRules) -> str | None:
    """A message for the user when the app cannot take these files, else None."""
    if not attachments:
        return None
    if not rules.enabled:
        names = ", ".join(a.name or texts.FILE_NAMELESS for a in attachments)
        return texts.FILES_NOT_ACCEPTED.format(names=names)
    if rules.number_limit is not None and len(attachments) > rules.number_limit:
        return texts.TOO_MANY_FILES.format(limit=rules.number_limit, count=len(attachments))
    for att in attachments:
        ftype = file_type(att.mime_type)
        ext = "." + att.name.rsplit(".", 1)[-1].lower() if "." in att.name else ""
        allowed = rules.allowed_types
        if (
            allowed is not None
            and ftype not in allowed
            and not ("custom" in allowed and ext and ext in rules.extensions)
        ):
            kinds = ", ".join(sorted(t for t in allowed if t != "custom")) or texts.NO_FILE_KINDS
            name = att.name or texts.FILE_NAMELESS_LIKE
            return texts.FILE_KIND_REFUSED.format(kind=ftype, name=name, kinds=kinds)
        limit = rules.size_limit(ftype)
        if att.size > limit:
            return _too_large(att, att.size, ftype, limit)
    return None


async def upload_files(
    client: DifyClient,
    user: str,
    attachments: Sequence[Attachment],
    names: Mapping[int, str],
    rules: FileRules | None = None,
) -> list[dict[str, Any]]:
    """Download each attachment and upload it to Dify; ``names`` holds redacted file names.

    Raises :class:`ValueError` with a user-facing sentence when a download turns out larger
    than the app allows (platforms do not always tell the size in advance).
    """
    files: list[dict[str, Any]] = []
    for i, att in enumerate(attachments):
        if att.fetch is None:
            continue
        data = await att.fetch()
        ftype = file_type(att.mime_type)
        if rules is not None and len(data) > rules.size_limit(ftype):
            raise ValueError(_too_large(att, len(data), ftype, rules.size_limit(ftype)))
        uploaded = await client.upload_file(
            user=user,
            filename=names.get(i) or att.name or "file",
            data=data,
            mime_type=att.mime_type,
        )
        file_id = uploaded.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise DifyProtocolError("upload answer has no file id", code="protocol_error")
        files.append(
            {
                "type": dify_type(att, rules),
                "transfer_method": "local_file",
                "upload_file_id": file_id,
            }
        )
    return files


__all__ = ["check_files", "dify_type", "file_type", "is_voice", "upload_files"]
