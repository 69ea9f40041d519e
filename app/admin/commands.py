"""Admin subcommands for ``dify-bridge``: ``manifest <platform>``, ``config check``, ``doctor``.

:func:`register` adds them to the main parser; each sets ``func`` to a callable taking the parsed
arguments and returning the exit code: 0 fine, 1 something to fix was found, 2 the settings or a
file could not be read at all. Each installed platform adds its own ``manifest <name>`` command
(``Platform.admin``) and uses the helpers here for the same messages and exit codes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.admin import doctor, manifests
from app.config.settings import RedactionMode, Route, Settings, load_settings, mask
from app.errors import ConfigError
from app.pipeline.routing import Router
from app.seams.plugin import discover

CHECK_DEFAULT = "\0default"  # --check given without a value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``manifest``, ``config`` and ``doctor`` to the main parser's subcommands."""
    hooks = [(p.name, p.admin) for p in discover() if p.admin is not None]
    manifest = subparsers.add_parser("manifest", help="render, check or publish app manifests")
    platforms = manifest.add_subparsers(
        dest="platform", required=True, metavar="{" + ",".join(name for name, _ in hooks) + "}"
    )
    for _, admin in hooks:
        admin.add_manifest_command(platforms)

    config = subparsers.add_parser("config", help="routing config tools")
    config_cmds = config.add_subparsers(dest="config_command", required=True, metavar="{check}")
    check = config_cmds.add_parser("check", help="validate the routing YAML, print the routes")
    check.add_argument("file", nargs="?", help="routing YAML (default BRIDGE_CONFIG)")
    check.add_argument(
        "--no-secrets",
        action="store_true",
        help="check the file's syntax and routes only; do not read API keys",
    )
    check.set_defaults(func=config_check)

    doc = subparsers.add_parser("doctor", help="check Redis, Dify and each platform's settings")
    doc.add_argument("--config", help="routing YAML (default BRIDGE_CONFIG)")
    doc.add_argument("--timeout", type=float, default=10.0, help="seconds per network call")
    doc.set_defaults(func=run_doctor)


def err(message: str) -> None:
    print(message, file=sys.stderr)


def cli_settings() -> Settings | None:
    """The settings, or None after printing the error (the command then exits with 2)."""
    try:
        return load_settings()
    except ConfigError as e:
        err(f"error: {e}")
        return None


def print_problems(problems: list[manifests.Problem], source: str) -> int:
    """Print a manifest check's problems and its verdict; 1 when there are errors, else 0."""
    for p in problems:
        print(p.line(source))
    errors = manifests.errors_in(problems)
    if errors:
        print(f"{source}: {len(errors)} error(s)")
        return 1
    print(f"{source}: OK" + (f" ({len(problems)} warning(s))" if problems else ""))
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
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def config_check(args: argparse.Namespace) -> int:
    settings = cli_settings()
    if settings is None:
        return 2
    problems: list[ConfigError] = []
    try:
        routes, source = doctor.load_routes(settings, args.file, problems=problems)
    except ConfigError as e:
        err(f"error: {e}")
        return 2
    for i, r in enumerate(routes):
        if r.config.redaction.mode is RedactionMode.PSEUDONYMIZE and not settings.secret(
            "redaction_key"
        ):
            problems.append(
                ConfigError(
                    f"route {r.name!r} pseudonymizes but REDACTION_KEY is not set: set it to a "
                    "long random string (keep it stable across restarts)",
                    file=args.file or settings.bridge_config,
                    key=f"routes.{i}.redaction.mode",
                )
            )
    if problems and not args.no_secrets:
        # Every missing variable at once, so one round of fixing is enough.
        for p in problems:
            err(f"error: {p}")
        if len(problems) > 1:
            err(
                f"{len(problems)} settings are missing: set them (e.g. in .env), or run "
                "`dify-bridge config check --no-secrets` to check only the file"
            )
        return 2
    ordered = Router(routes).routes  # the order the service tries them in
    print(f"{source}: {len(routes)} route(s), most specific match first")
    header = ["NAME", "MATCH platform/workspace/channel", "DIFY APP", "MODE", "KEY", "REDACTION"]
    rows = [header] + [
        [r.name, _match(r), r.base_url, r.config.dify.mode.value, _key(r), _redaction(r)]
        for r in ordered
    ]
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
            out.append(
                f"WARNING routes.{i}.match: route {r.name!r} never answers: route "
                f"{name!r} (routes.{j}) has the same match and comes first -> give it a "
                "match of its own or delete it"
            )
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
    checks = await doctor.run_doctor(
        settings, config_file=args.config, request_timeout=args.timeout
    )
    for c in checks:
        print(c.line())
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return doctor.exit_code(checks)
