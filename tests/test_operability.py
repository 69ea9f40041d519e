"""An admin starts, stops and probes ``dify-bridge serve``: it tells the truth and always stops.

Each story runs the real process (tests/serve_process.py) against the fakes of this session.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from tests.conftest import TEST_APP_KEY
from tests.fakes.bot_connector import FakeBotConnector
from tests.fakes.slack_api import FakeSlack
from tests.serve_process import Serve, clean_env

Start = Callable[..., Awaitable[Serve]]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def base(redis_url: str, fake_dify: Any) -> dict[str, str]:
    return clean_env(
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX="op" + uuid.uuid4().hex[:8],
        DIFY_BASE_URL=fake_dify.base_url,
        DIFY_API_KEY=TEST_APP_KEY,
        BRIDGE_CONFIG="",
        LOG_FORMAT="json",
        STARTUP_CHECKS="false",
        GC_TUNING="false",
        SHUTDOWN_GRACE_SECONDS="2",
    )


@pytest_asyncio.fixture(loop_scope="session")
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """``await start(env, *args)``: a running ``dify-bridge``; killed at the end if still up."""
    procs: list[Serve] = []

    async def factory(env: dict[str, str], *args: str) -> Serve:
        proc = await Serve.start(env, *args, cwd=tmp_path)
        procs.append(proc)
        return proc

    yield factory
    for p in procs:
        await p.kill()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_no_traceback(proc: Serve) -> None:
    assert "Traceback" not in proc.text, proc.text
    assert "will be unused" not in proc.text and "will be ignored" not in proc.text


# ---------------------------------------------------------------------------- Slack, item 1 + 2


async def test_a_refused_socket_mode_token_keeps_the_service_up_unready_and_stoppable(
    start: Start, base: dict[str, str], slack: FakeSlack
) -> None:
    team = slack.add_team("T" + uuid.uuid4().hex[:6].upper())
    wrong_app_token = "xapp-1-A0-not-registered"  # noqa: S105 - a token Slack refuses
    proc = await start(
        {
            **base,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": team.bot_token,
            "SLACK_APP_TOKEN": wrong_app_token,
        }
    )
    await proc.started()
    failures = await proc.wait_event("slack.socket_mode_connect_failed", count=2)
    assert failures[0]["setting"] == "SLACK_APP_TOKEN"
    assert "xapp-" in failures[0]["fix"] and failures[0]["level"] == "warning"
    status, body = await proc.readyz()
    assert status == 503
    assert any("SLACK_APP_TOKEN" in r and "invalid_auth" in r for r in body["reasons"]), body
    # Ends within 10 s of SIGTERM although the connection keeps failing, and exits 0.
    assert await proc.signal_and_wait(signal.SIGTERM) < 10
    assert proc.proc.returncode == 0
    assert_no_traceback(proc)
    # One line per failed attempt: no duplicate from slack_sdk's own reconnect loop.
    assert not [line for line in proc.lines if "Failed to connect" in line]


async def test_ctrl_c_ends_the_service_while_slack_cannot_be_reached(
    start: Start, base: dict[str, str]
) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}/api/"
    proc = await start(
        {
            **base,
            "SLACK_API_URL": nowhere,
            "SLACK_BOT_TOKEN": "xoxb-1-2-3",
            "SLACK_APP_TOKEN": "xapp-1-2-3",
        }
    )
    await proc.started()
    await proc.wait_event("slack.socket_mode_connect_failed")
    await proc.wait_event("slack.auth_test_failed")

    def both_reasons(body: dict[str, Any]) -> bool:
        reasons = body.get("reasons", [])
        return (
            any("unreachable" in r and "SLACK_API_URL" in r for r in reasons)  # the socket
            and any("slack bot token: Slack cannot be reached" in r for r in reasons)
        )

    for _ in range(50):
        status, body = await proc.readyz()
        if both_reasons(body):
            break
        await asyncio.sleep(0.1)
    assert status == 503 and both_reasons(body), body
    assert await proc.signal_and_wait(signal.SIGINT) < 10
    assert proc.proc.returncode == 0
    assert_no_traceback(proc)


async def test_readiness_follows_slack_down_and_up_again(
    start: Start, base: dict[str, str], slack: FakeSlack
) -> None:
    team = slack.add_team("T" + uuid.uuid4().hex[:6].upper())
    slack.fail_next("auth.test", "invalid_auth", team=team.id)
    later_token = f"xapp-1-A0-{uuid.uuid4().hex[:8]}"  # Slack does not know it yet
    proc = await start(
        {
            **base,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": team.bot_token,
            "SLACK_APP_TOKEN": later_token,
        }
    )
    await proc.started()
    (refused,) = (await proc.wait_event("slack.auth_test_failed"))[:1]
    assert refused["error"] == "invalid_auth" and refused["setting"] == "SLACK_BOT_TOKEN"
    assert "xoxb-" in refused["fix"]
    status, body = await proc.readyz()
    assert status == 503 and body["checks"]["platforms"] is False
    # auth.test succeeds on the next try; Socket Mode once Slack accepts the app token.
    slack.app_tokens.add(later_token)
    await proc.ready_becomes(200, within=20)
    # A dropped connection: not ready until it is back, then ready again by itself.
    await slack.wait_socket()
    await slack.drop_sockets()
    await proc.wait_event("slack.socket_mode_lost")
    await proc.wait_event("slack.socket_mode_connected", count=2)
    await proc.ready_becomes(200)
    assert await proc.signal_and_wait() < 10
    assert_no_traceback(proc)


async def test_sigterm_lets_an_answer_finish_and_a_second_one_stops_at_once(
    start: Start, base: dict[str, str], slack: FakeSlack, dify_app: Any
) -> None:
    import httpx

    from tests.test_slack_support import payload

    team = slack.add_team("T" + uuid.uuid4().hex[:6].upper())
    dify_app.answer = "slowly " * 400
    dify_app.chunk_size, dify_app.chunk_delay = 7, 0.05  # about 20 s of streaming
    proc = await start(
        {
            **base,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": team.bot_token,
            "SLACK_SIGNING_SECRET": "s3cret",
            "DIFY_API_KEY": dify_app.api_key,
            "SHUTDOWN_GRACE_SECONDS": "60",
        }
    )
    await proc.started()
    m = slack.user_message(team, "C0OPS", f"<@{team.bot_user_id}> tell me slowly")
    ev = payload(
        "app_mention",
        text=m.text,
        user="U0USER",
        ts=m.ts,
        event_ts=m.ts,
        channel="C0OPS",
        team=team.id,
    )
    body, headers = slack.event(team, ev, secret="s3cret")  # noqa: S106 - the test secret
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.post(proc.url + "/slack/events", content=body, headers=headers)
    assert r.status_code == 200
    await dify_app.wait_running(timeout=10)
    proc.proc.send_signal(signal.SIGTERM)
    await proc.wait_event("shutdown.requested")
    await asyncio.sleep(1.0)
    assert proc.proc.returncode is None  # the answer is given its grace period
    assert await proc.signal_and_wait(signal.SIGTERM) < 10  # the second signal: stop now
    assert proc.proc.returncode == 0
    await proc.wait_event("shutdown.hurried")
    (reply,) = slack.bot_messages("C0OPS", m.ts)
    assert "interrupted" in reply.visible_text()  # the user is told to ask again
    assert_no_traceback(proc)


async def test_slack_rotating_the_socket_mode_connection_is_no_outage(
    make_service: Any, slack: FakeSlack
) -> None:
    from structlog.testing import capture_logs

    team = slack.add_team("T" + uuid.uuid4().hex[:6].upper())
    svc = await make_service(
        {
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": team.bot_token,
            "SLACK_APP_TOKEN": slack.add_app_token(),
        },
        adapters=["slack"],
    )
    await slack.wait_socket()
    opened = len(slack.calls_to("apps.connections.open"))
    with capture_logs() as logs:
        await slack.send_disconnect("refresh_requested")
        await slack.wait_for(lambda: len(slack.calls_to("apps.connections.open")) > opened)
        await slack.wait_socket()
        for _ in range(100):
            if any(e["event"] == "slack.socket_mode_connected" for e in logs):
                break
            await asyncio.sleep(0.05)
    events = [e["event"] for e in logs]
    assert "slack.socket_mode_refresh" in events and "slack.socket_mode_connected" in events
    assert "slack.socket_mode_lost" not in events  # a planned rotation is not an alarm
    assert not svc.health.is_down("slack socket mode")


# ---------------------------------------------------------------------------- Teams, item 2


async def test_teams_credentials_that_get_no_token_make_readyz_503_until_fixed(
    start: Start, base: dict[str, str]
) -> None:
    connector = FakeBotConnector()
    await connector.start()
    try:
        env = {**base, **connector.service_env(), "MICROSOFT_APP_PASSWORD": "the-secret-id"}
        proc = await start(env)
        await proc.started()
        (rejected,) = (await proc.wait_event("teams.token.rejected"))[:1]
        assert rejected["code"] == "AADSTS7000215"
        assert "MICROSOFT_APP_PASSWORD" in rejected["fix"]
        body = await proc.ready_becomes(503)
        assert any(
            "teams credentials" in r and "MICROSOFT_APP_PASSWORD" in r for r in body["reasons"]
        ), body
        connector.app_password = "the-secret-id"  # noqa: S105 - the admin fixed it in Entra ID
        await proc.ready_becomes(200, within=15)
        assert await proc.signal_and_wait() < 10
        assert_no_traceback(proc)
    finally:
        await connector.stop()


# ---------------------------------------------------------------------------- start-up refusals


async def test_a_routing_file_that_does_not_exist_is_refused_naming_it(
    start: Start, base: dict[str, str]
) -> None:
    proc = await start({**base, "BRIDGE_CONFIG": "/nope.yaml"})
    assert await proc.exited() == 2
    (line,) = [ln for ln in proc.lines if ln.strip()]
    assert line.startswith("dify-bridge: configuration error: file /nope.yaml, key BRIDGE_CONFIG")
    assert "does not exist" in line


async def test_a_port_in_use_is_one_line_naming_it_and_exit_2(
    start: Start, base: dict[str, str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await start(base, "serve", "--host", "127.0.0.1", "--port", str(port))
        assert await proc.exited() == 2
    errors = [ln for ln in proc.lines if ln.startswith("dify-bridge:")]
    assert errors == [
        f"dify-bridge: configuration error: key PORT: port {port} on 127.0.0.1 is "
        "already in use (another dify-bridge, or another server?): stop the other "
        "process or choose another port"
    ], proc.text
    assert_no_traceback(proc)


async def test_under_kubernetes_serve_refuses_the_embedded_redis(
    start: Start, base: dict[str, str], tmp_path: Path
) -> None:
    env = {**base, "KUBERNETES_SERVICE_HOST": "10.0.0.1", "REDIS_DATA_DIR": str(tmp_path / "r")}
    del env["REDIS_URL"]
    proc = await start(env)
    assert await proc.exited() == 2
    assert "key REDIS_URL: REDIS_URL is not set and this runs under Kubernetes" in proc.text
    assert "ALLOW_EMBEDDED_REDIS=true" in proc.text
    assert not (tmp_path / "r").exists()  # refused before anything was started


# ---------------------------------------------------------------------------- embedded Redis


def redis_children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if "redis-server" in c.name()]


async def test_the_embedded_redis_stops_with_a_normal_shutdown_quietly(
    start: Start, base: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **base,
        "REDIS_DATA_DIR": str(tmp_path / "data"),
        # Allowed explicitly: one replica under Kubernetes.
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "ALLOW_EMBEDDED_REDIS": "true",
    }
    del env["REDIS_URL"]
    proc = await start(env)
    await proc.started()
    (redis,) = redis_children(proc.proc.pid)
    await proc.ready_becomes(200)
    assert await proc.signal_and_wait() < 10
    assert proc.proc.returncode == 0
    await asyncio.to_thread(psutil.wait_procs, [redis], 5)
    assert not redis.is_running()
    assert (tmp_path / "data" / "bridge.rdb").exists()  # saved on the way out
    assert "shutdown failed" not in proc.text.lower()
    assert_no_traceback(proc)


async def test_the_embedded_redis_dies_with_the_bridge_even_on_sigkill(
    start: Start, base: dict[str, str], tmp_path: Path
) -> None:
    env = {**base, "REDIS_DATA_DIR": str(tmp_path / "data")}
    del env["REDIS_URL"]
    proc = await start(env)
    await proc.started()
    (redis,) = redis_children(proc.proc.pid)
    # redis-server shows its socket in its title: its run directory, which only a bridge that
    # is not SIGKILLed can remove.
    run_dir = next(Path(a.split(":", 1)[1]).parent for a in redis.cmdline() if ".sock" in a)
    proc.proc.kill()
    await proc.exited()
    _, alive = await asyncio.to_thread(psutil.wait_procs, [redis], 5)
    assert not alive, "redis-server outlived the bridge"
    shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------- the quick start


async def test_every_command_reads_dot_env_and_real_variables_win(
    start: Start, fake_dify: Any, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "DIFY_API_KEY=app-from-dotenv-1234\nDIFY_BASE_URL=http://from-dotenv.example/v1\n"
        "BRIDGE_CONFIG=\n"
    )
    env = clean_env(DIFY_BASE_URL="http://from-environment.example/v1")
    proc = await start(env, "config", "check")
    assert await proc.exited() == 0, proc.text
    out = (await proc.proc.stdout.read()).decode() if proc.proc.stdout else ""
    assert "http://from-environment.example/v1" in out  # the real variable won
    assert "app-…34 (DIFY_API_KEY)" in out  # the key came from .env


# ------------------------------------------------------------------- hints that say what to fix


async def _failed_answer_hint(make_service: Any, base_url: str) -> str:
    from structlog.testing import capture_logs

    from adapters.console import CONSOLE_LIMITS, MemoryReply
    from app.pipeline.model import IncomingMessage, Kind, Speaker, ThreadKey

    svc = await make_service({"DIFY_BASE_URL": base_url, "DIFY_MAX_RETRIES": "0"})
    msg = IncomingMessage(
        key=ThreadKey("console", "w", "c", uuid.uuid4().hex),
        event_id=uuid.uuid4().hex,
        speaker=Speaker("u"),
        text="hello",
        kind=Kind.DIRECT,
    )
    reply = MemoryReply()
    with capture_logs() as logs:
        await svc.bridge.handle(msg, reply, CONSOLE_LIMITS)
    assert reply.error, "the user was told it failed"
    (failed,) = [e for e in logs if e["event"] == "answer.failed"]
    return str(failed["hint"])


async def test_a_dify_base_url_without_v1_is_named_in_the_hint(
    make_service: Any, fake_dify: Any
) -> None:
    root = fake_dify.base_url.removesuffix("/v1")
    hint = await _failed_answer_hint(make_service, root)
    assert hint.startswith(f"{root} is not Dify's Service API (it does not end in /v1)")
    assert "DIFY_BASE_URL" in hint


async def test_a_refused_connection_to_dify_names_the_url(make_service: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    hint = await _failed_answer_hint(make_service, url)
    assert hint.startswith(f"cannot connect to Dify at {url}: check DIFY_BASE_URL")


# ---------------------------------------------------------------------------- the command line


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from app.admin.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"dify-bridge {version('dify-bridge')}"


def test_every_option_of_every_subcommand_has_a_one_line_help() -> None:
    import argparse

    from app.admin.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    missing += walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction):
                text = action.help or ""
                if not text.strip() or "\n" in text:
                    missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert walk(build_parser(), "dify-bridge") == []


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    from app.config.settings import variable_names

    for name in variable_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


TWO_KEYS = """
routes:
  - name: hr
    dify: {api_key_env: HR_KEY}
  - name: sales
    match: {platform: slack}
    dify: {api_key_env: SALES_KEY}
    redaction: {mode: pseudonymize}
"""


async def test_config_check_names_every_missing_variable_at_once(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.admin.cli import build_parser

    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(TWO_KEYS)
    args = build_parser().parse_args(["config", "check", str(cfg)])
    assert args.func(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        f"error: file {cfg}, key routes.0.dify.api_key_env: environment variable "
        "HR_KEY is not set (route 'hr')"
    )
    assert "SALES_KEY is not set" in err[1]
    assert "REDACTION_KEY is not set" in err[2]
    assert err[3].startswith("3 settings are missing")


async def test_config_check_without_secrets_checks_the_file_and_routes(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.admin.cli import build_parser

    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(TWO_KEYS)
    args = build_parser().parse_args(["config", "check", "--no-secrets", str(cfg)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{cfg}: 2 route(s)")
    assert "not read (HR_KEY)" in out and "not read (SALES_KEY)" in out
    cfg.write_text(TWO_KEYS.replace("match:", "matchh:"))  # the syntax is still checked
    assert args.func(args) == 2
    assert "key routes.1.matchh: unknown key" in capsys.readouterr().err


async def test_doctor_fails_on_the_embedded_redis_under_kubernetes(tmp_path: Path) -> None:
    from app.admin.doctor import check_redis
    from app.config.settings import load_settings

    settings = load_settings(env={"REDIS_DATA_DIR": str(tmp_path)})
    check = await check_redis(settings, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert check.status == "FAIL"
    assert "ALLOW_EMBEDDED_REDIS=true" in check.fix and "REDIS_URL" in check.fix
    allowed = load_settings(env={"REDIS_DATA_DIR": str(tmp_path), "ALLOW_EMBEDDED_REDIS": "1"})
    assert (await check_redis(allowed, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})).status == "OK"
    assert (await check_redis(settings, {})).status == "OK"  # not under Kubernetes


async def test_the_start_up_check_names_an_unreachable_dify_url(make_service: Any) -> None:
    from structlog.testing import capture_logs

    url = f"http://127.0.0.1:{closed_port()}/v1"
    with capture_logs() as logs:
        await make_service(
            {"DIFY_BASE_URL": url, "DIFY_MAX_RETRIES": "0", "STARTUP_CHECKS": "true"}
        )
        for _ in range(100):
            if any(e["event"] == "route.problem" for e in logs):
                break
            await asyncio.sleep(0.05)
    (problem,) = [e["problem"] for e in logs if e["event"] == "route.problem"]
    assert f"cannot read the Dify app's info at {url}" in problem
    assert f"cannot connect to Dify at {url}" in problem
