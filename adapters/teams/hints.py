"""What to do when Entra ID refuses the bot's credentials (by AADSTS code): shared by the token
client's log lines and the doctor, so both give the same fix."""

from __future__ import annotations

AAD_HINTS = {
    "AADSTS7000215": "the client secret is wrong: copy the secret's Value (not its ID) into "
    "MICROSOFT_APP_PASSWORD",
    "AADSTS7000222": "the client secret expired: create a new one in Entra ID",
    "AADSTS700016": "the app id is not in this tenant: check MICROSOFT_APP_ID and "
    "MICROSOFT_APP_TENANT_ID",
    "AADSTS90002": "the tenant does not exist: check MICROSOFT_APP_TENANT_ID",
    "AADSTS900023": "MICROSOFT_APP_TENANT_ID is not a valid tenant id or domain",
}
