"""``dify-bridge usage``: Dify tokens per route, workspace and user for one month.

Reads the counters :class:`app.state.limits.AbuseLimiter` keeps in Redis; shows each route's monthly
quota per workspace when the routing file sets one. Exit codes: 0 shown, 2 the settings, the
routing file or Redis could not be used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from app.config.settings import Settings, load_bridge_file, load_settings, routing_file
from app.errors import ConfigError
from app.state.limits import AbuseLimiter, UsageRow, month_of, parse_month
from app.state.redis_conn import connect
from app.state.store import RedisStore


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``usage`` to the main parser's subcommands."""
    p = subparsers.add_parser("usage", help="Dify tokens per route/workspace/user for a month")
    p.add_argument(
        "--month", type=_month_arg, default=None, help="YYYY-MM (default: this month, UTC)"
    )
    p.add_argument("--route", default=None, help="only this route")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_usage)


def _month_arg(value: str) -> str:
    try:
        return parse_month(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _quotas(settings: Settings) -> dict[str, int]:
    """Route name -> monthly quota, from the routing file if there is one (no API keys needed)."""
    path = routing_file(settings)
    if path is None:
        return {}
    return {r.name: r.monthly_token_quota for r in load_bridge_file(path).routes}


async def run_usage(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Print the usage table (or JSON) for ``args.month`` / ``args.route``."""
    out = out or sys.stdout
    try:
        settings = load_settings()
        quotas = _quotas(settings)
        handle = await connect(settings.redis_url, data_dir=settings.redis_data_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    month = args.month or month_of(time.time())
    try:
        store = RedisStore(handle.client, prefix=settings.redis_key_prefix)
        rows = await AbuseLimiter(store, settings).usage(month=month, route=args.route)
    except Exception as e:  # Redis went away between connect and read
        print(f"error: could not read usage from Redis ({type(e).__name__})", file=sys.stderr)
        return 2
    finally:
        await handle.close()
    if args.json:
        out.write(json.dumps(as_json(month, rows, quotas), indent=2) + "\n")
    else:
        out.write(render_table(month, rows, quotas))
    return 0


def _workspaces(rows: Iterable[UsageRow]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for r in rows:
        totals[(r.route, r.workspace)] = totals.get((r.route, r.workspace), 0) + r.tokens
    return totals


def as_json(month: str, rows: list[UsageRow], quotas: dict[str, int]) -> dict[str, Any]:
    """``{"month", "rows": [{route, workspace, user, tokens}], "workspaces": [{route, workspace,
    tokens, quota}]}``; ``quota`` is null when the route has none."""
    return {
        "month": month,
        "rows": [
            {"route": r.route, "workspace": r.workspace, "user": r.user, "tokens": r.tokens}
            for r in rows
        ],
        "workspaces": [
            {"route": route, "workspace": ws, "tokens": tokens, "quota": quotas.get(route) or None}
            for (route, ws), tokens in sorted(_workspaces(rows).items())
        ],
    }


def render_table(month: str, rows: list[UsageRow], quotas: dict[str, int]) -> str:
    """One line per user, a total line per route+workspace (with the quota when set)."""
    if not rows:
        return f"No token usage recorded for {month}.\n"
    header = ("ROUTE", "WORKSPACE", "USER", "TOKENS")
    lines: list[tuple[str, str, str, str]] = []
    totals = _workspaces(rows)
    last: tuple[str, str] | None = None
    for r in rows:
        group = (r.route, r.workspace)
        if last is not None and group != last:
            lines.append(_total_line(last, totals[last], quotas))
        last = group
        lines.append((r.route, _printable(r.workspace), _printable(r.user), f"{r.tokens:,}"))
    if last is not None:
        lines.append(_total_line(last, totals[last], quotas))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: tuple[str, str, str, str]) -> str:
        left = "  ".join(c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True))
        return f"{left}  {cells[3].rjust(widths[3])}".rstrip()

    grand = sum(r.tokens for r in rows)
    body = [fmt(header)] + [fmt(line) for line in lines]
    footer = f"All routes: {grand:,} tokens"
    return f"Token usage for {month} (UTC)\n" + "\n".join([*body, footer]) + "\n"


def _printable(text: str) -> str:
    # Ids come from chat platforms: keep control characters from messing up the terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def _total_line(
    group: tuple[str, str], tokens: int, quotas: dict[str, int]
) -> tuple[str, str, str, str]:
    route, ws = group
    quota = quotas.get(route, 0)
    label = "(total)"
    if quota > 0:
        label = f"(total, quota {quota:,}: {tokens * 100 // quota}% used)"
    return (route, _printable(ws), label, f"{tokens:,}")


__all__ = ["as_json", "register", "render_table", "run_usage"]
