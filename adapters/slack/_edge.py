"""The HTTP edge of ``POST /slack/events``: read the body, check Slack's signature, check the shape.

Everything here runs before the ack, for every request, so it is cheap and never raises: a bad
request gets a reason (logged as one plain line by the caller) and a 4xx, not a traceback.

* The body is read whole (several TCP writes, chunked transfer encoding), bounded by
  ``MAX_BODY_BYTES``: larger is 413. A body that does not finish arriving within
  ``BODY_READ_SECONDS`` is 408 (a client trickling bytes must not hold a connection for ever).
* The signature is checked on the raw bytes (``v0=`` HMAC-SHA256 of ``v0:{timestamp}:{body}``).
  A missing, non-numeric or stale timestamp, or a signature that is not ``v0=`` and 64 hex
  digits, is refused before any HMAC is computed. slack_sdk's verifier raises on those
  (``int()`` of the timestamp, ``compare_digest`` of non-ASCII text), which was a 500.
* JSON bodies (Events API) must be an object, and an ``event_callback``'s ``event`` an object
  with a string ``type``; form bodies (slash commands, interactivity) must carry a ``payload``
  that is a JSON object, if they carry one at all. Bolt would otherwise fail later, after the ack,
  in a background task.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

# Slack refuses requests older than five minutes itself; so do we (replays).
MAX_SKEW_SECONDS = 300
# A request's body has this long to arrive once its headers have.
BODY_READ_SECONDS = 10.0
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the edge will not pass on: the HTTP status, a short reason (for the log line
    and the response body)."""

    status: int
    reason: str

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.reason)


async def read_body(request: web.Request, max_bytes: int) -> bytes | Refused:
    """The whole request body, however it arrives, or a refusal (413 too large, 408 too slow)."""
    if request.content_length is not None and request.content_length > max_bytes:
        return Refused(413, "request body too large")
    stream = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        if stream.is_eof():  # the usual case: all of it is buffered already
            return _bounded(await stream.read(), max_bytes)
        async with asyncio.timeout(BODY_READ_SECONDS):
            while chunk := await stream.readany():
                size += len(chunk)
                if size > max_bytes:
                    return Refused(413, "request body too large")
                chunks.append(chunk)
    except TimeoutError:
        return Refused(408, "request body too slow")
    return b"".join(chunks)


def _bounded(raw: bytes, max_bytes: int) -> bytes | Refused:
    return Refused(413, "request body too large") if len(raw) > max_bytes else raw


def check_signature(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
) -> Refused | None:
    """None when ``signature`` is Slack's for ``body`` at ``timestamp``; else why not (401)."""
    if not timestamp:
        return Refused(401, "missing request timestamp")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return Refused(401, "request timestamp is not a number")
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_SECONDS:
        return Refused(401, "request timestamp too old or in the future")
    if not signature:
        return Refused(401, "missing request signature")
    if not (
        signature.isascii()
        and len(signature) == 67
        and signature.startswith("v0=")
        and _HEX.issuperset(signature[3:])
    ):
        return Refused(401, "malformed request signature")
    expected = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    if not hmac.compare_digest("v0=" + expected.hexdigest(), signature):
        return Refused(401, "invalid request signature")
    return None


@dataclass(frozen=True, slots=True)
class Shape:
    """What :func:`check_shape` learnt. ``event``: a JSON body, parsed (the caller need not parse
    it again). ``form``: the fields of a form that bolt would misread (see there), else None."""

    event: dict[str, Any] | None = None
    form: dict[str, str] | None = None


def check_shape(body: str, content_type: str) -> Shape | Refused:
    """Check the parts of a verified body that bolt parses (as bolt decides: JSON when the content
    type says so or the body starts with ``{``, else a form with an optional ``payload``).

    bolt takes any form whose text contains ``payload`` for an interactivity payload and, finding
    no such field, reads it as empty: a slash command asking about a "payload" was lost. Such a
    form's fields are returned, so the caller can hand bolt the right body.
    """
    if content_type == "application/json" or body.startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            return Refused(400, "request body is not valid JSON")
        if not isinstance(data, dict):
            return Refused(400, "request body is not a JSON object")
        if data.get("type") == "event_callback" or "event" in data:
            ev = data.get("event")
            if not isinstance(ev, dict):
                return Refused(400, "event is not an object")
            if not isinstance(ev.get("type"), str):
                return Refused(400, "event has no type")
        return Shape(event=data)
    if "payload" in body:
        fields = dict(parse_qsl(body, keep_blank_values=True))
        payload = fields.get("payload")
        if payload is None:
            return Shape(form=fields)
        try:
            data = json.loads(payload)
        except ValueError:
            return Refused(400, "payload is not valid JSON")
        if not isinstance(data, dict):
            return Refused(400, "payload is not a JSON object")
    return Shape()


def decode(raw: bytes) -> str | Refused:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Refused(400, "request body is not UTF-8")
