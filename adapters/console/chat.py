"""``dify-bridge chat``: the console adapter's command, talking to the configured Dify app in a
terminal through the whole pipeline."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from adapters.console import (
    CONSOLE_LIMITS,
    TerminalReply,
    answer_forms,
    console_message,
    new_session,
)
from app.errors import ConfigError
from app.seams.plugin import Subcommands
from app.server import logs


def add_commands(sub: Subcommands[Any]) -> None:
    p = sub.add_parser("chat", help="talk to the configured Dify app in this terminal")
    p.add_argument("--verbose", action="store_true", help="show pipeline logs")
    p.set_defaults(func=chat)


async def chat(args: argparse.Namespace) -> int:
    # Imported when the command runs: building the CLI's parser must stay cheap.
    from app.admin.cli import settings_or_exit
    from app.server.service import Service

    settings = settings_or_exit()
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
            msg = console_message(line, session=session, seq=seq)
            reply = TerminalReply()
            await service.bridge.handle(msg, reply, CONSOLE_LIMITS)
            # A run paused on Human Input forms: answer them here, then see the rest.
            await answer_forms(
                service.bridge, msg.key, reply, lambda prompt: asyncio.to_thread(input, prompt)
            )
    finally:
        await service.stop(grace=5)
    return 0
