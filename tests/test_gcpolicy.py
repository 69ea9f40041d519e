"""`dify-bridge serve` tunes the garbage collector once it has started, unless told not to,
and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

from app import gcpolicy
from tests.conftest import base_env


async def serve_until_healthy(env: dict[str, str]) -> list[dict[str, Any]]:
    """Start a real `serve`, wait until /healthz answers, stop it; its log events in order."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "0",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            if not line:
                break
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
            if events[-1].get("event") == "server.started":
                port = int(events[-1]["port"])
        assert port is not None, events
        # The health check is served only once `serve` has gone past the point where it tunes
        # the collector, so every line about it is in the log by now.
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200
    finally:
        proc.terminate()
        while line := await asyncio.wait_for(proc.stderr.readline(), 30):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        # SIGTERM ends the process promptly and cleanly (it once hung at exit when the
        # in-flight janitor was cut off mid-command by the Redis close).
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    return events


def serve_env(redis_url: str, dify_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MICROSOFT_"))}
    env.update(base_env(redis_url, dify_url, prefix), LOG_FORMAT="json", **extra)
    return env


async def test_a_serving_process_freezes_what_start_up_built_and_collects_less_often(
    redis_url: str, fake_dify: Any, prefix: str
) -> None:
    events = await serve_until_healthy(serve_env(redis_url, fake_dify.base_url, prefix))
    tuned = [e for e in events if e.get("event") == "gc.tuned"]
    assert len(tuned) == 1
    # Importing the web stack alone leaves tens of thousands of objects behind.
    assert tuned[0]["frozen_objects"] > 10_000
    assert tuned[0]["thresholds"] == list(gcpolicy.THRESHOLDS)


async def test_gc_tuning_false_keeps_pythons_defaults(
    redis_url: str, fake_dify: Any, prefix: str
) -> None:
    env = serve_env(redis_url, fake_dify.base_url, prefix, GC_TUNING="false")
    events = await serve_until_healthy(env)
    assert any(e.get("event") == "server.started" for e in events)
    assert not [e for e in events if e.get("event") == "gc.tuned"]
