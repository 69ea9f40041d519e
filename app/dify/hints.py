"""What an operator should check when a Dify call fails: one sentence for the log line of a
failed answer and for the start-up check of the routes."""

from __future__ import annotations

from app.dify.errors import DifyConnectionError, DifyError


def hint(e: DifyError, base_url: str = "") -> str:
    """What an operator should check, for the log line of a failed answer.

    ``base_url`` is the route's Dify URL: connection failures and a wrong path name it."""
    code = e.code or ""
    url = base_url or "DIFY_BASE_URL"
    if isinstance(e, DifyConnectionError) or code == "timeout_connect":
        return (
            f"cannot connect to Dify at {url}: check DIFY_BASE_URL (or the route's "
            "dify.base_url), that Dify runs, and the network"
        )
    if e.status in (404, 405) and code.startswith("http_"):
        # Dify itself answers with its JSON error body; a bare 404/405 comes from something else
        # at that address (Dify's web UI, a proxy): the path is wrong.
        missing_v1 = " (it does not end in /v1)" if not base_url.rstrip("/").endswith("/v1") else ""
        return (
            f"{url} is not Dify's Service API{missing_v1}: DIFY_BASE_URL (or the route's "
            "dify.base_url) must be the API root ending in /v1, e.g. https://api.dify.ai/v1"
        )
    if code.startswith("provider_") or code == "completion_request_error":
        return "check the model provider credentials and quota in Dify"
    if e.status in (401, 403):
        return "check the route's Dify API key (dify-bridge doctor)"
    if code in ("not_chat_app", "not_workflow_app", "app_unavailable"):
        return "the route's dify.mode does not match the Dify app's mode"
    return ""


__all__ = ["hint"]
