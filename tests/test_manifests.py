"""The shipped Slack manifest and Teams package, and the checks admins run on their own copies."""

from __future__ import annotations

import copy
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.slack.manifest import (
    check_slack_manifest,
    default_slack_manifest,
    render_slack_manifest,
)
from adapters.teams.manifest import (
    build_teams_zip,
    check_teams_manifest,
    fill_teams_manifest,
    read_teams_dir,
    validate_against_schema,
)
from app.admin import manifests
from app.admin.manifests import load_manifest_file, png_size
from app.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SLACK_FILE = ROOT / "manifests/slack/manifest.yaml"
TEAMS_DIR = ROOT / "manifests/teams"
APP_ID = "0b5c7a3e-1f2d-4c5b-9a8e-7d6c5b4a3f21"


def pointers(problems: list[manifests.Problem], severity: str = "error") -> set[str]:
    return {p.pointer for p in problems if p.severity == severity}


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Enough of a PNG decoder for our own unfiltered 8-bit RGBA icons."""
    width, height = png_size(data)
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        if tag == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * 4
    pixels = [
        raw[y * stride + 1 + x * 4 : y * stride + 5 + x * 4]
        for y in range(height)
        for x in range(width)
    ]
    assert all(raw[y * stride] == 0 for y in range(height))
    return width, height, pixels


# --------------------------------------------------------------------------------------- Slack


def test_committed_slack_manifest_is_the_default_the_tools_render() -> None:
    assert load_manifest_file(SLACK_FILE) == default_slack_manifest()


def test_shipped_slack_manifest_asks_only_for_the_scopes_the_features_need() -> None:
    m = load_manifest_file(SLACK_FILE)
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert scopes == {
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
        "users:read.email",
    }
    assert set(m["settings"]["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.im",
        "message.mpim",
        "message.channels",
        "message.groups",
        "app_home_opened",
        "app_context_changed",
        "agent_session_stopped",
        "app_uninstalled",
        "tokens_revoked",
    }
    # No reactions, no user scopes, no admin scopes.
    assert "user" not in m["oauth_config"]["scopes"]


def test_manifest_scopes_equal_what_the_slack_oauth_install_asks_for() -> None:
    from adapters.slack._adapter import BOT_SCOPES

    m = load_manifest_file(SLACK_FILE)
    assert sorted(m["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)


def test_fresh_manifest_fails_the_check_until_a_public_url_is_given() -> None:
    m = load_manifest_file(SLACK_FILE)
    problems = check_slack_manifest(m, command="/ask")
    assert pointers(problems) == {
        "/settings/event_subscriptions/request_url",
        "/settings/interactivity/request_url",
        "/features/slash_commands/0/url",
    }
    assert all("--public-url" in p.fix for p in problems)
    rendered = render_slack_manifest(m, public_url="https://bot.acme.io/", socket_mode=False)
    assert rendered["settings"]["event_subscriptions"]["request_url"] == (
        "https://bot.acme.io/slack/events"
    )
    assert rendered["features"]["slash_commands"][0]["url"] == "https://bot.acme.io/slack/events"
    assert check_slack_manifest(rendered, command="/ask") == []


def test_socket_mode_manifest_has_no_request_urls_and_passes() -> None:
    m = render_slack_manifest(load_manifest_file(SLACK_FILE), public_url=None, socket_mode=True)
    assert m["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in m["settings"]["event_subscriptions"]
    assert "request_url" not in m["settings"]["interactivity"]
    assert "url" not in m["features"]["slash_commands"][0]
    assert check_slack_manifest(m, command="/ask") == []


def test_render_renames_the_slash_command_and_adds_oauth_redirect_for_multi_workspace() -> None:
    m = render_slack_manifest(
        default_slack_manifest(),
        public_url="https://b.acme.io",
        socket_mode=False,
        command="/helpdesk",
        oauth=True,
    )
    assert m["features"]["slash_commands"][0]["command"] == "/helpdesk"
    assert m["oauth_config"]["redirect_urls"] == ["https://b.acme.io/slack/oauth_redirect"]
    assert check_slack_manifest(m, command="/helpdesk") == []


def _good_slack() -> dict[str, Any]:
    return render_slack_manifest(
        default_slack_manifest(), public_url="https://b.acme.io", socket_mode=False
    )


@pytest.mark.parametrize(
    ("mutate", "pointer", "words"),
    [
        (
            lambda m: m["oauth_config"]["scopes"]["bot"].remove("channels:history"),
            "/oauth_config/scopes/bot",
            "channels:history is missing",
        ),
        (
            lambda m: m["settings"]["event_subscriptions"]["bot_events"].remove("message.im"),
            "/settings/event_subscriptions/bot_events",
            "message.im",
        ),
        (
            lambda m: m["settings"]["event_subscriptions"].update(
                request_url="http://b.acme.io/slack/events"
            ),
            "/settings/event_subscriptions/request_url",
            "https://",
        ),
        (
            lambda m: m["settings"]["interactivity"].update(request_url="https://b.acme.io/events"),
            "/settings/interactivity/request_url",
            "/slack/events",
        ),
        (
            lambda m: m["features"]["app_home"].update(messages_tab_read_only_enabled=True),
            "/features/app_home",
            "Sending messages to this app has been turned off",
        ),
        (
            lambda m: m["settings"]["interactivity"].update(is_enabled=False),
            "/settings/interactivity/is_enabled",
            "buttons",
        ),
        (
            lambda m: m["features"]["slash_commands"][0].update(command="/Ask me"),
            "/features/slash_commands/0/command",
            "not a slash command name",
        ),
        (
            lambda m: m["features"]["slash_commands"][0].update(command="/other"),
            "/features/slash_commands/0/command",
            "SLACK_SLASH_COMMAND",
        ),
        (
            lambda m: m["display_information"].update(name="x" * 36),
            "/display_information/name",
            "36 characters",
        ),
        (
            lambda m: m["display_information"].update(background_color="blue"),
            "/display_information/background_color",
            "hex colour",
        ),
        (lambda m: m["features"].pop("bot_user"), "/features/bot_user/display_name", "is required"),
    ],
)
def test_each_slack_manifest_mistake_names_the_field_and_the_fix(
    mutate: Any, pointer: str, words: str
) -> None:
    m = _good_slack()
    mutate(m)
    problems = [p for p in check_slack_manifest(m, command="/ask") if p.severity == "error"]
    assert [p.pointer for p in problems] == [pointer]
    assert words in problems[0].message
    assert problems[0].fix


def test_unneeded_scopes_are_a_warning_not_an_error() -> None:
    m = _good_slack()
    m["oauth_config"]["scopes"]["bot"] += ["reactions:write"]
    problems = check_slack_manifest(m, command="/ask")
    assert pointers(problems) == set()
    assert [p.message for p in problems] == ["scope reactions:write is not used by dify-bridge"]


def test_shipped_manifest_turns_on_the_agent_experience_with_its_events() -> None:
    m = load_manifest_file(SLACK_FILE)
    agent = m["features"]["agent_view"]
    assert 0 < len(agent["agent_description"]) <= 300
    assert "assistant_view" not in m["features"]
    events = m["settings"]["event_subscriptions"]["bot_events"]
    assert {"app_home_opened", "app_context_changed", "message.im"} <= set(events)
    # Prompts, titles: assistant:write; loading status and streaming: chat:write.
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert {"assistant:write", "chat:write", "im:history"} <= scopes


def test_manifest_without_the_agent_view_is_told_how_to_turn_it_on() -> None:
    m = _good_slack()
    del m["features"]["agent_view"]
    problems = check_slack_manifest(m, command="/ask")
    assert [p.severity for p in problems] == ["warning"]
    assert problems[0].pointer == "/features/agent_view" and "agent_view" in problems[0].fix


def test_agent_view_mistakes_are_named_by_the_check() -> None:
    m = _good_slack()
    m["features"]["agent_view"]["agent_description"] = "x" * 301
    m["features"]["agent_view"]["suggested_prompts"] = [{"title": "Hi"}]
    m["features"]["assistant_view"] = {"assistant_description": "old"}
    m["settings"]["event_subscriptions"]["bot_events"].remove("app_home_opened")
    problems = check_slack_manifest(m, command="/ask")
    errors = {p.pointer: p.message for p in problems if p.severity == "error"}
    assert "300" in errors["/features/agent_view/agent_description"]
    assert "title and a message" in errors["/features/agent_view/suggested_prompts/0"]
    assert "app_home_opened" in errors["/settings/event_subscriptions/bot_events"]
    warnings = {p.pointer for p in problems if p.severity == "warning"}
    assert "/features/assistant_view" in warnings


def test_routes_that_pass_the_speakers_email_need_the_email_scope() -> None:
    m = _good_slack()
    m["oauth_config"]["scopes"]["bot"].remove("users:read.email")
    assert check_slack_manifest(m, command="/ask") == []
    problems = check_slack_manifest(m, command="/ask", speaker_email=True)
    assert [p.message for p in problems] == [
        "scope users:read.email is missing (needed to speaker_email in a route's inputs)"
    ]


def test_malformed_manifest_file_is_a_config_error_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text("display_information:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"yaml: not valid YAML/JSON at line 3.*: "):
        load_manifest_file(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_manifest_file(bad)


# --------------------------------------------------------------------------------------- Teams


def test_teams_icons_have_the_sizes_teams_requires_and_outline_is_white_on_transparent() -> None:
    w, h, color = decode_png((TEAMS_DIR / "color.png").read_bytes())
    assert (w, h) == (192, 192)
    assert all(p[3] == 255 for p in color)  # full colour, opaque
    w, h, outline = decode_png((TEAMS_DIR / "outline.png").read_bytes())
    assert (w, h) == (32, 32)
    assert {bytes(p) for p in outline} == {b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"}


def test_icon_script_reproduces_the_committed_icons(tmp_path: Path) -> None:
    script = [sys.executable, str(TEAMS_DIR / "make_icons.py"), str(tmp_path)]
    subprocess.run(script, check=True, timeout=60)  # noqa: S603 - our own script
    for name in ("color.png", "outline.png"):
        assert (tmp_path / name).read_bytes() == (TEAMS_DIR / name).read_bytes()


def test_shipped_teams_manifest_uses_the_schema_it_ships_with() -> None:
    m, files, schema = read_teams_dir(TEAMS_DIR)
    assert schema is not None
    assert m["manifestVersion"] == schema["properties"]["manifestVersion"]["const"] == "1.30"
    assert m["$schema"].endswith("/v1.30/MicrosoftTeams.schema.json")
    bot = m["bots"][0]
    assert bot["scopes"] == ["personal", "team", "groupChat"]
    assert "authorization" not in m  # RSC is opt-in
    filled = fill_teams_manifest(m, app_id=APP_ID)
    assert filled["id"] == filled["bots"][0]["botId"] == APP_ID
    problems = check_teams_manifest(filled, files, app_id=APP_ID, schema=schema)
    assert pointers(problems) == set()


def test_rsc_opt_in_adds_channel_message_permission_that_the_schema_accepts() -> None:
    m, files, schema = read_teams_dir(TEAMS_DIR)
    filled = fill_teams_manifest(m, app_id=APP_ID, rsc_channel_messages=True)
    assert filled["authorization"]["permissions"]["resourceSpecific"] == [
        {"name": "ChannelMessage.Read.Group", "type": "Application"}
    ]
    assert filled["webApplicationInfo"]["id"] == APP_ID
    assert pointers(check_teams_manifest(filled, files, app_id=APP_ID, schema=schema)) == set()


def test_unfilled_bot_id_and_foreign_bot_id_are_caught() -> None:
    m, files, schema = read_teams_dir(TEAMS_DIR)
    problems = check_teams_manifest(m, files, app_id=None, schema=schema)
    assert pointers(problems) == {"/id", "/bots/0/botId"}
    assert all("MICROSOFT_APP_ID" in p.fix for p in problems if p.severity == "error")
    other = fill_teams_manifest(m, app_id="11111111-2222-3333-4444-555555555555")
    problems = check_teams_manifest(other, files, app_id=APP_ID, schema=schema)
    assert [p.message for p in problems if p.severity == "error"] == [
        "is 11111111-2222-3333-4444-555555555555 but MICROSOFT_APP_ID is "
        f"{APP_ID}: Teams would send messages to another bot"
    ]


def test_wrong_icon_size_and_non_png_icons_are_reported_with_the_fix() -> None:
    m, files, schema = read_teams_dir(TEAMS_DIR)
    filled = fill_teams_manifest(m, app_id=APP_ID)
    files = dict(files)
    files["color.png"] = files["outline.png"]  # a 32x32 image where 192x192 is needed
    files["outline.png"] = b"GIF89a..."
    problems = {
        p.pointer: p for p in check_teams_manifest(filled, files, app_id=APP_ID, schema=schema)
    }
    assert problems["/icons/color"].message == "color.png is 32x32; Teams requires 192x192"
    assert problems["/icons/color"].fix == "resize it to 192x192 pixels"
    assert problems["/icons/outline"].message == "outline.png is not a PNG"
    del files["outline.png"]
    problems = {
        p.pointer: p for p in check_teams_manifest(filled, files, app_id=APP_ID, schema=schema)
    }
    assert "not in the package" in problems["/icons/outline"].message


def test_schema_catches_unknown_fields_bad_scopes_and_too_long_names() -> None:
    m, _, schema = read_teams_dir(TEAMS_DIR)
    assert schema is not None
    bad = copy.deepcopy(fill_teams_manifest(m, app_id=APP_ID))
    bad["botz"] = []
    bad["bots"][0]["scopes"] = ["personal", "channel"]
    bad["name"]["short"] = "x" * 31
    del bad["developer"]["privacyUrl"]
    bad["accentColor"] = "blue"
    found = {p.pointer: p.message for p in validate_against_schema(bad, schema)}
    assert found["/botz"] == "is not a known field in this manifest version"
    assert "'channel' is not one of" in found["/bots/0/scopes/1"]
    assert found["/name/short"] == "length 31 is outside 0-30"
    assert found["/developer/privacyUrl"] == "is required"
    assert "/accentColor" in found


def test_jsonschema_errors_point_at_the_field_inside_arrays_and_nested_objects() -> None:
    m, _, schema = read_teams_dir(TEAMS_DIR)
    assert schema is not None
    bad = copy.deepcopy(fill_teams_manifest(m, app_id=APP_ID))
    bad["bots"][0]["commandLists"] = [
        {"scopes": ["personal", "nowhere"], "triggers": ["mention", "slash", "mention"]}
    ]
    del bad["bots"][0]["scopes"]
    bad["icons"] = {"color": "color.png"}
    problems = validate_against_schema(bad, schema)
    found = {p.pointer: p.message for p in problems}
    assert found["/bots/0/commandLists/0/scopes/1"].startswith("'nowhere' is not one of")
    assert found["/bots/0/commandLists/0/triggers"] == "has 3 items; allowed 0-2"
    assert found["/bots/0/scopes"] == "is required"
    assert found["/bots/0/commandLists/0/commands"] == "is required"
    assert found["/icons/outline"] == "is required"
    assert len(problems) == 5
    assert all(p.severity == "error" and p.pointer.startswith("/") for p in problems)


def test_a_schema_that_cannot_be_applied_is_one_problem_not_a_crash() -> None:
    m, _, _ = read_teams_dir(TEAMS_DIR)
    broken = {"type": "object", "properties": {"name": {"$ref": "#/definitions/nowhere"}}}
    [problem] = validate_against_schema(m, broken)
    assert problem.pointer == "/"
    assert "could not be applied" in problem.message
    [problem] = validate_against_schema(m, {"type": "object", "required": "name"})
    assert "not valid JSON Schema" in problem.message


def test_without_a_shipped_schema_the_required_fields_are_still_checked() -> None:
    m, files, _ = read_teams_dir(TEAMS_DIR)
    filled = fill_teams_manifest(m, app_id=APP_ID)
    del filled["developer"], filled["accentColor"]
    problems = check_teams_manifest(filled, files, app_id=APP_ID, schema=None)
    assert pointers(problems) == {"/developer", "/accentColor"}


def test_package_zip_holds_manifest_and_icons_at_the_root() -> None:
    m, files, _ = read_teams_dir(TEAMS_DIR)
    data = build_teams_zip(fill_teams_manifest(m, app_id=APP_ID), files)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["color.png", "manifest.json", "outline.png"]
        packed = json.loads(z.read("manifest.json"))
        assert packed["bots"][0]["botId"] == APP_ID
        assert png_size(z.read("color.png")) == (192, 192)


def test_broken_teams_manifest_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"id": "x",\n  "name": }\n')
    with pytest.raises(ConfigError, match=r"manifest.json.*line 2, column 11"):
        read_teams_dir(tmp_path)


def test_yaml_dump_round_trips() -> None:
    m = _good_slack()
    assert yaml.safe_load(manifests.dump_manifest_yaml(m)) == m


# ----------------------------------------------------------------------- garbage never crashes

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "settings",
                    "features",
                    "oauth_config",
                    "scopes",
                    "bot",
                    "bots",
                    "icons",
                    "id",
                    "slash_commands",
                    "event_subscriptions",
                    "interactivity",
                    "authorization",
                    "permissions",
                    "resourceSpecific",
                    "botId",
                    "color",
                    "request_url",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            ["display_information", "features", "oauth_config", "settings", "_metadata"]
        ),
        _json,
    )
)
def test_any_slack_manifest_shape_gives_problems_not_a_crash(m: dict[str, Any]) -> None:
    rendered = render_slack_manifest(
        m, public_url="https://b.acme.io", socket_mode=False, command="/ask", oauth=True
    )
    problems = check_slack_manifest(rendered, command="/ask", speaker_email=True)
    assert all(p.pointer.startswith("/") and p.message for p in problems)


_TEAMS_SCHEMA = read_teams_dir(TEAMS_DIR)[2]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "bots",
                "icons",
                "authorization",
                "developer",
                "name",
                "manifestVersion",
                "webApplicationInfo",
            ]
        ),
        _json,
    )
)
def test_any_teams_manifest_shape_gives_problems_not_a_crash(m: dict[str, Any]) -> None:
    filled = fill_teams_manifest(m, app_id=APP_ID, rsc_channel_messages=True)
    problems = check_teams_manifest(
        filled, {"color.png": b"junk"}, app_id=APP_ID, schema=_TEAMS_SCHEMA
    )
    assert problems  # a random shape is never a valid package
