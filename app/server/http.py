"""The one aiohttp application the adapters mount on, plus health, readiness and metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from app.server.service import Service

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")


def _body_limit(max_bytes: int) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Refuse early on the declared length; aiohttp's client_max_size catches chunked bodies.
        if request.content_length is not None and request.content_length > max_bytes:
            return web.json_response(
                {"error": "request_too_large", "limit_bytes": max_bytes}, status=413
            )
        return await handler(request)

    return middleware


async def healthz(_: web.Request) -> web.Response:
    """Alive: the event loop answers. Nothing external is checked (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    checks = {
        "redis": await service.store.ping(),
        "config": service.config_loaded,
        "accepting": service.bridge_accepting,
        # Every platform that is configured can work (token accepted, connection up).
        "platforms": service.health.ok,
    }
    ok = all(checks.values())
    body: dict[str, object] = {"ready": ok, "checks": checks}
    if not ok:
        reasons = service.health.reasons()
        if not checks["redis"]:
            reasons.append("redis: does not answer PING (check REDIS_URL)")
        if not checks["accepting"]:
            reasons.append("shutting down")
        body["reasons"] = reasons
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    token = service.settings.secret("metrics_token")
    if token:
        got = request.headers.get("Authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
    return web.Response(
        body=service.metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def build_app(service: Service, *, include_admin: bool = True) -> web.Application:
    app = web.Application(
        client_max_size=service.settings.max_body_bytes,
        middlewares=[_body_limit(service.settings.max_body_bytes)],
    )
    app[SERVICE_KEY] = service
    app.router.add_get("/healthz", healthz)
    if include_admin:
        add_admin_routes(app)
    return app


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def build_admin_app(service: Service) -> web.Application:
    """Admin routes on their own port (ADMIN_PORT), so they need not be public."""
    app = web.Application(client_max_size=4096)
    app[SERVICE_KEY] = service
    app.router.add_get("/healthz", healthz)
    add_admin_routes(app)
    return app
