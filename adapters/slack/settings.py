"""Slack's settings: the ``SLACK_*`` environment variables, validated with the core settings.

The adapter, ``manifest slack`` and the doctor read them as ``settings.platform("slack")``
(:func:`slack_settings`).
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from app.config.settings import PlatformSettings, Settings


class SlackSettings(PlatformSettings):
    """Bot-token or OAuth mode, HTTP or Socket Mode, and the manifest API."""

    slack_bot_token: SecretStr | None = Field(None, description="`xoxb-` token (one workspace).")
    slack_signing_secret: SecretStr | None = Field(
        None, description="Verifies `POST /slack/events`."
    )
    slack_app_token: SecretStr | None = Field(
        None, description="`xapp-` token: turns on Socket Mode (no public URL needed)."
    )
    slack_client_id: str | None = Field(None, description="OAuth install flow (many workspaces).")
    slack_client_secret: SecretStr | None = Field(None, description="OAuth install flow.")
    slack_state_secret: SecretStr | None = Field(None, description="OAuth state signing secret.")
    slack_api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL.")
    slack_slash_command: str = Field("/ask", description="The slash command the bot answers.")
    slack_config_token: SecretStr | None = Field(
        None, description="App configuration token for `manifest slack --push`."
    )
    slack_app_id: str | None = Field(None, description="App id for `manifest slack --push`.")


def slack_settings(settings: Settings) -> SlackSettings:
    """Slack's sub-model of ``settings``."""
    sub = settings.platform("slack")
    if not isinstance(sub, SlackSettings):
        raise TypeError(f"settings of 'slack' are a {type(sub).__name__}, not SlackSettings")
    return sub
