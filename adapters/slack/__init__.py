"""Slack adapter: mentions, DMs, threads and ``/ask`` answered with streamed Dify answers.

``PLATFORM`` is what the core discovers (entry point group ``dify_bridge.adapters``); see
README.md (Slack) for setup.
"""

from adapters.slack._adapter import SLACK_LIMITS, SlackAdapter, create
from app import logs
from app.plugin import Platform

__all__ = ["PLATFORM", "SLACK_LIMITS", "SlackAdapter", "create"]

logs.quiet("slack_bolt", "slack_sdk")

PLATFORM = Platform(name="slack", create=create)
