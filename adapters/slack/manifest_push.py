"""Publish a Slack app manifest through Slack's app manifest API: ``apps.manifest.validate``
then ``apps.manifest.update``, with an app configuration token. Slack's refusals become readable
lines, one problem each, with the fix for the usual token and app id mistakes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class SlackManifestApiError(Exception):
    """Slack's manifest API said no; ``lines`` are readable, one problem each."""

    def __init__(self, method: str, error: str, lines: list[str]) -> None:
        self.method = method
        self.error = error
        self.lines = lines
        super().__init__(f"{method}: {error}")


_SLACK_ERROR_HINTS = {
    "invalid_auth": "SLACK_CONFIG_TOKEN is not valid: create an app configuration token "
    "(api.slack.com/apps, 'Your App Configuration Tokens')",
    "token_expired": "configuration tokens last 12 hours: generate a new SLACK_CONFIG_TOKEN",
    "not_authed": "set SLACK_CONFIG_TOKEN",
    "not_allowed_token_type": "use an app configuration token (xoxe.xoxp-...), not a bot or "
    "app-level token",
    "app_not_found": "check SLACK_APP_ID (Basic Information page, starts with A)",
    "invalid_app_id": "check SLACK_APP_ID (Basic Information page, starts with A)",
    "invalid_app": "check SLACK_APP_ID (Basic Information page, starts with A)",
    "ratelimited": "Slack is rate limiting manifest calls: wait a minute and retry",
}


async def _slack_call(
    client: httpx.AsyncClient, api_url: str, method: str, token: str, form: dict[str, str]
) -> dict[str, Any]:
    url = api_url.rstrip("/") + "/" + method
    try:
        r = await client.post(url, data=form, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as e:
        raise SlackManifestApiError(method, "unreachable", [f"{url}: {type(e).__name__}"]) from e
    if r.status_code == 429:
        raise SlackManifestApiError(
            method, "ratelimited", [f"retry after {r.headers.get('Retry-After', '?')} s"]
        )
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SlackManifestApiError(
            method,
            f"http_{r.status_code}",
            [f"{url} answered HTTP {r.status_code} without a Slack API body: check SLACK_API_URL"],
        )
    if body.get("ok") is True:
        return body
    error = str(body.get("error") or "unknown_error")
    lines: list[str] = []
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            lines.append(f"{item.get('pointer') or '/'}: {item.get('message') or item}")
    if error in _SLACK_ERROR_HINTS:
        lines.append(_SLACK_ERROR_HINTS[error])
    raise SlackManifestApiError(method, error, lines)


async def push_slack_manifest(
    manifest: dict[str, Any],
    *,
    api_url: str,
    config_token: str,
    app_id: str,
    client: httpx.AsyncClient | None = None,
    request_timeout: float = 15.0,
) -> dict[str, Any]:
    """Validate then update the app's manifest; returns Slack's ``apps.manifest.update`` body."""
    form = {"app_id": app_id, "manifest": json.dumps(manifest)}
    own = client is None
    c = client or httpx.AsyncClient(timeout=request_timeout)
    try:
        await _slack_call(c, api_url, "apps.manifest.validate", config_token, form)
        return await _slack_call(c, api_url, "apps.manifest.update", config_token, form)
    finally:
        if own:
            await c.aclose()
