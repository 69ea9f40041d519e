"""``dify-bridge``: serve | redact | usage | config check | manifest | doctor, and the platforms'
commands (the console's ``chat``).

Only this module (through :func:`main`) exits the process; library code raises instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import structlog

from app.config.settings import Settings, load_settings
from app.errors import ConfigError
from app.seams.plugin import discover
from app.server import logs

log = structlog.get_logger(__name__)
T = TypeVar("T")


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


async def _serve(args: argparse.Namespace) -> int:
    from app.server.service import Service

    settings = settings_or_exit()
    logs.configure(settings.log_level, settings.log_format.value, cache=True)
    # First of all: from here on SIGTERM and Ctrl-C end the process in every state, also while
    # Redis starts or a platform cannot be reached.
    stop = asyncio.Event()
    _stop_on_signals(stop)
    if not settings.secret("dify_api_key") and not _config_has_keys(settings):
        print(
            "dify-bridge: DIFY_API_KEY is not set. Set it to your Dify app's API key "
            "(Dify -> your app -> API Access -> API Key), e.g. in .env",
            file=sys.stderr,
        )
        return 2
    service: Service | None = None
    try:
        service = await _unless_stopped(Service.create(settings), stop)
        if service is None:
            return 0
        service.install_signal_handlers(stop)
        if await _unless_stopped(_done(service.start(args.host, args.port)), stop) is None:
            return 0
        if settings.gc_tuning:
            from app.server import gcpolicy

            frozen = gcpolicy.settle_after_start()
            log.info("gc.tuned", frozen_objects=frozen, thresholds=list(gcpolicy.THRESHOLDS))
        await stop.wait()
        log.info(
            "shutdown.requested",
            grace_seconds=settings.shutdown_grace_seconds,
            detail="a second SIGTERM or Ctrl-C stops at once",
        )
        _stop_on_signals(service.hurry)
    except ConfigError as e:
        print(f"dify-bridge: configuration error: {e}", file=sys.stderr)
        return 2
    finally:
        if service is not None:
            await service.stop()
    return 0


async def _done(work: Coroutine[Any, Any, None]) -> bool:
    await work
    return True


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None when a stop signal came first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    log.info("shutdown.requested", during="start")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _config_has_keys(settings: Settings) -> bool:
    """True when the routing file names its own keys for every route (no default key needed)."""
    from app.config.settings import load_bridge_file, routing_file

    try:
        path = routing_file(settings)
        if path is None:
            return False
        bf = load_bridge_file(path)
    except ConfigError:
        return True  # let Service.create report the file's own error
    return bool(bf.routes) and all(r.dify.api_key_env or r.dify.api_key_file for r in bf.routes)


def _redact(args: argparse.Namespace) -> int:
    from app.config.settings import RedactionConfig
    from app.redact import run_cli
    from app.server.service import load_routes

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
        prog="dify-bridge", description="Dify apps in your chat platforms."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {_version()}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP service (platform adapters, health, metrics)")
    p.add_argument("--host", default=None, help="override HOST")
    p.add_argument("--port", type=int, default=None, help="override PORT")
    p.set_defaults(func=_serve)

    p = sub.add_parser("redact", help="redact stdin line by line, as the bridge would")
    p.add_argument("--route", default=None, help="use this route's redaction rules")
    p.add_argument("--json", action="store_true", help="one JSON object per line with entities")
    p.add_argument(
        "--jsonl",
        action="store_true",
        help="whole (multi-line) messages in, one JSON string per line; results out the same way",
    )
    p.set_defaults(func=_redact)

    for module in ("app.admin.commands", "app.admin.usage"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(sub)
    # Commands of a platform's own, such as the console's ``chat``.
    for platform in discover():
        if platform.commands is not None:
            platform.commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dify-bridge")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


ENV_FILE_VAR = "DIFY_BRIDGE_ENV_FILE"


def load_env_file() -> str | None:
    """Read ``.env`` from the working directory into the environment; real variables win.

    Every command reads it, not only ``make run``. ``DIFY_BRIDGE_ENV_FILE`` names another file
    (empty: read none). Returns the file read, if any.
    """
    from dotenv import load_dotenv

    path = os.environ.get(ENV_FILE_VAR, ".env")
    if not path or not os.path.isfile(path):
        return None
    load_dotenv(path, override=False)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    load_env_file()
    func: Any = args.func
    result = func(args)
    if inspect.iscoroutine(result):
        from app.server import loop

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
