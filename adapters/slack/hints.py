"""What to do when Slack refuses the bot token: shared by the adapter's start-up check and the
doctor, so both give the same fix."""

from __future__ import annotations

SLACK_AUTH_HINTS = {
    "invalid_auth": "SLACK_BOT_TOKEN is wrong: copy the Bot User OAuth Token (xoxb-...)",
    "not_authed": "set SLACK_BOT_TOKEN",
    "token_revoked": "the app was uninstalled or the token revoked: reinstall the app",
    "account_inactive": "the app was uninstalled or the token revoked: reinstall the app",
    "not_allowed_token_type": "use an xoxb- bot token here and an xapp- token for SLACK_APP_TOKEN",
}
