"""Bearer tokens for the bot's own calls to the Bot Connector (outgoing auth).

``SingleTenant``/``MultiTenant``: OAuth client credentials against Entra ID
(``login.microsoftonline.com/<tenant or botframework.com>/oauth2/v2.0/token``, scope
``https://api.botframework.com/.default``), proven by the client secret or by a certificate
(a signed client assertion, ``client_assertion``). ``UserAssignedMSI``: the Azure instance
metadata endpoint with the managed identity's client id. Tokens are cached until 5 minutes before
expiry; one refresh at a time. ``MICROSOFT_TOKEN_URL`` overrides the endpoint (tests, sovereign
clouds). Our own client on aiohttp rather than MSAL: docs/teams.md, Which SDK.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from adapters.teams import _sdk
from adapters.teams.client_assertion import Certificate
from adapters.teams.hints import AAD_HINTS
from app.errors import PlatformError

log = structlog.get_logger(__name__)

MSI_ENDPOINT = "http://169.254.169.254/metadata/identity/oauth2/token"
REFRESH_MARGIN = 300.0
REFUSED_BACKOFF = 30.0


class TokenSource:
    """Produces the ``Authorization`` header value for outgoing calls (None: no auth)."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        app_id: str | None,
        password: str | None,
        app_type: str,
        tenant_id: str | None,
        token_url: str | None = None,
        certificate: Certificate | None = None,
    ) -> None:
        self._session = session
        self.app_id = app_id
        self._password = password
        self.app_type = app_type
        self.tenant_id = tenant_id
        self._certificate = certificate
        self.token_url = token_url or self._default_url()
        self._token: str | None = None
        self._expires = 0.0
        self._refused_until = 0.0
        self._lock = asyncio.Lock()
        # (reason, setting, fix) of the last failed fetch, for /readyz.
        self.last_problem = ("", "", "")

    def _default_url(self) -> str:
        if self.app_type == "UserAssignedMSI":
            return MSI_ENDPOINT
        authority = (
            self.tenant_id
            if self.app_type == "SingleTenant" and self.tenant_id
            else _sdk.MULTI_TENANT_AUTHORITY
        )
        return f"{_sdk.LOGIN_URL_PREFIX}{quote(authority, safe='')}{_sdk.TOKEN_ENDPOINT_PATH}"

    async def header(self) -> str | None:
        if not self.app_id:
            return None  # local mode: the loopback Emulator needs no token
        if self._token is None or time.monotonic() > self._expires:
            async with self._lock:
                if self._token is None or time.monotonic() > self._expires:
                    if time.monotonic() < self._refused_until:
                        # Do not hammer Entra ID with credentials it just refused.
                        raise PlatformError(
                            "the bot's Microsoft credentials were refused", code="token_refused"
                        )
                    await self._fetch()
        return f"Bearer {self._token}"

    async def check(self) -> None:
        """Make sure a token can be had now (the readiness probe); raises PlatformError.

        Unlike :meth:`header` it asks again even within the pause after a refusal: the probe
        keeps its own, slower pace."""
        if not self.app_id:
            return
        async with self._lock:
            if self._token is None or time.monotonic() > self._expires:
                await self._fetch()

    async def _fetch(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        try:
            if self.app_type == "UserAssignedMSI":
                params = {
                    "api-version": "2018-02-01",
                    "resource": _sdk.BOTFRAMEWORK_SCOPE,
                    "client_id": self.app_id or "",
                }
                async with self._session.get(
                    self.token_url, params=params, headers={"Metadata": "true"}, timeout=timeout
                ) as resp:
                    status, data = resp.status, await _json(resp)
            else:
                form = {
                    "grant_type": "client_credentials",
                    "client_id": self.app_id or "",
                    "scope": f"{_sdk.BOTFRAMEWORK_SCOPE}/.default",
                }
                if self._certificate is not None:
                    proof = self._certificate.form(
                        client_id=self.app_id or "", token_url=self.token_url
                    )
                    form.update(proof)
                else:
                    form["client_secret"] = self._password or ""
                async with self._session.post(self.token_url, data=form, timeout=timeout) as resp:
                    status, data = resp.status, await _json(resp)
        except (aiohttp.ClientError, TimeoutError) as e:
            self.last_problem = (
                f"the Microsoft token endpoint {self.token_url} cannot be reached "
                f"({type(e).__name__})",
                "MICROSOFT_TOKEN_URL"
                if "login.microsoftonline.com" not in self.token_url
                else "network",
                "allow outbound HTTPS to login.microsoftonline.com (proxy, firewall, DNS)",
            )
            raise PlatformError(
                f"cannot reach the Microsoft token endpoint ({type(e).__name__})",
                code="token_unreachable",
                retryable=True,
            ) from e
        token = data.get("access_token")
        if status != 200 or not isinstance(token, str) or not token:
            # Entra's error code (AADSTS...) says what to fix and holds no secret.
            error = str(data.get("error", "")) or f"HTTP {status}"
            desc = str(data.get("error_description", ""))
            aad = desc.split(":", 1)[0].strip() if desc.startswith("AADSTS") else ""
            fix = aad_hint(aad)
            self.last_problem = (
                f"Entra ID refused the bot's credentials ({error}{', ' + aad if aad else ''})",
                (
                    "MICROSOFT_APP_CERTIFICATE_PATH"
                    if self._certificate is not None
                    else "MICROSOFT_APP_PASSWORD"
                )
                if aad.startswith("AADSTS7000")
                else "MICROSOFT_APP_ID / MICROSOFT_APP_PASSWORD / MICROSOFT_APP_TENANT_ID",
                fix,
            )
            log.error(
                "teams.token.rejected",
                status=status,
                error=error,
                code=aad or None,
                setting=self.last_problem[1],
                fix=fix,
            )
            self._refused_until = time.monotonic() + REFUSED_BACKOFF
            raise PlatformError(
                "the bot's Microsoft credentials were refused", code="token_refused"
            )
        try:
            lifetime = float(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        self._token = token
        self._expires = time.monotonic() + max(30.0, lifetime - REFRESH_MARGIN)
        self._refused_until = 0.0


def aad_hint(code: str) -> str:
    return AAD_HINTS.get(
        code,
        "check MICROSOFT_APP_ID, MICROSOFT_APP_PASSWORD, "
        "MICROSOFT_APP_TENANT_ID and MICROSOFT_APP_TYPE",
    )


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
