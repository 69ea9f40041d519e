"""Admin subcommands for ``dify-bridge``: ``manifest slack|teams``, ``config check``, ``doctor``.

:func:`register` adds them to the main parser; each sets ``func`` to a callable taking the parsed
arguments and returning the exit code: 0 fine, 1 something to fix was found, 2 the settings or a
file could not be read at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from app import doctor, manifests
from app.errors import ConfigError
from app.routing import Router
from app.settings import RedactionMode, Route, Settings, load_settings, mask

_CHECK_DEFAULT = "\0default"  # --check given without a value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``manifest``, ``config`` and ``doctor`` to the main parser's subcommands."""
    manifest = subparsers.add_parser("manifest", help="render, check or publish app manifests")
    platforms = manifest.add_subparsers(dest="platform", required=True, metavar="{slack,teams}")

    slack = platforms.add_parser("slack", help="the Slack app manifest")
    slack.add_argument("--file", help="manifest to start from (default "
                       f"{manifests.SLACK_MANIFEST_PATH})")
    slack.add_argument("--public-url", help="https base URL Slack reaches the bridge at")
    slack.add_argument("--socket-mode", action=argparse.BooleanOptionalAction, default=None,
                       help="Socket Mode on/off (default: on when SLACK_APP_TOKEN is set)")
    slack.add_argument("--command", help="slash command (default SLACK_SLASH_COMMAND)")
    slack.add_argument("--format", choices=("yaml", "json"), default="yaml",
                       help="output format of the rendered manifest (default yaml)")
    slack.add_argument("--check", nargs="?", const=_CHECK_DEFAULT, metavar="FILE",
                       help="check the manifest locally instead of printing it")
    slack.add_argument("--push", action="store_true",
                       help="validate and update the app via Slack's manifest API")
    slack.set_defaults(func=slack_manifest)

    teams = platforms.add_parser("teams", help="the Teams app package")
    teams.add_argument("--dir", help=f"package sources (default {manifests.TEAMS_DIR})")
    teams.add_argument("--package", metavar="OUT.zip", help="write the upload package")
    teams.add_argument("--check", nargs="?", const=_CHECK_DEFAULT, metavar="DIR",
                       help="check the manifest and icons")
    teams.add_argument("--rsc-channel-messages", action="store_true",
                       help=f"add RSC {manifests.RSC_CHANNEL_MESSAGES}: the bot sees every channel "
                       "message, not only @mentions")
    teams.set_defaults(func=teams_manifest)

    config = subparsers.add_parser("config", help="routing config tools")
    config_cmds = config.add_subparsers(dest="config_command", required=True, metavar="{check}")
    check = config_cmds.add_parser("check", help="validate the routing YAML, print the routes")
    check.add_argument("file", nargs="?", help="routing YAML (default BRIDGE_CONFIG)")
    check.add_argument("--no-secrets", action="store_true",
                       help="check the file's syntax and routes only; do not read API keys")
    check.set_defaults(func=config_check)

    doc = subparsers.add_parser("doctor", help="check Redis, Dify, Slack and Teams settings")
    doc.add_argument("--config", help="routing YAML (default BRIDGE_CONFIG)")
    doc.add_argument("--timeout", type=float, default=10.0, help="seconds per network call")
    doc.set_defaults(func=run_doctor)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _settings() -> Settings | None:
    try:
        return load_settings()
    except ConfigError as e:
        _err(f"error: {e}")
        return None


def _print_problems(problems: list[manifests.Problem], source: str) -> int:
    for p in problems:
        print(p.line(source))
    errors = manifests.errors_in(problems)
    if errors:
        print(f"{source}: {len(errors)} error(s)")
        return 1
    print(f"{source}: OK" + (f" ({len(problems)} warning(s))" if problems else ""))
    return 0


# ----------------------------------------------------------------------------------------- Slack


def _speaker_email(settings: Settings, file: str | None = None) -> bool:
    try:
        routes, _ = doctor.load_routes(settings, file)
    except ConfigError:
        return False  # `config check` reports it; scopes fall back to the base set
    return doctor.routes_need_email(routes)


async def slack_manifest(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    if args.public_url and not args.public_url.startswith("https://"):
        _err("error: --public-url must start with https:// (Slack only calls TLS endpoints)")
        return 2
    # Reading files and the routing YAML blocks: keep it off the event loop.
    prepared = await asyncio.to_thread(_prepare_slack, args, settings)
    if isinstance(prepared, int):
        return prepared
    rendered, problems, source = prepared
    if args.check is not None:
        return _print_problems(problems, source)
    if args.push:
        return await _push(settings, rendered, problems, source)
    for p in problems:
        _err(p.line(source))
    if args.format == "json":
        print(json.dumps(rendered, indent=2, ensure_ascii=False))
    else:
        print(manifests.dump_manifest_yaml(rendered), end="")
    return 0


def _prepare_slack(
    args: argparse.Namespace, settings: Settings
) -> tuple[dict[str, Any], list[manifests.Problem], str] | int:
    check_file = None if args.check in (None, _CHECK_DEFAULT) else args.check
    path = Path(check_file or args.file or manifests.SLACK_MANIFEST_PATH)
    try:
        if path.exists() or check_file or args.file:
            base = manifests.load_manifest_file(path)
        else:
            base = manifests.default_slack_manifest()
    except ConfigError as e:
        _err(f"error: {e}")
        return 2
    # --socket-mode/--no-socket-mode, else on when SLACK_APP_TOKEN is set (the service then uses
    # Socket Mode), else whatever the file says.
    socket = args.socket_mode
    if socket is None:
        file_value = manifests.settings_value(base, "socket_mode_enabled")
        socket = settings.secret("slack_app_token") is not None or file_value is True
    command = args.command or settings.slack_slash_command
    rendered = manifests.render_slack_manifest(
        base, public_url=args.public_url, socket_mode=socket, command=command,
        oauth=settings.slack_client_id is not None,
    )
    problems = manifests.check_slack_manifest(
        rendered, command=command, speaker_email=_speaker_email(settings)
    )
    return rendered, problems, str(path)


async def _push(settings: Settings, rendered: dict[str, Any],
                problems: list[manifests.Problem], source: str) -> int:
    token = settings.secret("slack_config_token")
    if not token or not settings.slack_app_id:
        missing = [n for n, v in (("SLACK_CONFIG_TOKEN", token),
                                  ("SLACK_APP_ID", settings.slack_app_id)) if not v]
        _err(f"error: --push needs {' and '.join(missing)}: create an app configuration token "
             "at api.slack.com/apps and copy the app id from Basic Information")
        return 2
    if manifests.errors_in(problems):
        _print_problems(problems, source)
        print("not pushed: fix the errors above first")
        return 1
    try:
        body = await manifests.push_slack_manifest(
            rendered, api_url=settings.slack_api_url, config_token=token,
            app_id=settings.slack_app_id,
        )
    except manifests.SlackManifestApiError as e:
        print(f"Slack rejected the manifest ({e.method}: {e.error}):")
        for line in e.lines:
            print(f"  {line}")
        return 1
    print(f"updated Slack app {body.get('app_id', settings.slack_app_id)}")
    if body.get("permissions_updated"):
        print("scopes changed: reinstall the app to the workspace (Install App page) so the bot "
              "token gets them")
    return 0


# ----------------------------------------------------------------------------------------- Teams


def teams_manifest(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    check_dir = None if args.check in (None, _CHECK_DEFAULT) else args.check
    directory = Path(check_dir or args.dir or manifests.TEAMS_DIR)
    try:
        m, files, schema = manifests.read_teams_dir(directory)
    except ConfigError as e:
        _err(f"error: {e}")
        return 2
    app_id = settings.microsoft_app_id
    filled = manifests.fill_teams_manifest(
        m, app_id=app_id, rsc_channel_messages=args.rsc_channel_messages
    )
    problems = manifests.check_teams_manifest(filled, files, app_id=app_id, schema=schema)
    if schema is None:
        problems.append(manifests.Problem(
            "/manifestVersion", f"no shipped schema for manifestVersion "
            f"{m.get('manifestVersion')!r}: checked required fields only",
            "use the manifestVersion of manifests/teams/manifest.json", "warning"))
    source = str(directory / "manifest.json")
    if args.check is not None:
        return _print_problems(problems, source)
    if args.package:
        if _print_problems(problems, source):
            print("package not written: fix the errors above first")
            return 1
        out = Path(args.package)
        try:
            out.write_bytes(manifests.build_teams_zip(filled, files))
        except OSError as e:
            _err(f"error: cannot write {out}: {e.strerror}")
            return 2
        print(f"wrote {out} (manifest {filled.get('manifestVersion')}, bot {app_id}): upload it "
              "in Teams (Apps -> Manage your apps -> Upload an app) or the Teams admin center")
        return 0
    for p in problems:
        _err(p.line(source))
    print(json.dumps(filled, indent=2, ensure_ascii=False))
    return 0


# ---------------------------------------------------------------------------------------- config


def _match(route: Route) -> str:
    m = route.config.match
    return "/".join(v or "*" for v in (m.platform, m.workspace, m.channel))


def _redaction(route: Route) -> str:
    r = route.config.redaction
    if r.mode is RedactionMode.OFF:
        return "off"
    return f"{r.mode.value} [{', '.join(r.entities)}]"


def _key(route: Route) -> str:
    if not route.api_key:
        return f"not read ({doctor.key_source(route)})"
    return f"{mask(route.api_key)} ({doctor.key_source(route)})"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def config_check(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    problems: list[ConfigError] = []
    try:
        routes, source = doctor.load_routes(settings, args.file, problems=problems)
    except ConfigError as e:
        _err(f"error: {e}")
        return 2
    for i, r in enumerate(routes):
        if r.config.redaction.mode is RedactionMode.PSEUDONYMIZE and not settings.secret(
                "redaction_key"):
            problems.append(ConfigError(
                f"route {r.name!r} pseudonymizes but REDACTION_KEY is not set: set it to a "
                "long random string (keep it stable across restarts)",
                file=args.file or settings.bridge_config, key=f"routes.{i}.redaction.mode"))
    if problems and not args.no_secrets:
        # Every missing variable at once, so one round of fixing is enough.
        for p in problems:
            _err(f"error: {p}")
        if len(problems) > 1:
            _err(f"{len(problems)} settings are missing: set them (e.g. in .env), or run "
                 "`dify-bridge config check --no-secrets` to check only the file")
        return 2
    ordered = Router(routes).routes  # the order the service tries them in
    print(f"{source}: {len(routes)} route(s), most specific match first")
    header = ["NAME", "MATCH platform/workspace/channel", "DIFY APP", "MODE", "KEY", "REDACTION"]
    rows = [header] + [[r.name, _match(r), r.base_url, r.config.dify.mode.value, _key(r),
                        _redaction(r)] for r in ordered]
    for line in _table(rows):
        print(line)
    for r in routes:
        if r.config.inputs:
            pairs = ", ".join(f"{k} <- {v}" for k, v in r.config.inputs.items())
            print(f"  inputs of {r.name}: {pairs}")
    for line in _shadowed(routes):
        print(line)
    return 0


def _shadowed(routes: list[Route]) -> list[str]:
    """Routes that can never answer: an earlier route has exactly the same match."""
    first: dict[tuple[str | None, ...], tuple[int, str]] = {}
    out = []
    for i, r in enumerate(routes):
        m = r.config.match
        key = (m.platform, m.workspace, m.channel)
        if key in first:
            j, name = first[key]
            out.append(f"WARNING routes.{i}.match: route {r.name!r} never answers: route "
                       f"{name!r} (routes.{j}) has the same match and comes first -> give it a "
                       "match of its own or delete it")
        else:
            first[key] = (i, r.name)
    return out


# ---------------------------------------------------------------------------------------- doctor


async def run_doctor(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as e:
        print(doctor.Check("FAIL", "settings", str(e), "fix that environment variable").line())
        return 1
    checks = await doctor.run_doctor(settings, config_file=args.config,
                                     request_timeout=args.timeout)
    for c in checks:
        print(c.line())
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return doctor.exit_code(checks)
