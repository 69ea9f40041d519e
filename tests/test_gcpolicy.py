"""`dify-bridge serve` tunes the garbage collector once it has started, unless told not to,
and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from app.server import gcpolicy
from tests.conftest import base_env
from tests.serve_process import Serve
from tests.test_replicas import wait_for


async def serve_until_healthy(env: dict[str, str], log: Path) -> list[dict[str, Any]]:
    """Start a real `serve`, wait until /healthz answers, stop it; its log events after start."""
    replica = await Serve.serving(env, log_path=str(log))
    try:
        # The health check is served only once `serve` has gone past the point where it tunes
        # the collector, so every line about it is in the log by now.
        url = f"http://127.0.0.1:{replica.port}/healthz"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert r.status == 200
    finally:
        replica.proc.terminate()
        # SIGTERM ends the process promptly and cleanly (it once hung at exit when the
        # in-flight janitor was cut off mid-command by the Redis close).
        assert await asyncio.wait_for(replica.proc.wait(), 30) == 0
    await wait_for(lambda: log.exists() and '"server.stopped"' in log.read_text())
    return logged_events(log)


def logged_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def serve_env(redis_url: str, dify_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MICROSOFT_"))}
    env.update(base_env(redis_url, dify_url, prefix), LOG_FORMAT="json", **extra)
    return env


async def test_a_serving_process_freezes_what_start_up_built_and_collects_less_often(
    redis_url: str, fake_dify: Any, prefix: str, tmp_path: Path
) -> None:
    env = serve_env(redis_url, fake_dify.base_url, prefix)
    events = await serve_until_healthy(env, tmp_path / "serve.log")
    tuned = [e for e in events if e.get("event") == "gc.tuned"]
    assert len(tuned) == 1
    # Importing the web stack alone leaves tens of thousands of objects behind.
    assert tuned[0]["frozen_objects"] > 10_000
    assert tuned[0]["thresholds"] == list(gcpolicy.THRESHOLDS)


async def test_gc_tuning_false_keeps_pythons_defaults(
    redis_url: str, fake_dify: Any, prefix: str, tmp_path: Path
) -> None:
    env = serve_env(redis_url, fake_dify.base_url, prefix, GC_TUNING="false")
    events = await serve_until_healthy(env, tmp_path / "serve.log")
    assert any(e.get("event") == "shutdown.requested" for e in events)
    assert not [e for e in events if e.get("event") == "gc.tuned"]
