"""Teams' part of the admin CLI: ``dify-bridge manifest teams`` and the doctor's Teams line.

``manifest teams`` fills in ``manifests/teams/manifest.json`` with the bot's app id, ``--check``
checks it (schema, bot id, scopes, icons) and ``--package OUT.zip`` writes the upload package.
Exit codes as every admin command: 0 fine, 1 something to fix, 2 a file could not be read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adapters.teams import manifest as teams
from adapters.teams.doctor import check_teams
from adapters.teams.settings import teams_settings
from app.admin.commands import CHECK_DEFAULT, cli_settings, err, print_problems
from app.admin.doctor import Check
from app.admin.manifests import Problem
from app.errors import ConfigError
from app.seams.plugin import DoctorContext, Subcommands


class TeamsAdmin:
    """The hook :class:`app.seams.plugin.Platform` carries for Teams."""

    def add_manifest_command(self, platforms: Subcommands[Any]) -> None:
        p = platforms.add_parser("teams", help="the Teams app package")
        p.add_argument("--dir", help=f"package sources (default {teams.TEAMS_DIR})")
        p.add_argument("--package", metavar="OUT.zip", help="write the upload package")
        p.add_argument(
            "--check",
            nargs="?",
            const=CHECK_DEFAULT,
            metavar="DIR",
            help="check the manifest and icons",
        )
        p.add_argument(
            "--rsc-channel-messages",
            action="store_true",
            help=f"add RSC {teams.RSC_CHANNEL_MESSAGES}: the bot sees every channel "
            "message, not only @mentions",
        )
        p.set_defaults(func=teams_manifest)

    async def doctor(self, ctx: DoctorContext) -> list[Check]:
        return [await check_teams(ctx.client, teams_settings(ctx.settings), ctx.env)]


ADMIN = TeamsAdmin()


def teams_manifest(args: argparse.Namespace) -> int:
    settings = cli_settings()
    if settings is None:
        return 2
    check_dir = None if args.check in (None, CHECK_DEFAULT) else args.check
    directory = Path(check_dir or args.dir or teams.TEAMS_DIR)
    try:
        m, files, schema = teams.read_teams_dir(directory)
    except ConfigError as e:
        err(f"error: {e}")
        return 2
    app_id = teams_settings(settings).microsoft_app_id
    filled = teams.fill_teams_manifest(
        m, app_id=app_id, rsc_channel_messages=args.rsc_channel_messages
    )
    problems = teams.check_teams_manifest(filled, files, app_id=app_id, schema=schema)
    if schema is None:
        problems.append(
            Problem(
                "/manifestVersion",
                f"no shipped schema for manifestVersion "
                f"{m.get('manifestVersion')!r}: checked required fields only",
                "use the manifestVersion of manifests/teams/manifest.json",
                "warning",
            )
        )
    source = str(directory / "manifest.json")
    if args.check is not None:
        return print_problems(problems, source)
    if args.package:
        if print_problems(problems, source):
            print("package not written: fix the errors above first")
            return 1
        out = Path(args.package)
        try:
            out.write_bytes(teams.build_teams_zip(filled, files))
        except OSError as e:
            err(f"error: cannot write {out}: {e.strerror}")
            return 2
        print(
            f"wrote {out} (manifest {filled.get('manifestVersion')}, bot {app_id}): upload it "
            "in Teams (Apps -> Manage your apps -> Upload an app) or the Teams admin center"
        )
        return 0
    for p in problems:
        err(p.line(source))
    print(json.dumps(filled, indent=2, ensure_ascii=False))
    return 0
