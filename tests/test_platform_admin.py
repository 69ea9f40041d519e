"""A new platform brings its own settings, manifest command and doctor lines (issue 24).

A developer installs a platform package (here "kite", written to a temporary folder with a
dist-info and one entry point, as pip would): its variables are validated with the core settings
and documented in the settings reference, ``dify-bridge manifest kite`` exists, ``dify-bridge
doctor`` prints its lines (platforms in name order) and routes may match it. Nothing in
``app/`` names it.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from app.admin.cli import build_parser
from app.admin.settings_doc import env_example, markdown
from app.config.routes import RouteMatch
from app.config.settings import load_settings, variable_names
from app.errors import ConfigError

KITE = """
from pydantic import Field, SecretStr

from app.admin.doctor import Check
from app.seams.plugin import DoctorContext, Platform
from app.config.settings import PlatformSettings


class KiteSettings(PlatformSettings):
    kite_token: SecretStr | None = Field(None, description="The kite bot's token.")
    kite_rate: float = Field(1.5, gt=0, description="Kite messages per second.")


class KiteAdmin:
    def add_manifest_command(self, platforms):
        p = platforms.add_parser("kite", help="the kite app card")
        p.add_argument("--name", default="Dify")
        p.set_defaults(func=lambda args: print(f"kite card for {args.name}") or 0)

    async def doctor(self, ctx: DoctorContext) -> list[Check]:
        s = ctx.settings.platform("kite")
        if not s.secret("kite_token"):
            return [Check("SKIP", "kite token", "KITE_TOKEN is not set")]
        return [Check("OK", "kite token", f"{len(ctx.routes)} route(s) can answer kites")]


PLATFORM = Platform(name="kite", create=lambda ctx: None, settings=KiteSettings,
                    admin=KiteAdmin(), title="Kite chat")
"""


@pytest.fixture
def kite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kite_platform.py").write_text(KITE)
    dist = tmp_path / "kite_platform-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kite-platform\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[dify_bridge.adapters]\nkite = kite_platform:PLATFORM\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kite_platform", raising=False)
    for name in variable_names():
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("kite")
def test_the_platforms_variables_load_with_the_core_settings_and_errors_name_them() -> None:
    s = load_settings({"KITE_TOKEN": "k-1", "PORT": "8080"})
    assert s.platform("kite").secret("kite_token") == "k-1"
    assert s.port == 8080
    with pytest.raises(ConfigError, match="key KITE_RATE"):
        load_settings({"KITE_RATE": "0"})
    assert "KITE_RATE" in variable_names()


@pytest.mark.usefixtures("kite")
def test_the_settings_reference_and_env_example_get_a_section_for_it() -> None:
    doc = markdown()
    assert "#### Kite chat\n\n| Variable | Default | Meaning |" in doc
    assert "| `KITE_RATE` | `1.5` | Kite messages per second. |" in doc
    assert "# --- Kite chat\n# The kite bot's token.\n# KITE_TOKEN=\n" in env_example()


@pytest.mark.usefixtures("kite")
def test_routes_may_match_it_and_a_typo_names_the_installed_platforms() -> None:
    assert RouteMatch(platform="kite").platform == "kite"
    with pytest.raises(ValueError, match=r"unknown platform 'kyte'; installed: .*kite"):
        RouteMatch(platform="kyte")


@pytest.mark.usefixtures("kite")
def test_its_manifest_command_is_part_of_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["manifest", "kite", "--name", "Helpdesk"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == "kite card for Helpdesk\n"


@pytest.mark.usefixtures("kite")
async def test_the_doctor_prints_its_lines_among_the_platforms_in_name_order(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, v in {
        "BRIDGE_CONFIG": "",
        "REDIS_URL": redis_url,
        "DIFY_API_KEY": "app-x",
        "DIFY_BASE_URL": "http://127.0.0.1:9/v1",
        "KITE_TOKEN": "k-1",
    }.items():
        monkeypatch.setenv(k, v)
    args = build_parser().parse_args(["doctor", "--timeout", "2"])
    result = args.func(args)
    code = await result if inspect.isawaitable(result) else result
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # no Dify answers on port 9
    names = [line.split(":")[0] for line in lines]
    platforms = [n for n in names if n.split()[1] in ("kite", "slack", "teams")]
    assert platforms == ["OK kite token", "SKIP slack auth", "SKIP teams token"]
    assert "OK kite token: 1 route(s) can answer kites" in lines
