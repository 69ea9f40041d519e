"""Admins run `dify-bridge manifest ...` and `dify-bridge config check` and read what to fix."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from app.admin.cli import build_parser
from app.config.settings import variable_names
from tests.fakes.slack_manifest_api import FakeSlackManifestApi

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "0b5c7a3e-1f2d-4c5b-9a8e-7d6c5b4a3f21"
CONFIG_TOKEN = "xoxe.xoxp-1-config"  # noqa: S105 - fake token for the fake API
SLACK_APP = "A0DIFYBRIDGE"

Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean environment: no setting leaks in from the machine; commands run at the repo root."""
    for name in variable_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRIDGE_CONFIG", "")  # no routing file: the one default route
    monkeypatch.chdir(ROOT)
    yield monkeypatch


@pytest.fixture
def run(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    async def _run(*argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(list(argv))
        result = args.func(args)
        if inspect.isawaitable(result):
            result = await result
        out = capsys.readouterr()
        return int(result), out.out, out.err

    return _run


@pytest_asyncio.fixture(loop_scope="session")
async def slack(env: pytest.MonkeyPatch) -> AsyncIterator[FakeSlackManifestApi]:
    async with FakeSlackManifestApi() as fake:
        fake.config_tokens.add(CONFIG_TOKEN)
        fake.apps[SLACK_APP] = {}
        env.setenv("SLACK_API_URL", fake.api_url)
        env.setenv("SLACK_CONFIG_TOKEN", CONFIG_TOKEN)
        env.setenv("SLACK_APP_ID", SLACK_APP)
        yield fake


# -------------------------------------------------------------------------------- manifest slack


async def test_admin_prints_the_slack_manifest_filled_in_for_their_host(run: Run) -> None:
    code, out, err = await run("manifest", "slack", "--public-url", "https://bot.acme.io")
    assert code == 0, err
    m = yaml.safe_load(out)
    assert m["settings"]["event_subscriptions"]["request_url"] == "https://bot.acme.io/slack/events"
    assert m["settings"]["interactivity"]["request_url"] == "https://bot.acme.io/slack/events"
    assert m["settings"]["socket_mode_enabled"] is False
    assert err == ""


async def test_socket_mode_is_the_default_when_an_app_token_is_set(
    run: Run, env: pytest.MonkeyPatch
) -> None:
    env.setenv("SLACK_APP_TOKEN", "xapp-1-abc")
    env.setenv("SLACK_SLASH_COMMAND", "/helpdesk")
    code, out, _ = await run("manifest", "slack", "--format", "json")
    assert code == 0
    m = json.loads(out)
    assert m["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in m["settings"]["event_subscriptions"]
    assert m["features"]["slash_commands"][0]["command"] == "/helpdesk"


async def test_check_respects_socket_mode_in_the_admins_file(run: Run, tmp_path: Path) -> None:
    m = yaml.safe_load((ROOT / "manifests/slack/manifest.yaml").read_text())
    m["settings"]["socket_mode_enabled"] = True
    own = tmp_path / "socket.yaml"
    own.write_text(yaml.safe_dump(m))
    code, out, _ = await run("manifest", "slack", "--check", str(own))
    assert (code, out.strip()) == (0, f"{own}: OK")  # request URLs dropped, nothing to fix
    code, out, _ = await run("manifest", "slack", "--check", str(own), "--no-socket-mode")
    assert code == 1
    assert "still points at the example host" in out


async def test_check_on_a_fresh_clone_says_to_set_the_public_url(run: Run) -> None:
    code, out, _ = await run("manifest", "slack", "--check")
    assert code == 1
    assert (
        "ERROR manifests/slack/manifest.yaml: /settings/event_subscriptions/request_url: "
        "'https://bridge.example.com/slack/events' still points at the example host" in out
    )
    assert "--public-url" in out
    code, out, _ = await run("manifest", "slack", "--check", "--public-url", "https://bot.acme.io")
    assert (code, out.strip()) == (0, "manifests/slack/manifest.yaml: OK")


async def test_check_of_the_admins_own_file_lists_each_mistake(run: Run, tmp_path: Path) -> None:
    m = yaml.safe_load((ROOT / "manifests/slack/manifest.yaml").read_text())
    m["oauth_config"]["scopes"]["bot"].remove("commands")
    m["settings"]["socket_mode_enabled"] = True
    own = tmp_path / "slack.yaml"
    own.write_text(yaml.safe_dump(m))
    code, out, _ = await run("manifest", "slack", "--check", str(own), "--socket-mode")
    assert code == 1
    assert (
        f"ERROR {own}: /oauth_config/scopes/bot: scope commands is missing (needed to the "
        "slash command) -> add commands, push the manifest and reinstall the app"
    ) in out
    assert out.strip().endswith(f"{own}: 1 error(s)")


async def test_unreadable_manifest_and_plain_http_url_are_usage_errors(
    run: Run, tmp_path: Path
) -> None:
    code, _, err = await run("manifest", "slack", "--check", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: cannot read" in err
    code, _, err = await run("manifest", "slack", "--public-url", "http://bot.acme.io")
    assert code == 2
    assert "https://" in err


async def test_push_validates_then_updates_the_app_through_slacks_manifest_api(
    run: Run, slack: FakeSlackManifestApi
) -> None:
    code, out, err = await run("manifest", "slack", "--public-url", "https://bot.acme.io", "--push")
    assert code == 0, out + err
    assert [c.method for c in slack.calls] == ["apps.manifest.validate", "apps.manifest.update"]
    assert all(c.token == CONFIG_TOKEN and c.form["app_id"] == SLACK_APP for c in slack.calls)
    stored = slack.apps[SLACK_APP]
    assert stored["settings"]["event_subscriptions"]["request_url"] == (
        "https://bot.acme.io/slack/events"
    )
    assert f"updated Slack app {SLACK_APP}" in out
    assert "reinstall the app" in out  # scopes changed from the empty app
    slack.calls.clear()
    code, out, _ = await run("manifest", "slack", "--public-url", "https://bot.acme.io", "--push")
    assert code == 0
    assert "reinstall" not in out  # same scopes: nothing to reinstall


async def test_push_shows_slacks_own_errors_readably_and_does_not_update(
    run: Run, slack: FakeSlackManifestApi
) -> None:
    slack.extra_errors.append(
        {
            "message": "Slash command /ask is already used by another app",
            "pointer": "/features/slash_commands/0/command",
        }
    )
    code, out, _ = await run("manifest", "slack", "--socket-mode", "--push")
    assert code == 1
    assert "Slack rejected the manifest (apps.manifest.validate: invalid_manifest):" in out
    assert (
        "  /features/slash_commands/0/command: Slash command /ask is already used by another app"
    ) in out
    assert [c.method for c in slack.calls] == ["apps.manifest.validate"]
    assert slack.apps[SLACK_APP] == {}


async def test_expired_config_token_says_how_to_get_a_new_one(
    run: Run, slack: FakeSlackManifestApi
) -> None:
    slack.expired_tokens.add(CONFIG_TOKEN)
    code, out, _ = await run("manifest", "slack", "--socket-mode", "--push")
    assert code == 1
    assert "token_expired" in out
    assert "configuration tokens last 12 hours" in out


async def test_wrong_app_id_is_named(
    run: Run, slack: FakeSlackManifestApi, env: pytest.MonkeyPatch
) -> None:
    env.setenv("SLACK_APP_ID", "A0WRONG")
    code, out, _ = await run("manifest", "slack", "--socket-mode", "--push")
    assert code == 1
    assert "invalid_app_id" in out
    assert "check SLACK_APP_ID" in out


async def test_push_refuses_a_manifest_with_local_errors_without_calling_slack(
    run: Run, slack: FakeSlackManifestApi
) -> None:
    code, out, _ = await run("manifest", "slack", "--push")  # still the example host
    assert code == 1
    assert "not pushed: fix the errors above first" in out
    assert slack.calls == []


async def test_push_without_credentials_names_the_missing_variables(
    run: Run, slack: FakeSlackManifestApi, env: pytest.MonkeyPatch
) -> None:
    env.delenv("SLACK_CONFIG_TOKEN")
    env.delenv("SLACK_APP_ID")
    code, _, err = await run("manifest", "slack", "--socket-mode", "--push")
    assert code == 2
    assert "--push needs SLACK_CONFIG_TOKEN and SLACK_APP_ID" in err
    assert slack.calls == []


# -------------------------------------------------------------------------------- manifest teams


async def test_admin_builds_the_teams_package_with_their_bot_id(
    run: Run, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    out_zip = tmp_path / "dify-bridge-teams.zip"
    code, out, err = await run("manifest", "teams", "--package", str(out_zip))
    assert code == 0, out + err
    assert f"wrote {out_zip} (manifest 1.30, bot {APP_ID})" in out
    with zipfile.ZipFile(out_zip) as z:
        m = json.loads(z.read("manifest.json"))
        assert sorted(z.namelist()) == ["color.png", "manifest.json", "outline.png"]
    assert m["id"] == m["bots"][0]["botId"] == APP_ID
    assert "authorization" not in m


async def test_rsc_flag_lets_the_bot_read_every_channel_message(
    run: Run, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    out_zip = tmp_path / "rsc.zip"
    code, _, _ = await run("manifest", "teams", "--package", str(out_zip), "--rsc-channel-messages")
    assert code == 0
    with zipfile.ZipFile(out_zip) as z:
        m = json.loads(z.read("manifest.json"))
    assert m["authorization"]["permissions"]["resourceSpecific"][0]["name"] == (
        "ChannelMessage.Read.Group"
    )


async def test_package_without_app_id_is_refused_and_nothing_is_written(
    run: Run, tmp_path: Path
) -> None:
    out_zip = tmp_path / "x.zip"
    code, out, _ = await run("manifest", "teams", "--package", str(out_zip))
    assert code == 1
    assert (
        "/bots/0/botId: still the ${{MICROSOFT_APP_ID}} placeholder -> set MICROSOFT_APP_ID" in out
    )
    assert "package not written" in out
    assert not out_zip.exists()


async def test_teams_check_of_an_admins_folder_reports_icon_sizes(
    run: Run, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    teams = ROOT / "manifests/teams"
    (tmp_path / "manifest.json").write_text((teams / "manifest.json").read_text())
    (tmp_path / "color.png").write_bytes((teams / "outline.png").read_bytes())
    (tmp_path / "outline.png").write_bytes((teams / "outline.png").read_bytes())
    code, out, _ = await run("manifest", "teams", "--check", str(tmp_path))
    assert code == 1
    assert (
        f"ERROR {tmp_path / 'manifest.json'}: /icons/color: color.png is 32x32; Teams "
        "requires 192x192 -> resize it to 192x192 pixels"
    ) in out
    code, out, _ = await run("manifest", "teams", "--check")
    assert code == 0, out
    assert out.strip().endswith("OK (3 warning(s))")  # example.com developer pages


async def test_teams_check_names_each_field_the_schema_rejects_with_its_pointer(
    run: Run, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    teams = ROOT / "manifests/teams"
    m = json.loads((teams / "manifest.json").read_text())
    m["name"]["short"] = "x" * 31
    m["bots"][0]["supportsFiles"] = "yes"
    m["colour"] = "#fff"
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    for icon in ("color.png", "outline.png"):
        (tmp_path / icon).write_bytes((teams / icon).read_bytes())
    code, out, _ = await run("manifest", "teams", "--check", str(tmp_path))
    assert code == 1
    where = f"ERROR {tmp_path / 'manifest.json'}"
    fix = "see the Teams manifest schema 1.30 for this field"
    assert f"{where}: /name/short: length 31 is outside 0-30 -> {fix}" in out
    assert f"{where}: /bots/0/supportsFiles: must be of type boolean -> {fix}" in out
    assert (
        f"{where}: /colour: is not a known field in this manifest version -> check the "
        "spelling or the manifestVersion"
    ) in out
    assert out.strip().endswith("3 error(s)")


# -------------------------------------------------------------------------------- config check

ROUTES = """
version: 1
routes:
  - name: everyone
    dify: {api_key_env: GENERAL_KEY}
  - name: hr-slack
    match: {platform: slack, workspace: T0ACME, channel: C0HR}
    dify: {base_url: "https://dify.acme.io/v1", api_key_env: HR_KEY, mode: advanced-chat}
    redaction: {mode: pseudonymize, entities: [EMAIL, PHONE]}
    inputs: {employee: speaker_email}
  - name: teams
    match: {platform: teams}
    redaction: {mode: "off"}
"""


async def test_config_check_prints_effective_routes_with_secrets_masked(
    run: Run, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(ROUTES)
    env.setenv("GENERAL_KEY", "app-general-0123456789")
    env.setenv("HR_KEY", "app-hr-secret-abcdefXY")
    env.setenv("DIFY_API_KEY", "app-default-key-77")
    env.setenv("REDACTION_KEY", "r" * 32)
    code, out, err = await run("config", "check", str(cfg))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{cfg}: 3 route(s), most specific match first"
    names = [line.split()[0] for line in lines[2:5]]
    assert names == ["hr-slack", "teams", "everyone"]  # channel > platform > catch-all
    hr = lines[2]
    assert "slack/T0ACME/C0HR" in hr and "https://dify.acme.io/v1" in hr
    assert "advanced-chat" in hr and "pseudonymize [EMAIL, PHONE]" in hr
    assert "app-…XY (HR_KEY)" in hr
    assert "app-…77 (DIFY_API_KEY)" in lines[3] and lines[3].rstrip().endswith("off")
    assert "inputs of hr-slack: employee <- speaker_email" in out
    for secret in ("app-general-0123456789", "app-hr-secret-abcdefXY", "app-default-key-77"):
        assert secret not in out + err


async def test_a_route_hidden_behind_an_identical_match_is_pointed_out(
    run: Run, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(
        "routes:\n  - name: sales\n    match: {platform: slack, channel: C1}\n"
        "  - name: sales-new\n    match: {channel: C1, platform: slack}\n"
    )
    env.setenv("DIFY_API_KEY", "app-default-key-77")
    code, out, _ = await run("config", "check", str(cfg))
    assert code == 0
    assert (
        "WARNING routes.1.match: route 'sales-new' never answers: route 'sales' (routes.0) has "
        "the same match and comes first -> give it a match of its own or delete it"
    ) in out


@pytest.mark.parametrize(
    ("yaml_text", "env_vars", "expected"),
    [
        (
            "routes:\n  - name: a\n    dify: {api_key: app-inline}\n",
            {},
            "key routes.0.dify: API keys must not be written in the config file",
        ),
        (
            "routes:\n  - name: a\n    redaction: {mode: scramble}\n",
            {},
            "key routes.0.redaction.mode",
        ),
        (
            "routes:\n  - name: a\n    dify: {api_key_env: NOT_SET_KEY}\n",
            {},
            "key routes.0.dify.api_key_env: environment variable NOT_SET_KEY is not set",
        ),
        (
            "routes:\n  - name: a\n    redaction: {mode: pseudonymize}\n",
            {"DIFY_API_KEY": "app-x1234567890"},
            "key routes.0.redaction.mode: route 'a' pseudonymizes but REDACTION_KEY is not set",
        ),
        (
            "routes:\n  - name: a\n    matchh: {platform: slack}\n",
            {},
            "key routes.0.matchh: unknown key",
        ),
        ("routes: [unclosed\n", {}, "not valid YAML at line 2"),
    ],
)
async def test_bad_config_exits_2_naming_file_key_and_fix(
    run: Run,
    env: pytest.MonkeyPatch,
    tmp_path: Path,
    yaml_text: str,
    env_vars: dict[str, str],
    expected: str,
) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(yaml_text)
    for k, v in env_vars.items():
        env.setenv(k, v)
    code, out, err = await run("config", "check", str(cfg))
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: file {cfg}")
    assert expected in err


async def test_config_check_without_a_file_explains_the_default_route(
    run: Run, env: pytest.MonkeyPatch
) -> None:
    code, _, err = await run("config", "check")
    assert code == 2
    assert "DIFY_API_KEY is not set" in err
    env.setenv("DIFY_API_KEY", "app-default-key-77")
    code, out, _ = await run("config", "check")
    assert code == 0
    assert "absent: one default route" in out
    assert "redact [ALL]" in out  # safe by default


async def test_bad_environment_variable_is_named(run: Run, env: pytest.MonkeyPatch) -> None:
    env.setenv("PORT", "http")
    code, _, err = await run("config", "check")
    assert code == 2
    assert "PORT" in err


# ----------------------------------------------------------------------------- the admin guide


def _between(text: str, name: str) -> str:
    start = text.index(f"<!-- {name}:start")
    start = text.index("-->", start) + len("-->\n")
    return text[start : text.index(f"<!-- {name}:end -->")]


def test_the_installed_entry_point_runs_the_admin_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in variable_names()}
    env["BRIDGE_CONFIG"] = ""
    done = subprocess.run(
        [sys.executable, "-m", "app.admin.cli", "manifest", "slack", "--check", "--socket-mode"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "manifests/slack/manifest.yaml: OK")
    done = subprocess.run(
        [sys.executable, "-m", "app.admin.cli", "config", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "DIFY_API_KEY is not set" in done.stderr


def test_admin_guide_tables_are_generated_from_the_code_so_they_cannot_drift() -> None:
    from adapters.slack.manifest import slack_scopes_markdown
    from app.admin.settings_doc import markdown

    reference = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    manifests = (ROOT / "docs" / "admin" / "manifests.md").read_text()
    assert _between(reference, "settings-table") == markdown()
    assert _between(manifests, "slack-scopes") == slack_scopes_markdown()


async def test_admin_guide_quotes_the_manifest_check_lines_it_promises(run: Run) -> None:
    guide = (ROOT / "docs" / "admin" / "index.md").read_text()
    _, out, _ = await run("manifest", "slack", "--check")
    first = out.splitlines()[1]  # the request URL line
    assert first in guide
