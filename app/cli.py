"""``dify-bridge``: serve | chat | redact | usage | config check | manifest | doctor.

Only this module (through :func:`main`) exits the process; library code raises instead.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from app import logs
from app.errors import ConfigError
from app.settings import Settings, load_settings

log = structlog.get_logger(__name__)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


async def _serve(args: argparse.Namespace) -> int:
    from app.service import Service

    settings = _settings_or_exit()
    logs.configure(settings.log_level, settings.log_format.value, cache=True)
    if not settings.secret("dify_api_key") and not _config_has_keys(settings):
        print(
            "dify-bridge: DIFY_API_KEY is not set. Set it to your Dify app's API key "
            "(Dify -> your app -> API Access -> API Key), e.g. in .env",
            file=sys.stderr,
        )
        return 2
    try:
        service = await Service.create(settings)
    except ConfigError as e:
        print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    service.install_signal_handlers(stop)
    await service.start(args.host, args.port)
    if settings.gc_tuning:
        from app import gcpolicy

        frozen = gcpolicy.settle_after_start()
        log.info("gc.tuned", frozen_objects=frozen, thresholds=list(gcpolicy.THRESHOLDS))
    await stop.wait()
    log.info("shutdown.requested", grace_seconds=settings.shutdown_grace_seconds)
    await service.stop()
    return 0


def _config_has_keys(settings: Settings) -> bool:
    """True when the routing file names its own keys for every route (no default key needed)."""
    from pathlib import Path

    from app.settings import load_bridge_file

    if not Path(settings.bridge_config).exists():
        return False
    try:
        bf = load_bridge_file(settings.bridge_config)
    except ConfigError:
        return True  # let Service.create report the file's own error
    return bool(bf.routes) and all(r.dify.api_key_env or r.dify.api_key_file for r in bf.routes)


async def _chat(args: argparse.Namespace) -> int:
    from adapters.console import CONSOLE_LIMITS, TerminalReply, console_message, new_session
    from app.service import Service

    settings = _settings_or_exit()
    logs.configure("WARNING" if not args.verbose else "INFO", "console")
    try:
        service = await Service.create(settings, adapters=[])
    except ConfigError as e:
        print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
        return 2
    session = new_session()
    print(f"Talking to Dify through the full pipeline (thread {session}). Ctrl-D to quit.")
    seq = 0
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                print()
                break
            if not line.strip():
                continue
            seq += 1
            await service.bridge.handle(
                console_message(line, session=session, seq=seq), TerminalReply(), CONSOLE_LIMITS
            )
    finally:
        await service.stop(grace=5)
    return 0


def _redact(args: argparse.Namespace) -> int:
    from app.redact import run_cli
    from app.service import load_routes
    from app.settings import RedactionConfig

    routes: dict[str, RedactionConfig] = {}
    try:
        settings = load_settings()
        for r in load_routes(settings):
            routes[r.name] = r.config.redaction
    except ConfigError as e:
        if args.route:
            print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
            return 2
    argv = (["--route", args.route] if args.route else []) + (["--json"] if args.json else [])
    argv += ["--jsonl"] if args.jsonl else []
    code: int = run_cli(argv, routes=routes, stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dify-bridge", description="Dify apps in Slack and Microsoft Teams."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP service (Slack, Teams, health, metrics)")
    p.add_argument("--host", default=None, help="override HOST")
    p.add_argument("--port", type=int, default=None, help="override PORT")
    p.set_defaults(func=_serve)

    p = sub.add_parser("chat", help="talk to the configured Dify app in this terminal")
    p.add_argument("--verbose", action="store_true", help="show pipeline logs")
    p.set_defaults(func=_chat)

    p = sub.add_parser("redact", help="redact stdin line by line, as the bridge would")
    p.add_argument("--route", default=None, help="use this route's redaction rules")
    p.add_argument("--json", action="store_true", help="one JSON object per line with entities")
    p.add_argument(
        "--jsonl",
        action="store_true",
        help="whole (multi-line) messages in, one JSON string per line; results out the same way",
    )
    p.set_defaults(func=_redact)

    for module in ("app.admin_cli", "app.usage"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Any = args.func
    result = func(args)
    if inspect.iscoroutine(result):
        from app import loop

        try:
            factory = loop.loop_factory()
        except ConfigError as e:
            result.close()
            print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
            raise SystemExit(2) from e
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(result)
    raise SystemExit(int(result or 0))


if __name__ == "__main__":
    main()
