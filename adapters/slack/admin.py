"""Slack's part of the admin CLI: ``dify-bridge manifest slack`` and the doctor's Slack lines.

``manifest slack`` renders ``manifests/slack/manifest.yaml`` for this deployment (public URL,
Socket Mode, slash command), ``--check`` checks it locally and ``--push`` updates the app through
Slack's manifest API. Exit codes as every admin command: 0 fine, 1 something to fix, 2 the
settings or a file could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from adapters.slack import manifest as slack
from adapters.slack.doctor import check_slack, routes_need_email
from adapters.slack.manifest_push import SlackManifestApiError, push_slack_manifest
from adapters.slack.settings import SlackSettings, slack_settings
from app.admin import doctor
from app.admin.commands import CHECK_DEFAULT, cli_settings, err, print_problems
from app.admin.doctor import Check
from app.admin.manifests import Problem, dump_manifest_yaml, errors_in, load_manifest_file
from app.config.settings import Settings
from app.errors import ConfigError
from app.seams.plugin import DoctorContext, Subcommands


class SlackAdmin:
    """The hook :class:`app.seams.plugin.Platform` carries for Slack."""

    def add_manifest_command(self, platforms: Subcommands[Any]) -> None:
        p = platforms.add_parser("slack", help="the Slack app manifest")
        p.add_argument(
            "--file", help=f"manifest to start from (default {slack.SLACK_MANIFEST_PATH})"
        )
        p.add_argument("--public-url", help="https base URL Slack reaches the bridge at")
        p.add_argument(
            "--socket-mode",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Socket Mode on/off (default: on when SLACK_APP_TOKEN is set)",
        )
        p.add_argument("--command", help="slash command (default SLACK_SLASH_COMMAND)")
        p.add_argument(
            "--format",
            choices=("yaml", "json"),
            default="yaml",
            help="output format of the rendered manifest (default yaml)",
        )
        p.add_argument(
            "--check",
            nargs="?",
            const=CHECK_DEFAULT,
            metavar="FILE",
            help="check the manifest locally instead of printing it",
        )
        p.add_argument(
            "--push",
            action="store_true",
            help="validate and update the app via Slack's manifest API",
        )
        p.set_defaults(func=slack_manifest)

    async def doctor(self, ctx: DoctorContext) -> list[Check]:
        return await check_slack(ctx.client, slack_settings(ctx.settings), ctx.routes)


ADMIN = SlackAdmin()


def _speaker_email(settings: Settings, file: str | None = None) -> bool:
    try:
        routes, _ = doctor.load_routes(settings, file)
    except ConfigError:
        return False  # `config check` reports it; scopes fall back to the base set
    return routes_need_email(routes)


async def slack_manifest(args: argparse.Namespace) -> int:
    settings = cli_settings()
    if settings is None:
        return 2
    if args.public_url and not args.public_url.startswith("https://"):
        err("error: --public-url must start with https:// (Slack only calls TLS endpoints)")
        return 2
    # Reading files and the routing YAML blocks: keep it off the event loop.
    prepared = await asyncio.to_thread(_prepare, args, settings)
    if isinstance(prepared, int):
        return prepared
    rendered, problems, source = prepared
    if args.check is not None:
        return print_problems(problems, source)
    if args.push:
        return await _push(slack_settings(settings), rendered, problems, source)
    for p in problems:
        err(p.line(source))
    if args.format == "json":
        print(json.dumps(rendered, indent=2, ensure_ascii=False))
    else:
        print(dump_manifest_yaml(rendered), end="")
    return 0


def _prepare(
    args: argparse.Namespace, settings: Settings
) -> tuple[dict[str, Any], list[Problem], str] | int:
    s = slack_settings(settings)
    check_file = None if args.check in (None, CHECK_DEFAULT) else args.check
    path = Path(check_file or args.file or slack.SLACK_MANIFEST_PATH)
    try:
        if path.exists() or check_file or args.file:
            base = load_manifest_file(path)
        else:
            base = slack.default_slack_manifest()
    except ConfigError as e:
        err(f"error: {e}")
        return 2
    # --socket-mode/--no-socket-mode, else on when SLACK_APP_TOKEN is set (the service then uses
    # Socket Mode), else whatever the file says.
    socket = args.socket_mode
    if socket is None:
        file_value = slack.settings_value(base, "socket_mode_enabled")
        socket = s.secret("slack_app_token") is not None or file_value is True
    command = args.command or s.slack_slash_command
    rendered = slack.render_slack_manifest(
        base,
        public_url=args.public_url,
        socket_mode=socket,
        command=command,
        oauth=s.slack_client_id is not None,
    )
    problems = slack.check_slack_manifest(
        rendered, command=command, speaker_email=_speaker_email(settings)
    )
    return rendered, problems, str(path)


async def _push(
    s: SlackSettings, rendered: dict[str, Any], problems: list[Problem], source: str
) -> int:
    token = s.secret("slack_config_token")
    if not token or not s.slack_app_id:
        missing = [
            n for n, v in (("SLACK_CONFIG_TOKEN", token), ("SLACK_APP_ID", s.slack_app_id)) if not v
        ]
        err(
            f"error: --push needs {' and '.join(missing)}: create an app configuration token "
            "at api.slack.com/apps and copy the app id from Basic Information"
        )
        return 2
    if errors_in(problems):
        print_problems(problems, source)
        print("not pushed: fix the errors above first")
        return 1
    try:
        body = await push_slack_manifest(
            rendered,
            api_url=s.slack_api_url,
            config_token=token,
            app_id=s.slack_app_id,
        )
    except SlackManifestApiError as e:
        print(f"Slack rejected the manifest ({e.method}: {e.error}):")
        for line in e.lines:
            print(f"  {line}")
        return 1
    print(f"updated Slack app {body.get('app_id', s.slack_app_id)}")
    if body.get("permissions_updated"):
        print(
            "scopes changed: reinstall the app to the workspace (Install App page) so the bot "
            "token gets them"
        )
    return 0
