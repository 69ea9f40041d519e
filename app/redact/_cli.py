"""``dify-bridge redact [--route NAME] [--json] [--jsonl]``: try a route's rules on stdin."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TextIO

from app.errors import ConfigError
from app.redact._redactor import get_redactor, marker, replace
from app.redact._service import canonical
from app.redact._types import NEVER_STORED, Finding
from app.redact._vault import PseudoMap
from app.redact.config import RedactionConfig, RedactionMode


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser() -> _Parser:
    p = _Parser(
        prog="dify-bridge redact",
        description="Read messages from stdin, one per line, and print them as the route would "
        "send them to Dify. Pseudonymize mode numbers placeholders across all lines, as one "
        "thread would; nothing is stored.",
    )
    p.add_argument(
        "--jsonl",
        action="store_true",
        help='whole messages, one JSON string per line (or an object with a "text" key), so a '
        "message may hold line breaks; each result is printed as a JSON string (or, with --json, "
        "an object)",
    )
    p.add_argument("--route", metavar="NAME", help="use this route's redaction settings")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"text": ..., "entities": [{"type", "start", "end"}]}',
    )
    return p


def run_cli(
    argv: list[str],
    *,
    routes: Mapping[str, RedactionConfig],
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Run the command; returns the exit code (0 ok, 1 bad input or config, 2 usage)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        stderr.write(f"{parser.format_usage()}dify-bridge redact: error: {e}\n")
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.route is None:
        cfg = RedactionConfig()
    elif args.route in routes:
        cfg = routes[args.route]
    else:
        known = ", ".join(sorted(routes)) or "(none configured)"
        stderr.write(f"dify-bridge redact: unknown route {args.route!r}; routes: {known}\n")
        return 2
    try:
        redactor = get_redactor(cfg.entities, cfg.phone_regions)
    except ConfigError as e:
        stderr.write(f"dify-bridge redact: {e}\n")
        return 1
    pmap = PseudoMap()

    def sub(line: str) -> tuple[str, list[Finding]]:
        if cfg.mode is RedactionMode.OFF:
            return line, []
        found = redactor.find(line)
        if cfg.mode is not RedactionMode.PSEUDONYMIZE:
            return replace(line, found, lambda f: marker(f.type)), found

        def pseudo(f: Finding) -> str:
            if f.type in NEVER_STORED:
                return marker(f.type)
            value = line[f.start : f.end]
            return pmap.assign(f.type, canonical(f.type, value), value) or marker(f.type)

        return replace(line, found, pseudo), found

    try:
        for number, raw in enumerate(stdin, 1):
            line = raw[:-1] if raw.endswith("\n") else raw
            line = line[:-1] if line.endswith("\r") else line
            if args.jsonl:
                if not line.strip():
                    continue  # JSON Lines readers skip blank lines too
                message = _message(line)
                if message is None:
                    stderr.write(
                        f"dify-bridge redact: line {number} is not a JSON string or an object "
                        'with a "text" string (with --jsonl each line is one message, e.g. '
                        '"line one\\nline two")\n'
                    )
                    return 1
                line = message
            text, found = sub(line)
            if args.json:
                entities = [{"type": f.type, "start": f.start, "end": f.end} for f in found]
                stdout.write(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
            elif args.jsonl:
                stdout.write(json.dumps(text, ensure_ascii=False))
            else:
                stdout.write(text)
            stdout.write("\n")
    except UnicodeDecodeError as e:
        stderr.write(f"dify-bridge redact: input is not valid UTF-8 ({e.reason})\n")
        return 1
    stdout.flush()
    return 0


def _message(line: str) -> str | None:
    """The message a ``--jsonl`` line holds: a JSON string, or an object's ``"text"``."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = value.get("text")
    return value if isinstance(value, str) else None


__all__ = ["run_cli"]
