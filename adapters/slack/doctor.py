"""The doctor's Slack lines: ``slack auth`` (``auth.test``), ``slack scopes`` (the token's
``x-oauth-scopes`` against what the features need) and ``slack events`` (signing secret in HTTP
mode, or ``apps.connections.open`` with the app-level token in Socket Mode)."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.slack.hints import SLACK_AUTH_HINTS
from adapters.slack.manifest import needed_slack_scopes
from adapters.slack.settings import SlackSettings
from app.admin.doctor import Check
from app.config.settings import Route


async def _slack_post(
    client: httpx.AsyncClient, settings: SlackSettings, method: str, token: str
) -> tuple[dict[str, Any], httpx.Response]:
    r = await client.post(
        settings.slack_api_url.rstrip("/") + "/" + method,
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"ok": False, "error": f"HTTP {r.status_code} without a Slack API body"}
    return body, r


async def check_slack(
    client: httpx.AsyncClient, settings: SlackSettings, routes: list[Route]
) -> list[Check]:
    token = settings.secret("slack_bot_token")
    if not token:
        why = (
            "OAuth install: each workspace has its own token"
            if settings.slack_client_id
            else "SLACK_BOT_TOKEN is not set"
        )
        return [Check("SKIP", "slack auth", why)]
    try:
        body, resp = await _slack_post(client, settings, "auth.test", token)
    except httpx.HTTPError as e:
        return [
            Check(
                "FAIL",
                "slack auth",
                f"cannot reach {settings.slack_api_url}: {type(e).__name__}",
                "check network access to Slack (or SLACK_API_URL)",
            )
        ]
    if body.get("ok") is not True:
        error = str(body.get("error"))
        return [
            Check(
                "FAIL",
                "slack auth",
                f"auth.test failed: {error}",
                SLACK_AUTH_HINTS.get(error, "check SLACK_BOT_TOKEN"),
            )
        ]
    checks = [
        Check(
            "OK",
            "slack auth",
            f"bot {body.get('user', '?')} in workspace "
            f"{body.get('team', '?')} ({body.get('team_id', '?')})",
        )
    ]
    checks.append(_scope_check(resp.headers.get("x-oauth-scopes"), routes))
    checks.append(await _slack_transport_check(client, settings))
    return checks


def routes_need_email(routes: list[Route]) -> bool:
    """Whether a route that can answer in Slack passes the speaker's email to Dify."""
    return any(
        src == "speaker_email"
        for r in routes
        if r.config.match.platform in (None, "slack")
        for src in r.config.inputs.values()
    )


def _scope_check(header: str | None, routes: list[Route]) -> Check:
    if header is None:
        return Check("SKIP", "slack scopes", "Slack did not report the token's scopes")
    granted = {s.strip() for s in header.split(",") if s.strip()}
    needed = needed_slack_scopes(speaker_email=routes_need_email(routes))
    missing = [s for s in needed if s not in granted]
    if missing:
        reasons = "; ".join(f"{s} ({needed[s]})" for s in missing)
        return Check(
            "FAIL",
            "slack scopes",
            f"the bot token lacks {reasons}",
            "add them to manifests/slack/manifest.yaml, run `dify-bridge manifest slack "
            "--push`, then reinstall the app to the workspace",
        )
    extra = sorted(granted - set(needed))
    note = f"; not needed: {', '.join(extra)}" if extra else ""
    return Check("OK", "slack scopes", f"all {len(needed)} needed scopes granted{note}")


async def _slack_transport_check(client: httpx.AsyncClient, settings: SlackSettings) -> Check:
    app_token = settings.secret("slack_app_token")
    if not app_token:
        if not settings.secret("slack_signing_secret"):
            return Check(
                "FAIL",
                "slack events",
                "HTTP mode (no SLACK_APP_TOKEN) but "
                "SLACK_SIGNING_SECRET is not set: every event would be rejected",
                "copy the Signing Secret (Basic Information) into SLACK_SIGNING_SECRET, "
                "or set SLACK_APP_TOKEN for Socket Mode",
            )
        return Check("OK", "slack events", "HTTP mode: events arrive at /slack/events, signed")
    try:
        body, _ = await _slack_post(client, settings, "apps.connections.open", app_token)
    except httpx.HTTPError as e:
        return Check(
            "FAIL",
            "slack events",
            f"Socket Mode: cannot reach Slack: {type(e).__name__}",
            "check network access to slack.com",
        )
    if body.get("ok") is not True:
        return Check(
            "FAIL",
            "slack events",
            f"Socket Mode: apps.connections.open failed: {body.get('error')}",
            "SLACK_APP_TOKEN must be an app-level token (xapp-) "
            "with connections:write, and Socket Mode must be on in the app settings",
        )
    return Check("OK", "slack events", "Socket Mode: the app-level token opens a connection")
