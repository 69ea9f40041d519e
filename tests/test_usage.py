"""``dify-bridge usage``: what an admin sees for a month, from counters in the real Redis."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.admin.cli import build_parser
from app.admin.usage import run_usage
from app.config.settings import Route, RouteConfig, load_settings
from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey
from app.state.limits import AbuseLimiter
from app.state.store import RedisStore

ROOT = Path(__file__).resolve().parents[1]
OCTOBER = datetime(2026, 10, 20, 12, 0, tzinfo=UTC).timestamp()


def _msg(user: str, workspace: str = "T1", platform: str = "slack") -> IncomingMessage:
    return IncomingMessage(
        key=ThreadKey(platform, workspace, "C1", "1.0"),
        event_id=uuid.uuid4().hex,
        speaker=Speaker(id=user),
        text="q",
        kind=Kind.MENTION,
    )


def _route(name: str, quota: int = 0) -> Route:
    return Route(RouteConfig(name=name, monthly_token_quota=quota), "http://dify.invalid", "k")


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(redis_url: str, prefix: str) -> AsyncIterator[str]:
    """October 2026: helpdesk (quota 2000) in two Slack workspaces, hr on Teams."""
    client: Redis = Redis.from_url(redis_url)
    limiter = AbuseLimiter(
        RedisStore(client, prefix=prefix), load_settings(env={}), clock=lambda: OCTOBER
    )
    helpdesk = _route("helpdesk", 2000)
    await limiter.record_usage(_msg("U_ALICE"), helpdesk, 1200)
    await limiter.record_usage(_msg("U_BOB"), helpdesk, 300)
    await limiter.record_usage(_msg("U_ALICE", workspace="T2"), helpdesk, 50)
    await limiter.record_usage(
        _msg("29:carol", workspace="tenant-1", platform="teams"), _route("hr"), 77
    )
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def bridge_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "routes:\n"
        "  - name: helpdesk\n    monthly_token_quota: 2000\n"
        "  - name: hr\n    dify: {api_key_env: HR_KEY_NOT_NEEDED_HERE}\n"
    )
    return path


def _env(redis_url: str, prefix: str, config: Path | str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "BRIDGE_CONFIG": str(config)}


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "app.admin.cli", "usage", *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_an_admin_sees_a_table_per_route_workspace_and_user_with_quotas(
    redis_url: str, seeded: str, bridge_yaml: Path
) -> None:
    done = _run_cli(_env(redis_url, seeded, bridge_yaml), "--month", "2026-10")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Token usage for 2026-10 (UTC)"
    assert lines[1].split() == ["ROUTE", "WORKSPACE", "USER", "TOKENS"]
    rows = [re.split(r"\s{2,}", line) for line in lines[2:-1]]
    assert rows == [
        ["helpdesk", "slack:T1", "U_ALICE", "1,200"],
        ["helpdesk", "slack:T1", "U_BOB", "300"],
        ["helpdesk", "slack:T1", "(total, quota 2,000: 75% used)", "1,500"],
        ["helpdesk", "slack:T2", "U_ALICE", "50"],
        ["helpdesk", "slack:T2", "(total, quota 2,000: 2% used)", "50"],
        ["hr", "teams:tenant-1", "29:carol", "77"],
        ["hr", "teams:tenant-1", "(total)", "77"],
    ]
    assert lines[-1] == "All routes: 1,627 tokens"


async def test_usage_as_json_for_one_route(
    redis_url: str, seeded: str, bridge_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in _env(redis_url, seeded, bridge_yaml).items():
        monkeypatch.setenv(k, v)
    out = io.StringIO()
    args = argparse.Namespace(month="2026-10", route="helpdesk", json=True)
    assert await run_usage(args, out=out) == 0
    data = json.loads(out.getvalue())
    assert data["month"] == "2026-10"
    assert data["rows"] == [
        {"route": "helpdesk", "workspace": "slack:T1", "user": "U_ALICE", "tokens": 1200},
        {"route": "helpdesk", "workspace": "slack:T1", "user": "U_BOB", "tokens": 300},
        {"route": "helpdesk", "workspace": "slack:T2", "user": "U_ALICE", "tokens": 50},
    ]
    assert data["workspaces"] == [
        {"route": "helpdesk", "workspace": "slack:T1", "tokens": 1500, "quota": 2000},
        {"route": "helpdesk", "workspace": "slack:T2", "tokens": 50, "quota": 2000},
    ]


async def test_a_quiet_month_says_so_and_this_month_is_the_default(
    redis_url: str, seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in _env(redis_url, seeded, "").items():
        monkeypatch.setenv(k, v)
    out = io.StringIO()
    assert await run_usage(argparse.Namespace(month=None, route=None, json=False), out=out) == 0
    this_month = datetime.now(UTC).strftime("%Y-%m")
    assert out.getvalue() == f"No token usage recorded for {this_month}.\n"


def test_a_month_that_is_not_yyyy_mm_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["usage", "--month", "2026-13"])
    assert exit_info.value.code == 2
    assert "month must look like 2026-11 (YYYY-MM)" in capsys.readouterr().err


def test_an_unreachable_redis_gives_a_clear_error(bridge_yaml: Path) -> None:
    done = _run_cli(_env("redis://127.0.0.1:1/0", "x", bridge_yaml), "--month", "2026-10")
    assert done.returncode == 2
    assert "error:" in done.stderr and "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broken_routing_file_is_named_in_the_error(redis_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bridge.yaml"
    bad.write_text("routes:\n  - name: helpdesk\n    monthly_token_quota: lots\n")
    done = _run_cli(_env(redis_url, "x", bad), "--month", "2026-10")
    assert done.returncode == 2
    assert str(bad) in done.stderr and "monthly_token_quota" in done.stderr
