"""The composition root: settings -> Redis, store, Dify pool, redaction, pipeline, adapters, server.

Used by ``dify-bridge serve`` and, unchanged, by the tests (which point base URLs at their fakes).
Adapters are found through the ``dify_bridge.adapters`` entry point group, so the core imports no
platform module.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Mapping, Sequence

import aiohttp
import structlog
from aiohttp import web

from app.config.settings import (
    BridgeFile,
    Route,
    Settings,
    load_bridge_file,
    resolve_routes,
    routing_file,
)
from app.dify.pool import DifyClientPool
from app.dify.wire import DifyTimeouts, RetryPolicy
from app.errors import ConfigError
from app.pipeline.bridge import Bridge
from app.pipeline.model import Adapter
from app.pipeline.routing import Router
from app.redact import RedactionService
from app.seams.bridge_api import CoreBridgeApi
from app.seams.context import AdapterContext
from app.seams.plugin import discover
from app.server import tracing
from app.server.health import Health
from app.server.http import build_admin_app, build_app
from app.server.loop import name as loop_name
from app.server.metrics import Metrics
from app.state.inflight import InflightRegistry
from app.state.platform_store import AdapterStore
from app.state.redis_conn import RedisHandle, connect, embedded_refusal
from app.state.store import RedisStore

log = structlog.get_logger(__name__)


def load_routes(
    settings: Settings,
    bridge_file: BridgeFile | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> list[Route]:
    """Routes from the routing file (see :func:`routing_file`) or the one default route.

    ``env`` is where ``api_key_env`` names are looked up (default: the process environment).
    """
    path = ""
    if bridge_file is None:
        found = routing_file(settings)
        if found is not None:
            path = found
            bridge_file = load_bridge_file(path)
        else:
            bridge_file = BridgeFile()
    return resolve_routes(settings, bridge_file, file=path, env=env)


class Service:
    """Everything one ``dify-bridge serve`` process runs."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisHandle,
        store: RedisStore,
        bridge: Bridge,
        metrics: Metrics,
        dify: DifyClientPool,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.bridge = bridge
        self.metrics = metrics
        self.dify = dify
        self.adapters: list[Adapter] = []
        self.config_loaded = True
        self.health = Health()
        # Set by a second SIGTERM/Ctrl-C: stop now, without waiting for streaming answers.
        self.hurry = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.app = build_app(self, include_admin=settings.admin_port is None)
        self._runners: list[web.AppRunner] = []
        self._watch: asyncio.Task[None] | None = None
        self._config_mtime: float | None = None
        self.port = 0
        self.admin_port: int | None = None
        self.env: Mapping[str, str] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._check: asyncio.Task[None] | None = None

    @property
    def bridge_accepting(self) -> bool:
        return self.bridge._accepting

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def create(
        cls,
        settings: Settings,
        *,
        bridge_file: BridgeFile | None = None,
        adapters: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Service:
        """Build the service; raises :class:`ConfigError` with what to fix."""
        routes = load_routes(settings, bridge_file, env=env)
        refusal = embedded_refusal(settings, os.environ if env is None else env)
        if refusal is not None:
            raise ConfigError(refusal, key="REDIS_URL")
        tracing.configure(settings.otel_exporter_otlp_endpoint)
        redis = await connect(
            settings.redis_url,
            data_dir=settings.redis_data_dir,
            max_connections=settings.redis_max_connections,
        )
        store = RedisStore(
            redis.client,
            prefix=settings.redis_key_prefix,
            conversation_ttl=settings.conversation_ttl_days * 86400,
            dedup_ttl=settings.dedup_ttl_seconds,
            lock_ttl=settings.lock_ttl_seconds,
        )
        metrics = Metrics()
        dify = DifyClientPool(
            transport=settings.dify_transport,
            timeouts=DifyTimeouts(
                connect=settings.dify_connect_timeout,
                first_event=settings.dify_first_event_timeout,
                idle=settings.dify_idle_timeout,
            ),
            retry=RetryPolicy(max_retries=settings.dify_max_retries),
            breaker_failures=settings.breaker_failures,
            breaker_reset_seconds=settings.breaker_reset_seconds,
        )
        redaction = RedactionService(
            redis.client,
            secret=settings.secret("redaction_key"),
            ttl_seconds=int(settings.conversation_ttl_days * 86400),
            prefix=settings.redis_key_prefix,
        )
        from app.state.limits import AbuseLimiter, QuotaCollector

        limiter = AbuseLimiter(store, settings)
        metrics.registry.register(QuotaCollector(limiter))
        inflight = InflightRegistry(
            redis.client,
            prefix=settings.redis_key_prefix,
            ttl=settings.lock_ttl_seconds,
            batch=store.batch,
        )
        bridge = Bridge(
            inflight=inflight,
            settings=settings,
            router=Router(routes),
            store=store,
            dify=dify,
            redaction=redaction,
            metrics=metrics,
            limiter=limiter,
        )
        service = cls(settings, redis, store, bridge, metrics, dify)
        service.env = env
        service._load_adapters(adapters)
        return service

    def _load_adapters(self, only: Sequence[str] | None) -> None:
        ctx = AdapterContext(
            settings=self.settings,
            bridge=CoreBridgeApi(self.bridge),
            store=AdapterStore(self.store),
            metrics=self.metrics,
            health=self.health,
        )
        for platform in discover():
            if only is not None and platform.name not in only:
                continue
            adapter = platform.create(ctx)
            if adapter is None:
                continue  # the factory logged what to set
            adapter.mount(self.app)
            self.adapters.append(adapter)
            if self.bridge.inflight is not None:
                self.bridge.inflight.register_resumer(adapter.name, adapter.resume)
            log.info("adapter.enabled", adapter=platform.name)

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        host = host if host is not None else self.settings.host
        port = port if port is not None else self.settings.port
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        await _listen(runner, host, port, "PORT")
        self.port = _bound_port(runner)
        if self.settings.admin_port is not None:
            admin = web.AppRunner(build_admin_app(self), access_log=None, handle_signals=False)
            await admin.setup()
            self._runners.append(admin)
            await _listen(admin, host, self.settings.admin_port, "ADMIN_PORT")
            self.admin_port = _bound_port(admin)
        for adapter in self.adapters:
            await adapter.start()
        self._watch = asyncio.create_task(self._background())
        if self.settings.startup_checks:
            self._check = asyncio.create_task(self._check_routes())
        if self.bridge.inflight is not None:
            self._janitor = asyncio.create_task(self.bridge.inflight.janitor())
        log.info(
            "server.started",
            port=self.port,
            redis=self.redis.description,
            routes=[r.name for r in self.bridge.router.routes],
            adapters=[a.name for a in self.adapters],
            loop=loop_name(),
        )

    async def _check_routes(self) -> None:
        """Compare routes with their Dify apps (mode, required inputs) and log what is wrong, so
        an admin hears of it at start rather than from a user's failed message."""
        from app.dify.appcheck import check_routes

        for problem in await check_routes(self.bridge.router.routes, self.dify):
            log.warning("route.problem", problem=problem, hint="run `dify-bridge doctor`")

    def reload_config(self) -> bool:
        """Re-read BRIDGE_CONFIG; a bad file is refused and the old routes stay in force."""
        try:
            routes = load_routes(self.settings, env=self.env)
        except ConfigError as e:
            log.error("config.reload_rejected", reason=str(e))
            return False
        self.bridge.router.replace(routes)
        self.bridge.params.clear()
        log.info("config.reloaded", routes=[r.name for r in routes])
        if self.settings.startup_checks:
            self._check = asyncio.create_task(self._check_routes())
        return True

    async def _background(self) -> None:
        """Config file watch (every 2 s) and quota gauges for /metrics (every 60 s)."""
        # Polling one stat() every 2 s is cheap and works on every filesystem (and ConfigMaps).
        path = self.settings.bridge_config
        self._config_mtime = _mtime(path)
        ticks = 0
        while True:
            if ticks % 30 == 0 and self.bridge.limiter is not None:
                await self.bridge.limiter.refresh_metrics(list(self.bridge.router.routes))
            await asyncio.sleep(2.0)
            ticks += 1
            m = _mtime(path)
            if m != self._config_mtime:
                self._config_mtime = m
                if m is not None:
                    self.reload_config()

    async def _drain(self, grace: float) -> int:
        """Let streaming answers finish for ``grace`` seconds, or until told to hurry."""
        draining = asyncio.ensure_future(self.bridge.drain(grace))
        hurry = asyncio.ensure_future(self.hurry.wait())
        await asyncio.wait({draining, hurry}, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        if draining.done():
            return draining.result()
        log.warning(
            "shutdown.hurried",
            detail="second stop signal: answers still streaming are interrupted now",
        )
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining
        return await self.bridge.drain(0)

    def install_signal_handlers(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload_config)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work, let streaming answers finish within the grace period, close."""
        self.bridge.stop_accepting()
        background = [t for t in (self._watch, self._janitor, self._check) if t is not None]
        for task in background:
            task.cancel()
        if background:
            # Waited for before Redis closes: a sweep cut off mid-command by the close left
            # redis-py's send task pending, and the process hung at exit.
            await asyncio.wait(background, timeout=5)
        left = await self._drain(self.settings.shutdown_grace_seconds if grace is None else grace)
        if left:
            log.warning("shutdown.unfinished_answers", count=left)
        for adapter in self.adapters:
            try:
                await adapter.stop()
            except Exception as e:
                log.warning("adapter.stop_failed", adapter=adapter.name, error=repr(e))
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.dify.aclose()
        if self.bridge.limiter is not None:
            # Token usage is billing data: what still waits for Redis gets a last chance.
            await self.bridge.limiter.aclose(timeout=5.0)
        await self.bridge.store.batch.aclose()
        await self.redis.close()
        log.info("server.stopped")


async def _listen(runner: web.AppRunner, host: str, port: int, key: str) -> None:
    """Bind; a port in use (or not ours to bind) is a one-line ConfigError naming it."""
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            why = "is already in use (another dify-bridge, or another server?)"
        elif e.errno == errno.EACCES:
            why = "may not be bound by this user (ports below 1024 need privileges)"
        else:
            why = f"cannot be bound ({e.strerror or e})"
        raise ConfigError(
            f"port {port} on {host} {why}: stop the other process or choose another port",
            key=key,
        ) from e


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return 0


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
