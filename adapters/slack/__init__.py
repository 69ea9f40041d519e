"""Slack adapter: mentions, DMs, threads and ``/ask`` answered with streamed Dify answers.

``PLATFORM`` is what the core discovers (entry point group ``dify_bridge.adapters``); see
docs/slack.md for setup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.slack.admin import ADMIN
from adapters.slack.settings import SlackSettings
from app.seams.plugin import Platform
from app.server import logs

if TYPE_CHECKING:
    from adapters.slack._adapter import SlackAdapter
    from app.seams.context import AdapterContext

__all__ = ["PLATFORM", "create"]


def create(ctx: AdapterContext) -> SlackAdapter | None:
    """The Slack adapter, or None (after one log line naming what to set) when not configured."""
    # Imported when serving only: the settings and the admin commands load this package too.
    from adapters.slack._adapter import create as build

    return build(ctx)


PLATFORM = Platform(name="slack", create=create, settings=SlackSettings, admin=ADMIN)

logs.quiet("slack_bolt", "slack_sdk")
