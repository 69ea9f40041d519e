"""A fake Microsoft Bot Connector (Teams) speaking the real wire format on 127.0.0.1:0.

What it does, so tests read like Teams is on the other end:

* ``POST /v3/conversations/{id}/activities[/{replyToId}]`` and
  ``PUT /v3/conversations/{id}/activities/{activityId}``, each recorded in :attr:`calls`.
* Teams' streaming protocol: the first ``typing`` activity with a ``streaminfo`` entity gets
  ``201 {"id": streamId}``, later ones ``202``; the ``final`` message ends the stream. Streaming
  outside personal chats answers ``405``; a cancelled stream answers
  ``403 ContentStreamNotAllowed``.
* Per-conversation throttling as documented (7/1 s, 8/2 s, 60/30 s, 1800/h) and the tenant-wide
  30 requests/s: ``429`` with ``Retry-After``. Rejected calls do not count, as on the real service.
* Teams' one-message rule, as the Microsoft 365 Agents Playground 0.2.28 applies it
  (``splitActivity``): a message's ``text`` and each attachment of a ``list`` layout are separate
  messages (a ``carousel`` is one). A ``POST`` that becomes several creates them all and answers
  ``202`` without an id; a ``PUT`` that would become several is refused with ``400 BadSyntax``
  "Activity resulted into multiple skype activities"; the ``final`` message of a stream shows
  each attachment as a message of its own. A message or edit with no text and no attachment is
  refused with ``400 BadSyntax``. :meth:`shown` lists what the user sees.
* A fault queue (:meth:`fail_next`) for one-off errors.
* Inbound auth material: an OpenID metadata document, a JWKS and :meth:`sign` to mint activity
  JWTs (issuer ``https://api.botframework.com``) with the fake's own RSA key.
* An OAuth token endpoint for outgoing calls (client credentials), :attr:`token_requests` logged.
* Activity builders shaped like what Teams sends (from ``tests/payloads/teams``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import math
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads" / "teams"
BOT_APP_ID = "00000000-0000-4000-8000-0000000b0001"
BOT_ID = f"28:{BOT_APP_ID}"
BOT_NAME = "DifyBot"
TENANT_ID = "72f988bf-0000-4000-8000-00000000t001"
ISSUER = "https://api.botframework.com"

_EMPTY = {
    "error": {
        "code": "BadSyntax",
        "message": "Activity must include non empty 'text' field or at least 1 attachment",
    }
}
# Per app per tenant: 30 requests/s (platform-limits.md: "design for 30").
TEAMS_TENANT_LIMITS: tuple[tuple[int, float], ...] = ((30, 1.0),)
# Documented per-bot, per-thread limits: (requests, window seconds).
TEAMS_THREAD_LIMITS: tuple[tuple[int, float], ...] = (
    (7, 1.0),
    (8, 2.0),
    (60, 30.0),
    (1800, 3600.0),
)


@dataclass
class Call:
    """One request the bot made to the connector, with what the fake answered."""

    method: str
    conversation_id: str
    activity_id: str | None  # replyToId for POST, target id for PUT
    body: dict[str, Any]
    status: int
    at: float
    authorization: str | None
    response: dict[str, Any] = field(default_factory=dict)
    wall: float = field(default_factory=time.time)

    @property
    def type(self) -> str:
        return str(self.body.get("type", ""))

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "")

    @property
    def streaminfo(self) -> dict[str, Any] | None:
        for e in self.body.get("entities") or []:
            if isinstance(e, dict) and e.get("type") == "streaminfo":
                return e
        return None

    @property
    def stream_type(self) -> str | None:
        info = self.streaminfo
        return None if info is None else info.get("streamType")


@dataclass
class _Fault:
    status: int
    method: str | None
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class _Stream:
    conversation_id: str
    sequence: int
    started: float
    ended: bool = False
    text: str = ""


class FakeBotConnector:
    """Start with ``await fake.start()``; its :attr:`service_url` goes into activities."""

    def __init__(self, *, app_id: str = BOT_APP_ID, app_password: str = "s3cret") -> None:  # noqa: S107
        self.app_id = app_id
        self.app_password = app_password
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "fake-key-1"
        self.endorsements = ["msteams"]
        self.calls: list[Call] = []
        self.token_requests: list[dict[str, str]] = []
        self.jwks_fetches = 0
        self.client_certificate: x509.Certificate | None = None  # for certificate logins
        self.issued_tokens: set[str] = set()
        self.require_bearer = False
        self.thread_limits: tuple[tuple[int, float], ...] = TEAMS_THREAD_LIMITS
        self.tenant_limits: tuple[tuple[int, float], ...] = TEAMS_TENANT_LIMITS
        self._tenant_history: deque[float] = deque()
        self.throttled = 0
        self.cancel_streams = False
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.downloads: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self._faults: deque[_Fault] = deque()
        self._streams: dict[str, _Stream] = {}
        self._history: dict[str, deque[float]] = defaultdict(deque)
        self._ids = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.changed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def openid_metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/.well-known/openidconfiguration"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/botframework.com/oauth2/v2.0/token"

    @property
    def managed_identity_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metadata/identity/oauth2/token"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._openid)
        app.router.add_get("/v1/.well-known/keys", self._jwks)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/metadata/identity/oauth2/token", self._managed_identity)
        app.router.add_post("/v3/conversations/{cid}/activities", self._post)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._post)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._put)
        app.router.add_get("/v3/attachments/{aid}/views/{view}", self._attachment)
        app.router.add_get("/sharepoint/{name}", self._sharepoint)
        # Test-only endpoints for the standalone mode (benchmarks in another process).
        app.router.add_get("/_fake/calls", self._dump_calls)
        app.router.add_get("/_fake/token", self._mint)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        """Forget calls, streams, faults and throttling state; restore default knobs."""
        self.calls.clear()
        self.token_requests.clear()
        self.messages.clear()
        self.files.clear()
        self.downloads.clear()
        self._faults.clear()
        self._streams.clear()
        self._history.clear()
        self.require_bearer = False
        self.client_certificate = None
        self.thread_limits = TEAMS_THREAD_LIMITS
        self.tenant_limits = TEAMS_TENANT_LIMITS
        self._tenant_history.clear()
        self.throttled = 0
        self.cancel_streams = False
        self.endorsements = ["msteams"]

    # ------------------------------------------------------------------ knobs
    def fail_next(
        self,
        status: int,
        *,
        method: str | None = None,
        retry_after: float | None = None,
        code: str = "",
        message: str = "",
    ) -> None:
        """Answer the next matching call (``POST``/``PUT``/any) with ``status``."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"error": {"code": code or f"Http{status}", "message": message or "fault"}}
        self._faults.append(_Fault(status, method, body, headers))

    # ------------------------------------------------------------------ auth material
    def sign(
        self,
        *,
        service_url: str | None = None,
        audience: str | None = None,
        issuer: str = ISSUER,
        expires_in: float = 3600,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """An activity JWT like the Bot Connector sends, signed with this fake's key.

        ``claims`` overrides claims; a None value leaves that claim out."""
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience if audience is not None else self.app_id,
            "serviceurl": service_url if service_url is not None else self.service_url,
            "nbf": now - 10,
            "iat": now - 10,
            "exp": int(now + expires_in),
            **(claims or {}),
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(
            claims, key or self._key, algorithm="RS256", headers={"kid": kid or self.kid}
        )

    async def _openid(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"http://127.0.0.1:{self.port}/v1/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "endorsements": list(self.endorsements)})
        return web.json_response({"keys": [jwk]})

    def _assertion_ok(self, form: dict[str, Any], token_url: str) -> bool:
        """A certificate's client assertion as Entra checks it: signed by the registered
        certificate's key, named by its thumbprint, for this endpoint, fresh."""
        cert = self.client_certificate
        if cert is None or form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return False
        assertion = str(form.get("client_assertion", ""))
        digest = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()  # noqa: S324
        x5t = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):  # only an RSA key can have signed RS256
            return False
        try:
            head = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=token_url,
                issuer=self.app_id,
                options={"require": ["exp", "nbf", "jti", "sub"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(head.get("x5t") == x5t and claims.get("sub") == self.app_id)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        url = f"http://127.0.0.1:{self.port}{request.path}"
        proven = (
            form.get("client_secret") == self.app_password
            if "client_secret" in form
            else self._assertion_ok(form, url)
        )
        if form.get("client_id") != self.app_id or not proven:
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215"}, status=401
            )
        return self._issue()

    async def _managed_identity(self, request: web.Request) -> web.Response:
        """The Azure instance metadata endpoint (IMDS) for a user-assigned managed identity."""
        query = dict(request.query)
        self.token_requests.append({**query, "Metadata": request.headers.get("Metadata", "")})
        if (
            request.headers.get("Metadata") != "true"
            or query.get("client_id") != self.app_id
            or query.get("resource") != "https://api.botframework.com"
        ):
            return web.json_response({"error": "invalid_request"}, status=400)
        return self._issue()

    def _issue(self) -> web.Response:
        token = f"fake-access-{uuid.uuid4().hex}"
        self.issued_tokens.add(token)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }
        )

    # ------------------------------------------------------------------ connector API
    def _next_id(self) -> str:
        self._ids += 1
        return f"{int(time.time() * 1000)}{self._ids:04d}"

    def _take_fault(self, method: str) -> _Fault | None:
        for f in list(self._faults):
            if f.method in (None, method):
                self._faults.remove(f)
                return f
        return None

    def _throttle(self, conversation_id: str) -> float | None:
        """Seconds to wait if one more call would break a window, else None (and count it).

        Per thread (bot + conversation) and per tenant (all conversations: one tenant here).
        """
        now = time.monotonic()
        checks = (
            (self._history[conversation_id], self.thread_limits),
            (self._tenant_history, self.tenant_limits),
        )
        wait = 0.0
        for hist, limits in checks:
            if not limits:
                continue
            longest = max(w for _, w in limits)
            while hist and now - hist[0] > longest:
                hist.popleft()
            for limit, window in limits:
                recent = [t for t in hist if now - t < window]
                if len(recent) >= limit:
                    wait = max(wait, recent[-limit] + window - now)
        if wait > 0:
            return wait
        self._history[conversation_id].append(now)
        self._tenant_history.append(now)
        return None

    def _record(
        self,
        request: web.Request,
        method: str,
        body: dict[str, Any],
        status: int,
        response: dict[str, Any],
    ) -> None:
        self.calls.append(
            Call(
                method=method,
                conversation_id=request.match_info["cid"],
                activity_id=request.match_info.get("aid"),
                body=body,
                status=status,
                at=time.monotonic(),
                authorization=request.headers.get("Authorization"),
                response=response,
            )
        )
        self.changed.set()

    async def _answer(
        self,
        request: web.Request,
        method: str,
        body: dict[str, Any],
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._record(request, method, body, status, payload)
        return web.json_response(payload, status=status, headers=headers)

    async def _pre(
        self, request: web.Request, method: str
    ) -> tuple[dict[str, Any], web.Response | None]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}, web.json_response({"error": {"code": "BadSyntax"}}, status=400)
        if not isinstance(body, dict):
            return {}, web.json_response({"error": {"code": "BadSyntax"}}, status=400)
        if self.require_bearer:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.issued_tokens:
                return body, await self._answer(
                    request,
                    method,
                    body,
                    401,
                    {"message": "Authorization has been denied for this request."},
                )
        fault = self._take_fault(method)
        if fault is not None:
            if fault.status == 429:
                self.throttled += 1
            return body, await self._answer(
                request, method, body, fault.status, fault.body, fault.headers
            )
        wait = self._throttle(request.match_info["cid"])
        if wait is not None:
            self.throttled += 1
            return body, await self._answer(
                request,
                method,
                body,
                429,
                {"error": {"code": "ThrottlingRequest", "message": "Too many requests"}},
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return body, None

    async def _post(self, request: web.Request) -> web.Response:
        body, early = await self._pre(request, "POST")
        if early is not None:
            return early
        cid = request.match_info["cid"]
        info = _streaminfo(body)
        if (
            body.get("type") in ("message", "typing")
            and _empty(body)
            and (info is None or info.get("streamType") != "informative")
        ):
            return await self._answer(request, "POST", body, 400, _EMPTY)
        if info is not None:
            return await self._stream_post(request, body, cid, info)
        shown = split_activity(body)
        ids = []
        for one in shown:
            ids.append(self._next_id())
            self.messages[(cid, ids[-1])] = one
        if len(ids) == 1:
            return await self._answer(request, "POST", body, 201, {"id": ids[0]})
        # Several messages: Teams gives no id to edit (the Playground answers 202, no body).
        return await self._answer(request, "POST", body, 202, {})

    async def _stream_post(
        self, request: web.Request, body: dict[str, Any], cid: str, info: dict[str, Any]
    ) -> web.Response:
        def err(status: int, code: str, message: str) -> dict[str, Any]:
            return {"error": {"code": code, "message": message}}

        if not cid.startswith("a:"):
            # Streaming is for personal chats only (microsoft/Agents #171).
            return await self._answer(
                request,
                "POST",
                body,
                405,
                err(405, "BadArgument", "Streaming is not supported in this conversation"),
            )
        stream_type = info.get("streamType")
        stream_id = info.get("streamId") or body.get("id")
        if stream_type == "final":
            stream = self._streams.get(str(stream_id))
            if stream is None or "streamSequence" in info or body.get("type") != "message":
                return await self._answer(
                    request, "POST", body, 400, err(400, "BadArgument", "bad final message")
                )
            if stream.ended:
                return await self._answer(
                    request,
                    "POST",
                    body,
                    403,
                    err(403, "ContentStreamNotAllowed", "Content stream finished"),
                )
            stream.ended = True
            # The stream's message shows the text; each attachment becomes one more message.
            first, *more = (
                [{**body, "attachments": None}, *split_activity({**body, "text": None})]
                if body.get("text") and body.get("attachments")
                else split_activity({**body, "attachmentLayout": None})
            )
            self.messages[(cid, str(stream_id))] = first
            for one in more:
                self.messages[(cid, self._next_id())] = one
            return await self._answer(request, "POST", body, 201, {"id": stream_id})
        if body.get("type") != "typing":
            return await self._answer(
                request, "POST", body, 400, err(400, "BadArgument", "stream updates are typing")
            )
        seq = info.get("streamSequence")
        if not isinstance(seq, int):
            return await self._answer(
                request, "POST", body, 400, err(400, "BadArgument", "streamSequence missing")
            )
        if stream_id is None:
            if seq != 1:
                return await self._answer(
                    request, "POST", body, 400, err(400, "BadArgument", "first sequence must be 1")
                )
            new_id = self._next_id()
            self._streams[new_id] = _Stream(cid, 1, time.monotonic())
            return await self._answer(request, "POST", body, 201, {"id": new_id})
        stream = self._streams.get(str(stream_id))
        if stream is None:
            return await self._answer(
                request, "POST", body, 404, err(404, "NotFound", "unknown stream")
            )
        if stream.ended or self.cancel_streams:
            stream.ended = True
            return await self._answer(
                request,
                "POST",
                body,
                403,
                err(403, "ContentStreamNotAllowed", "Content stream was cancelled by user."),
            )
        if seq != stream.sequence + 1:
            return await self._answer(
                request, "POST", body, 400, err(400, "BadArgument", "streamSequence out of order")
            )
        text = str(body.get("text") or "")
        if info.get("streamType") == "streaming" and not text.startswith(stream.text):
            # "The bot message must contain the previous streaming content" (streaming-ux).
            return await self._answer(
                request,
                "POST",
                body,
                403,
                err(403, "ContentStreamNotAllowed", "Content must extend the previous content"),
            )
        stream.sequence = seq
        if info.get("streamType") == "streaming":
            stream.text = text
        return await self._answer(request, "POST", body, 202, {})

    async def _put(self, request: web.Request) -> web.Response:
        body, early = await self._pre(request, "PUT")
        if early is not None:
            return early
        cid = request.match_info["cid"]
        aid = request.match_info["aid"]
        if (cid, aid) not in self.messages:
            return await self._answer(
                request,
                "PUT",
                body,
                404,
                {"error": {"code": "ActivityNotFoundInConversation", "message": "not found"}},
            )
        if _empty(body):
            return await self._answer(request, "PUT", body, 400, _EMPTY)
        if len(split_activity(body)) > 1:
            return await self._answer(
                request,
                "PUT",
                body,
                400,
                {
                    "error": {
                        "code": "BadSyntax",
                        "message": "Activity resulted into multiple skype activities",
                    }
                },
            )
        self.messages[(cid, aid)] = body
        return await self._answer(request, "PUT", body, 200, {"id": aid})

    async def _dump_calls(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "throttled": self.throttled,
                "calls": [
                    {
                        "method": c.method,
                        "status": c.status,
                        "wall": c.wall,
                        "conversation_id": c.conversation_id,
                        "activity_id": c.activity_id,
                        "type": c.type,
                        "stream_type": c.stream_type,
                        "chars": len(c.text),
                        "text_head": c.text[:40],
                        "final": bool(c.body.get("entities")) and c.type == "message",
                        "error_ref": "Reference:" in c.text,
                    }
                    for c in self.calls
                ],
            }
        )

    async def _mint(self, request: web.Request) -> web.Response:
        return web.json_response({"token": self.sign(service_url=request.query.get("serviceUrl"))})

    async def _sharepoint(self, request: web.Request) -> web.Response:
        """A pre-authorised SharePoint download URL, as Teams puts in file download info."""
        self.downloads.append((request.path, request.headers.get("Authorization")))
        data = self.files.get(request.match_info["name"])
        return web.Response(body=data) if data is not None else web.Response(status=404)

    async def _attachment(self, request: web.Request) -> web.Response:
        """An image pasted into a message: the Bot Connector wants the bot's token."""
        auth = request.headers.get("Authorization", "")
        self.downloads.append((request.path, auth or None))
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued_tokens:
            return web.json_response({"message": "Authorization has been denied"}, status=401)
        data = self.files.get(request.match_info["aid"])
        return (
            web.Response(body=data, content_type="image/png") if data else web.Response(status=404)
        )

    # ------------------------------------------------------------------ reading the record
    def sent(self, method: str | None = None, *, ok: bool = True) -> list[Call]:
        return [
            c
            for c in self.calls
            if (method is None or c.method == method) and (not ok or 200 <= c.status < 300)
        ]

    def shown(self, conversation_id: str) -> list[dict[str, Any]]:
        """The bot's messages in a conversation as the user sees them now, oldest first."""
        return [m for (cid, _), m in self.messages.items() if cid == conversation_id]

    def visible_text(self, conversation_id: str, activity_id: str) -> str:
        """What the user sees now in one message."""
        return str(self.messages.get((conversation_id, activity_id), {}).get("text") or "")

    async def wait_for(self, predicate: Any, within: float = 5.0) -> None:
        """Wait until ``predicate(self)`` is true (checked on every recorded call)."""
        timeout = within
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met in {timeout}s; calls={self.describe()}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.05))

    def describe(self) -> list[str]:
        return [
            f"{c.method} {c.type} {c.stream_type or ''} -> {c.status} {c.text[:40]!r}"
            for c in self.calls
        ]

    # ------------------------------------------------------------------ talking to the bot
    def service_env(self) -> dict[str, str]:
        """Settings that make dify-bridge trust this fake (JWT keys) and get tokens from it."""
        return {
            "MICROSOFT_APP_ID": self.app_id,
            "MICROSOFT_APP_PASSWORD": self.app_password,
            "MICROSOFT_APP_TENANT_ID": TENANT_ID,
            "MICROSOFT_TOKEN_URL": self.token_url,
            "TEAMS_OPENID_METADATA_URL": self.openid_metadata_url,
        }

    async def deliver(
        self, base_url: str, activity: dict[str, Any], *, signed: bool = True
    ) -> tuple[int, bytes, float]:
        """POST an activity to the bot as Teams would (with a valid JWT unless ``signed`` is
        False); returns (status, body, seconds)."""
        token = self.sign(service_url=str(activity.get("serviceUrl", ""))) if signed else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{base_url}/api/messages", json=activity, headers=headers) as r,
        ):
            return r.status, await r.read(), time.monotonic() - started

    # ------------------------------------------------------------------ activity builders
    def activity(self, name: str, **overrides: Any) -> dict[str, Any]:
        """A recorded Teams payload (``tests/payloads/teams/<name>.json``) pointed at this fake.

        ``overrides`` replace top-level fields; a fresh ``id`` is made unless one is given.
        """
        body: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text("utf-8"))
        body["serviceUrl"] = self.service_url
        body["id"] = overrides.pop("id", None) or (
            body["id"] if name == "feedback_invoke" else self._next_id()
        )
        body["timestamp"] = _iso_now()
        body.update(overrides)
        return body

    def channel_mention(
        self, text: str, *, channel: str = "19:6d1f0c5e2b1b4f0e9a0d@thread.tacv2"
    ) -> dict[str, Any]:
        """A new channel post that @mentions the bot (a new reply chain)."""
        body = self.activity("channel_mention")
        body["text"] = f"<at>{BOT_NAME}</at>&nbsp;{_escape(text)}"
        body["conversation"]["id"] = f"{channel};messageid={body['id']}"
        return body

    def channel_reply(
        self,
        root_id: str,
        text: str,
        *,
        mention: bool = True,
        channel: str = "19:6d1f0c5e2b1b4f0e9a0d@thread.tacv2",
    ) -> dict[str, Any]:
        """A reply in a channel thread (reply chain ``root_id``)."""
        body = self.activity("channel_thread_reply")
        body["conversation"]["id"] = f"{channel};messageid={root_id}"
        body["replyToId"] = root_id
        if mention:
            body["text"] = f"<at>{BOT_NAME}</at> {_escape(text)}"
        else:
            body["text"] = _escape(text)
            body["entities"] = []
        return body

    def group_mention(
        self, text: str, *, chat: str = "19:meeting_b3c4d5e6f7@thread.v2"
    ) -> dict[str, Any]:
        body = self.activity("group_chat_mention")
        body["text"] = f"<at>{BOT_NAME}</at> {_escape(text)}"
        body["conversation"]["id"] = chat
        return body

    def personal(self, text: str, *, chat: str = "a:1Qw3rTyPersonalChatId") -> dict[str, Any]:
        body = self.activity("personal_message")
        body["text"] = _escape(text)
        body["conversation"]["id"] = chat
        return body

    def personal_file(self, text: str, name: str, data: bytes) -> dict[str, Any]:
        """A 1:1 message with a file attached (file download info, as with supportsFiles)."""
        body = self.personal(text)
        self.files[name] = data
        body["attachments"] = [
            {
                "contentType": "application/vnd.microsoft.teams.file.download.info",
                "contentUrl": f"https://contoso.sharepoint.com/personal/ada/Documents/{name}",
                "name": name,
                "content": {
                    "downloadUrl": f"{self.service_url}sharepoint/{name}",
                    "uniqueId": str(uuid.uuid4()),
                    "fileType": name.rsplit(".", 1)[-1],
                },
            }
        ]
        return body

    def personal_image(self, text: str, data: bytes) -> dict[str, Any]:
        """A 1:1 message with an image pasted inline (hosted by the Bot Connector)."""
        body = self.personal(text)
        image_id = f"0-weu-d1-{uuid.uuid4().hex}"
        self.files[image_id] = data
        body["attachments"] = [
            {
                "contentType": "image/*",
                "contentUrl": f"{self.service_url}v3/attachments/{image_id}/views/original",
            },
            {"contentType": "text/html", "content": "<div><img src=...></div>"},
        ]
        return body

    def with_audio(
        self,
        body: dict[str, Any],
        data: bytes,
        *,
        content_type: str = "audio/mpeg",
        name: str | None = None,
    ) -> dict[str, Any]:
        """``body`` with an audio clip attached (``audio/*`` with a ``contentUrl`` on the Bot
        Connector, fetched with the bot's token like a pasted image)."""
        clip_id = f"0-weu-d2-{uuid.uuid4().hex}"
        self.files[clip_id] = data
        attachment: dict[str, Any] = {
            "contentType": content_type,
            "contentUrl": f"{self.service_url}v3/attachments/{clip_id}/views/original",
        }
        if name is not None:
            attachment["name"] = name
        body["attachments"] = [attachment]
        return body

    def card_click(
        self, value: dict[str, Any], *, reply_to: str, conversation: dict[str, Any]
    ) -> dict[str, Any]:
        """What Teams sends when someone clicks an Adaptive Card ``Action.Submit`` button on the
        bot's message ``reply_to``: a message with no text and no mention, the action's ``data``
        as ``value``, in the conversation of the card (a channel's reply chain included)."""
        kind = {"personal": "personal_message", "groupChat": "group_chat_mention"}.get(
            str(conversation.get("conversationType")), "channel_thread_reply"
        )
        body = self.activity(kind)
        body.pop("text", None)
        body.pop("textFormat", None)
        body["entities"] = [{"locale": "en-US", "type": "clientInfo"}]
        body["conversation"] = copy.deepcopy(conversation)
        body["replyToId"] = reply_to
        body["value"] = copy.deepcopy(value)
        body["channelData"] = {
            **body.get("channelData", {}),
            "postBack": True,
            "source": {"name": "message"},
            "legacy": {"replyToId": f"1:{uuid.uuid4().hex[:20]}"},
        }
        return body

    def conversation_update(self) -> dict[str, Any]:
        return self.activity("conversation_update")

    def feedback(
        self,
        *,
        reply_to: str,
        reaction: str = "like",
        text: str = "",
        conversation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self.activity("feedback_invoke", id=f"f:{uuid.uuid4().hex}")
        body["replyToId"] = reply_to
        body["value"]["actionValue"] = {
            "reaction": reaction,
            "feedback": json.dumps({"feedbackText": text}),
        }
        if conversation is not None:
            body["conversation"] = copy.deepcopy(conversation)
        return body


def split_activity(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages Teams shows for one activity: its text, then each attachment of a ``list``
    layout on its own (a ``carousel`` stays one message). The Agents Playground's rule."""
    if body.get("attachmentLayout") == "carousel":
        return [body]
    out: list[dict[str, Any]] = []
    if body.get("text"):
        out.append({**body, "attachments": None})
    for a in body.get("attachments") or []:
        out.append({**body, "text": None, "textFormat": None, "attachments": [a]})
    return out


def _empty(body: dict[str, Any]) -> bool:
    return not body.get("text") and not body.get("attachments")


def _streaminfo(body: dict[str, Any]) -> dict[str, Any] | None:
    for e in body.get("entities") or []:
        if isinstance(e, dict) and e.get("type") == "streaminfo":
            return e
    return None


def _escape(text: str) -> str:
    # Teams sends user text HTML-escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


async def _serve() -> None:
    import signal

    fake = FakeBotConnector()
    await fake.start()
    print(fake.service_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


if __name__ == "__main__":
    # Standalone (benchmarks): ``python -m tests.fakes.bot_connector`` prints the serviceUrl and
    # serves on 127.0.0.1 until SIGTERM. App id BOT_APP_ID, password "s3cret";
    # GET /_fake/token?serviceUrl=... mints an activity JWT, GET /_fake/calls returns the record.
    asyncio.run(_serve())
