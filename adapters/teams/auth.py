"""Who may call ``POST /api/messages``: Bot Connector JWTs, or loopback-only local mode.

The rules are the Bot Framework's channel validation (as botframework-connector's
``ChannelValidation`` had them, stricter where noted): issuer ``https://api.botframework.com``,
audience = our app id, RS256 only, ``exp`` required, 5 minutes of clock skew, a key from the
OpenID metadata's JWKS that is endorsed for the activity's ``channelId`` (an activity without one
is refused), and the token's ``serviceurl`` claim equal to the activity's ``serviceUrl`` (the
whole URL). The Agents SDK's validator checks less (docs/teams.md, Which SDK), so this one stays
ours.

Keys are fetched with aiohttp (never blocking the loop), cached for a day, and refetched at most
once a minute when an unknown ``kid`` shows up, so a flood of forged tokens cannot turn into a
flood of key downloads. The Bot Connector sends the same token with many activities: a token whose
signature and claims were verified is remembered (until it expires, and only while its key is
still published), so the RSA check runs once per token, not once per activity.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import structlog
from jwt.algorithms import RSAAlgorithm

from adapters.teams import _sdk

log = structlog.get_logger(__name__)

CLOCK_SKEW = 300.0
KEYS_MAX_AGE = 86400.0
UNKNOWN_KID_REFRESH = 60.0
FAILED_RETRY = 10.0
VERIFIED_TOKENS = 4096


class Unauthorized(Exception):
    """The request is not from the Bot Connector (answer 401; never process it)."""


@dataclass(frozen=True, slots=True)
class _Key:
    public_key: Any
    endorsements: tuple[str, ...]


class SigningKeys:
    """The Bot Connector's signing keys, from OpenID metadata -> ``jwks_uri``."""

    def __init__(
        self,
        metadata_url: str,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metadata_url = metadata_url
        self._session = session
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._fetched = 0.0
        self._attempted = float("-inf")
        self._inflight: asyncio.Future[None] | None = None

    async def get(self, kid: str) -> _Key | None:
        if self._inflight is not None:
            await asyncio.shield(self._inflight)  # concurrent first requests share one fetch
        now = self._clock()
        since_attempt = now - self._attempted
        stale = not self._keys or now - self._fetched > KEYS_MAX_AGE
        if (stale and since_attempt > FAILED_RETRY) or (
            kid not in self._keys and since_attempt > UNKNOWN_KID_REFRESH
        ):
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._refresh())
                self._inflight.add_done_callback(self._refreshed)
            await asyncio.shield(self._inflight)
        return self._keys.get(kid)

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("teams.auth.keys_refresh_crashed", error=type(task.exception()).__name__)

    def published(self, kid: str) -> bool:
        """The key is (still) in the last JWKS we read."""
        return kid in self._keys

    async def _refresh(self) -> None:
        self._attempted = self._clock()
        try:
            meta = await self._json(self.metadata_url)
            jwks_uri = meta.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ValueError("OpenID metadata has no jwks_uri")
            doc = await self._json(jwks_uri)
            keys: dict[str, _Key] = {}
            for k in doc.get("keys") or []:
                if not isinstance(k, dict) or not isinstance(k.get("kid"), str):
                    continue
                if k.get("kty") != "RSA":
                    continue
                endorsements = k.get("endorsements") or []
                keys[k["kid"]] = _Key(
                    RSAAlgorithm.from_jwk(json.dumps(k)),
                    tuple(str(e) for e in endorsements if isinstance(e, str)),
                )
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, jwt.PyJWTError) as e:
            log.warning("teams.auth.keys_unavailable", error=type(e).__name__)
            return
        self._keys = keys
        self._fetched = self._clock()
        log.info("teams.auth.keys_refreshed", count=len(keys))

    async def _json(self, url: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._session.get(url, timeout=timeout) as resp:
            resp.raise_for_status()
            data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return data


@dataclass(frozen=True, slots=True)
class _Verified:
    kid: str
    endorsements: tuple[str, ...]
    expires: float  # the token's ``exp`` (epoch seconds)
    service_url: Any


class TokenValidator:
    """Validates the ``Authorization`` header of one incoming activity."""

    def __init__(
        self, *, app_id: str, keys: SigningKeys, clock: Callable[[], float] = time.time
    ) -> None:
        self.app_id = app_id
        self.keys = keys
        self._clock = clock
        self._verified: dict[str, _Verified] = {}

    async def check(self, header: str | None, *, service_url: str, channel_id: str) -> None:
        """Return if the request is from the Bot Connector for our bot; raise ``Unauthorized``."""
        if not header:
            raise Unauthorized("no Authorization header")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise Unauthorized("not a Bearer token")
        token = token.strip()
        seen = self._verified.get(token)
        if seen is None or not self.keys.published(seen.kid):
            seen = await self._verify(token)
        elif self._clock() > seen.expires + CLOCK_SKEW:
            del self._verified[token]
            raise Unauthorized("token expired")
        # Per activity, whatever the token: the channel it claims and where we would answer.
        if not _sdk.endorsed(channel_id, seen.endorsements):
            raise Unauthorized("signing key not endorsed for this channel")
        if seen.service_url != service_url:
            raise Unauthorized("serviceUrl does not match the token")

    async def _verify(self, token: str) -> _Verified:
        try:
            head = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise Unauthorized("malformed token") from e
        if head.get("alg") not in _sdk.SIGNING_ALGORITHMS:
            raise Unauthorized("signing algorithm not allowed")
        kid = head.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token names no signing key")
        key = await self.keys.get(kid)
        if key is None:
            raise Unauthorized("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=list(_sdk.SIGNING_ALGORITHMS),
                audience=self.app_id,
                issuer=_sdk.BOTFRAMEWORK_ISSUER,
                leeway=CLOCK_SKEW,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthorized("token expired") from e
        except jwt.PyJWTError as e:
            raise Unauthorized(f"token rejected: {type(e).__name__}") from e
        verified = _Verified(
            kid, key.endorsements, float(claims["exp"]), claims.get(_sdk.SERVICE_URL_CLAIM)
        )
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = verified
        return verified


def is_loopback_url(url: str) -> bool:
    """True only for http(s) URLs whose host is a loopback address or ``localhost``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
