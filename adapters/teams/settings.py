"""Teams' settings: the ``MICROSOFT_APP_*`` and ``TEAMS_*`` environment variables, validated
with the core settings.

The adapter, ``manifest teams`` and the doctor read them as ``settings.platform("teams")``
(:func:`teams_settings`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from app.config.settings import PlatformSettings, Settings


class TeamsSettings(PlatformSettings):
    """The bot's app registration, its credentials and the Bot Connector budget."""

    microsoft_app_id: str | None = Field(None, description="Bot's Microsoft app id.")
    microsoft_app_password: SecretStr | None = Field(None, description="Bot's client secret.")
    microsoft_app_certificate_path: str | None = Field(
        None,
        description="Instead of a client secret: a PEM (private key + certificate) or PKCS#12 "
        "file of a certificate uploaded to the bot's app registration.",
    )
    microsoft_app_certificate_password: SecretStr | None = Field(
        None, description="Password of an encrypted certificate file."
    )
    microsoft_app_tenant_id: str | None = Field(
        None, description="Required for SingleTenant and UserAssignedMSI."
    )
    microsoft_app_type: Literal["SingleTenant", "MultiTenant", "UserAssignedMSI"] = Field(
        "SingleTenant", description="Bot registration type."
    )
    teams_allow_unauthenticated: bool = Field(
        False,
        description="Local mode without an app id (Emulator, tests): loopback serviceUrls only.",
    )
    microsoft_token_url: str | None = Field(
        None,
        description="Override the Entra ID token endpoint for outgoing Teams calls (tests, "
        "sovereign clouds). Default: login.microsoftonline.com for the tenant.",
    )
    teams_tenant_rps: float = Field(
        28.0,
        ge=0.5,
        le=1000,
        description="Bot Connector calls per second per tenant from all replicas together (Teams "
        "allows 30 per app per tenant; shared through Redis).",
    )
    teams_openid_metadata_url: str = Field(
        "https://login.botframework.com/v1/.well-known/openidconfiguration",
        description="Where inbound JWT signing keys are found.",
    )


def teams_settings(settings: Settings) -> TeamsSettings:
    """Teams' sub-model of ``settings``."""
    sub = settings.platform("teams")
    if not isinstance(sub, TeamsSettings):
        raise TypeError(f"settings of 'teams' are a {type(sub).__name__}, not TeamsSettings")
    return sub
