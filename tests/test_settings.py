"""Settings and the routing file: secure defaults, and errors that say file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.slack.settings import slack_settings
from adapters.teams.settings import teams_settings
from app.config.settings import (
    BridgeFile,
    RedactionMode,
    load_bridge_file,
    load_settings,
    resolve_routes,
    variable_names,
)
from app.errors import ConfigError
from app.pipeline.model import ThreadKey
from app.pipeline.routing import Router

EXAMPLE = Path(__file__).parent.parent / "config" / "bridge.example.yaml"


def test_defaults_are_documented_values() -> None:
    s = load_settings({})
    assert s.dify_base_url == "https://api.dify.ai/v1"
    assert s.port == 3000
    assert s.bridge_config == "config/bridge.yaml"
    assert s.redis_url is None  # embedded Redis


def test_without_a_config_file_one_default_route_answers_everything_with_redaction_on() -> None:
    s = load_settings({"DIFY_API_KEY": "app-abc"})
    routes = resolve_routes(s, BridgeFile())
    assert [r.name for r in routes] == ["default"]
    assert routes[0].api_key == "app-abc"
    assert routes[0].config.redaction.mode is RedactionMode.REDACT
    assert Router(routes).resolve(ThreadKey("teams", "x", "y", "z")) is routes[0]


def test_without_dify_api_key_the_error_names_it() -> None:
    with pytest.raises(ConfigError, match="DIFY_API_KEY"):
        resolve_routes(load_settings({}), BridgeFile())


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="key LOG_FORMAT"):
        load_settings({"LOG_FORMAT": "xml"})


def test_each_platform_reads_its_own_variables_into_its_own_settings() -> None:
    s = load_settings({"SLACK_BOT_TOKEN": "xoxb-1", "MICROSOFT_APP_ID": "app", "PORT": "8080"})
    slack, teams = slack_settings(s), teams_settings(s)
    assert s.platform("slack") is slack
    assert slack.secret("slack_bot_token") == "xoxb-1"
    assert slack.slack_slash_command == "/ask"  # the documented default
    assert teams.microsoft_app_id == "app"
    assert s.port == 8080
    assert set(s.platforms) >= {"slack", "teams"}
    assert "SLACK_BOT_TOKEN" in variable_names() and "DIFY_API_KEY" in variable_names()


def test_a_bad_platform_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="key MICROSOFT_APP_TYPE"):
        load_settings({"MICROSOFT_APP_TYPE": "Everyone"})
    with pytest.raises(ConfigError, match="key TEAMS_TENANT_RPS"):
        load_settings({"TEAMS_TENANT_RPS": "0"})


def test_platform_variables_come_from_the_environment_and_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.admin.cli import load_env_file

    for name in variable_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_SLASH_COMMAND", "/helpdesk")
    (tmp_path / ".env").write_text("SLACK_SLASH_COMMAND=/ignored\nMICROSOFT_APP_ID=from-file\n")
    monkeypatch.setenv("DIFY_BRIDGE_ENV_FILE", str(tmp_path / ".env"))
    load_env_file()
    s = load_settings()
    assert slack_settings(s).slack_slash_command == "/helpdesk"  # real env wins
    assert teams_settings(s).microsoft_app_id == "from-file"


def test_a_route_for_a_platform_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: x\n    match: {platform: slak}\n")
    with pytest.raises(ConfigError, match=r"routes.0.match.platform.*unknown platform 'slak'"):
        load_bridge_file(p)


def test_the_example_config_is_valid_and_routes_by_specificity() -> None:
    bf = load_bridge_file(EXAMPLE)
    env = {"DIFY_HR_API_KEY": "app-hr", "DIFY_TEAMS_API_KEY": "app-t", "DIFY_API_KEY": "app-d"}
    routes = resolve_routes(load_settings({}), bf, env=env)
    router = Router(routes)
    hr = router.resolve(ThreadKey("slack", "T0123ABCD", "C0456EFGH", "1.2"))
    other = router.resolve(ThreadKey("slack", "T0123ABCD", "C999", "1.2"))
    teams = router.resolve(ThreadKey("teams", "tenant", "19:abc", "1"))
    assert hr is not None and hr.name == "hr-helpdesk"
    assert other is not None and other.name == "default"
    assert teams is not None and teams.name == "teams-everything"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bridge.yaml"
    p.write_text(text)
    return p


def test_unknown_key_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: a\n    redacton: {mode: off}\n")
    with pytest.raises(ConfigError) as e:
        load_bridge_file(p)
    assert str(p) in str(e.value)
    assert "routes.0.redacton" in str(e.value)
    assert "unknown key" in str(e.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: a\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_bridge_file(p)


def test_an_api_key_written_in_the_file_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: a\n    dify: {api_key: app-secret}\n")
    with pytest.raises(ConfigError, match="api_key_env"):
        load_bridge_file(p)


def test_bad_redaction_mode_names_the_key(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: a\n    redaction: {mode: sometimes}\n")
    with pytest.raises(ConfigError, match=r"routes\.0\.redaction\.mode"):
        load_bridge_file(p)


def test_duplicate_route_names_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError, match="used twice"):
        load_bridge_file(p)


def test_a_missing_key_env_var_names_the_variable_and_route(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: hr\n    dify: {api_key_env: NOPE_KEY}\n")
    with pytest.raises(ConfigError) as e:
        resolve_routes(load_settings({}), load_bridge_file(p), file=str(p), env={})
    assert "NOPE_KEY" in str(e.value) and "hr" in str(e.value)
    assert "routes.0.dify.api_key_env" in str(e.value)


def test_key_from_a_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text("app-from-file\n")
    p = write(tmp_path, f"routes:\n  - name: hr\n    dify: {{api_key_file: {keyfile}}}\n")
    routes = resolve_routes(load_settings({}), load_bridge_file(p), env={})
    assert routes[0].api_key == "app-from-file"
    assert "app-from-file" not in repr(routes[0])  # masked


def test_a_misspelled_redaction_entity_is_refused_at_load(tmp_path: Path) -> None:
    p = write(tmp_path, "routes:\n  - name: a\n    redaction: {entities: [EMAIL, PHOEN]}\n")
    with pytest.raises(ConfigError, match=r"routes\.0\.redaction\.entities.*PHOEN"):
        load_bridge_file(p)


def test_env_example_and_the_settings_reference_are_generated_from_the_model() -> None:
    from app.admin.settings_doc import env_example, markdown

    root = Path(__file__).parent.parent
    assert (root / ".env.example").read_text() == env_example()
    # Stale? `python -m app.admin.settings_doc docs` rewrites the table from the model.
    assert markdown() in (root / "docs" / "reference" / "configuration.md").read_text()


def test_the_configuration_reference_can_be_regenerated_in_place(tmp_path: Path) -> None:
    from app.admin.settings_doc import markdown, write_reference

    page = tmp_path / "configuration.md"
    page.write_text(
        "# Reference\n\n<!-- settings-table:start (generated) -->\n| stale |\n"
        "<!-- settings-table:end -->\n\nAfter.\n"
    )
    write_reference(page)
    text = page.read_text()
    assert "| stale |" not in text
    assert markdown() in text and text.startswith("# Reference") and text.endswith("After.\n")
