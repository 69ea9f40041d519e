"""Slack adapter: mentions, DMs, threads and ``/ask`` answered with streamed Dify answers.

``PLATFORM`` is what the core discovers (entry point group ``dify_bridge.adapters``); see
README.md (Slack) for setup.
"""

from adapters.slack._adapter import SLACK_LIMITS, SlackAdapter, create
from adapters.slack.admin import ADMIN
from adapters.slack.settings import SlackSettings
from app.plugin import Platform

__all__ = ["PLATFORM", "SLACK_LIMITS", "SlackAdapter", "create"]

PLATFORM = Platform(name="slack", create=create, settings=SlackSettings, admin=ADMIN)
