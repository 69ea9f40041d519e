"""Slack adapter: mentions, DMs, threads and ``/ask`` answered with streamed Dify answers.

``create(ctx)`` is the entry point the core discovers (``dify_bridge.adapters``); see
README.md (Slack) for setup.
"""

from adapters.slack._adapter import SLACK_LIMITS, SlackAdapter, create

__all__ = ["SLACK_LIMITS", "SlackAdapter", "create"]
