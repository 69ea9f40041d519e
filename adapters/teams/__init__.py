"""Microsoft Teams adapter: channel mentions, group and 1:1 chats, streamed answers, feedback.

Activities are the Microsoft 365 Agents SDK's models (``_sdk.py``, the only module that imports
it); JWT validation, tokens and the Bot Connector calls are our own on aiohttp and PyJWT
(docs/teams.md, Which SDK). ``PLATFORM`` is what the core discovers (entry point group
``dify_bridge.adapters``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import structlog

from adapters.teams.admin import ADMIN
from adapters.teams.settings import TeamsSettings, teams_settings
from app.seams.plugin import Platform
from app.server import logs

if TYPE_CHECKING:
    from adapters.teams.adapter import TeamsAdapter
    from adapters.teams.client_assertion import Certificate
    from app.seams.context import AdapterContext

log = structlog.get_logger(__name__)

__all__ = ["PLATFORM", "create"]

DEFAULT_TENANT_RPS = 28.0

logs.quiet("microsoft_agents")


def create(ctx: AdapterContext) -> TeamsAdapter | None:
    """The Teams adapter, or None (after one log line naming what to set) when not configured."""
    # Imported when serving only: the settings and the admin commands load this package too.
    from adapters.teams.adapter import TeamsAdapter
    from adapters.teams.client_assertion import CertificateError, load_certificate

    s = teams_settings(ctx.settings)
    app_id = (s.microsoft_app_id or "").strip() or None
    password = s.secret("microsoft_app_password")
    # Overridable token endpoint (tests, sovereign clouds).
    token_url = s.microsoft_token_url or os.environ.get("MICROSOFT_TOKEN_URL")
    rps = _tenant_rps(s.teams_tenant_rps)
    if app_id is None:
        if not s.teams_allow_unauthenticated:
            log.info(
                "teams.disabled",
                hint="set MICROSOFT_APP_ID, MICROSOFT_APP_PASSWORD and MICROSOFT_APP_TENANT_ID "
                "(or TEAMS_ALLOW_UNAUTHENTICATED=true for local testing) to enable Teams",
            )
            return None
        return TeamsAdapter(ctx, app_id=None, password=None, token_url=token_url, tenant_rps=rps)
    missing = []
    needs_tenant = s.microsoft_app_type in ("SingleTenant", "UserAssignedMSI")
    if needs_tenant and not s.microsoft_app_tenant_id:
        missing.append("MICROSOFT_APP_TENANT_ID")
    cert_path = (s.microsoft_app_certificate_path or "").strip() or None
    if s.microsoft_app_type != "UserAssignedMSI" and not password and not cert_path:
        missing.append("MICROSOFT_APP_PASSWORD (or MICROSOFT_APP_CERTIFICATE_PATH)")
    if missing:
        log.error(
            "teams.disabled",
            hint=f"MICROSOFT_APP_TYPE={s.microsoft_app_type} also needs {', '.join(missing)}",
        )
        return None
    certificate: Certificate | None = None
    if cert_path and s.microsoft_app_type != "UserAssignedMSI" and not password:
        try:
            # Once, at start-up (before the service accepts requests).
            certificate = load_certificate(
                cert_path, s.secret("microsoft_app_certificate_password")
            )
        except CertificateError as e:
            log.error(
                "teams.disabled",
                key="MICROSOFT_APP_CERTIFICATE_PATH",
                problem=str(e),
                hint="a PEM with the private key and certificate, or a .pfx "
                "(MICROSOFT_APP_CERTIFICATE_PASSWORD if encrypted)",
            )
            return None
    if s.teams_allow_unauthenticated:
        log.warning(
            "teams.allow_unauthenticated_ignored",
            detail="MICROSOFT_APP_ID is set, so every request's JWT is validated anyway",
        )
    return TeamsAdapter(
        ctx,
        app_id=app_id,
        password=password,
        token_url=token_url,
        tenant_rps=rps,
        certificate=certificate,
    )


def _tenant_rps(raw: object) -> float:
    """``TEAMS_TENANT_RPS``: requests per second to one tenant from all replicas together
    (Teams allows 30 per app; the budget is kept in Redis)."""
    if raw is None or raw == "":
        return DEFAULT_TENANT_RPS
    try:
        value = float(str(raw))
    except ValueError:
        value = 0.0
    if not 0.5 <= value <= 1000:
        log.error("teams.bad_setting", key="TEAMS_TENANT_RPS", hint="a number from 0.5 to 1000")
        return DEFAULT_TENANT_RPS
    return value


PLATFORM = Platform(name="teams", create=create, settings=TeamsSettings, admin=ADMIN)
