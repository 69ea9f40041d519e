"""The doctor's Teams line: ``teams token``, a client-credentials token from Entra ID with the
configured secret or certificate.

``MICROSOFT_TOKEN_URL`` overrides the Entra ID token endpoint, exactly as it does for the adapter
(tests, sovereign clouds); by default it is
``https://login.microsoftonline.com/<tenant or botframework.com>/oauth2/v2.0/token``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx

from adapters.teams.hints import AAD_HINTS
from adapters.teams.settings import TeamsSettings
from app.admin.doctor import Check

DEFAULT_LOGIN_URL = "https://login.microsoftonline.com"
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"


async def check_teams(
    client: httpx.AsyncClient, settings: TeamsSettings, env: Mapping[str, str]
) -> Check:
    app_id = settings.microsoft_app_id
    if not app_id:
        why = (
            "local mode (TEAMS_ALLOW_UNAUTHENTICATED)"
            if settings.teams_allow_unauthenticated
            else "MICROSOFT_APP_ID is not set"
        )
        return Check("SKIP", "teams token", why)
    if settings.microsoft_app_type == "UserAssignedMSI":
        return Check(
            "SKIP",
            "teams token",
            "UserAssignedMSI: the token comes from the Azure "
            "managed identity endpoint, reachable only inside Azure",
        )
    secret = settings.secret("microsoft_app_password")
    cert_path = settings.microsoft_app_certificate_path
    if not secret and not cert_path:
        return Check(
            "FAIL",
            "teams token",
            "neither MICROSOFT_APP_PASSWORD nor MICROSOFT_APP_CERTIFICATE_PATH is set",
            "create a client secret (or upload a certificate) for the bot's app registration",
        )
    tenant = settings.microsoft_app_tenant_id
    if settings.microsoft_app_type == "SingleTenant" and not tenant:
        return Check(
            "FAIL",
            "teams token",
            "SingleTenant bots need MICROSOFT_APP_TENANT_ID",
            "set it to your Entra tenant id (or MICROSOFT_APP_TYPE=MultiTenant for "
            "older multi-tenant bots)",
        )
    url = (
        settings.microsoft_token_url
        or env.get("MICROSOFT_TOKEN_URL")
        or f"{DEFAULT_LOGIN_URL}/{tenant or 'botframework.com'}/oauth2/v2.0/token"
    )
    login = urlunsplit(urlsplit(url)._replace(path="", query=""))
    form = {"grant_type": "client_credentials", "client_id": app_id, "scope": BOT_FRAMEWORK_SCOPE}
    if secret:
        form["client_secret"] = secret
    else:
        # cryptography and PyJWT load only when a certificate is checked (every admin command
        # loads this module).
        from adapters.teams.client_assertion import CertificateError, load_certificate

        try:
            cert = await asyncio.to_thread(
                load_certificate,
                str(cert_path),
                settings.secret("microsoft_app_certificate_password"),
            )
        except CertificateError as e:
            return Check(
                "FAIL",
                "teams token",
                f"MICROSOFT_APP_CERTIFICATE_PATH: {e}",
                "a PEM with the private key and certificate, or a .pfx "
                "(MICROSOFT_APP_CERTIFICATE_PASSWORD if encrypted)",
            )
        form.update(cert.form(client_id=app_id, token_url=url))
    try:
        r = await client.post(url, data=form)
    except httpx.HTTPError as e:
        return Check(
            "FAIL",
            "teams token",
            f"cannot reach {login}: {type(e).__name__}",
            "check outbound HTTPS to the Microsoft login endpoint",
        )
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
        return Check(
            "OK",
            "teams token",
            f"token for app {app_id} obtained (expires in {body.get('expires_in', '?')} s)",
        )
    body = body if isinstance(body, dict) else {}
    desc = str(body.get("error_description", "")).split("\n")[0].split(" Trace ID")[0][:200]
    code = desc.split(":", 1)[0] if desc.startswith("AADSTS") else ""
    return Check(
        "FAIL",
        "teams token",
        f"login refused ({body.get('error', r.status_code)}): {desc or 'no description'}",
        AAD_HINTS.get(
            code, "check MICROSOFT_APP_ID, MICROSOFT_APP_PASSWORD and MICROSOFT_APP_TENANT_ID"
        ),
    )
