"""A/B: every benchmark's ratio on two revisions, interleaved in one run on one machine.

    .venv/bin/python bench/ab.py --base <git-rev> [--rounds 3] [--only core,teams]

A is ``--base`` checked out into a temporary git worktree; B is this working tree. Each round
runs every benchmark once on A and once on B (the order alternates per round), so background
load falls on both sides alike. Reported per figure: the median on each side and B/A. A figure
where B is worse than A by more than ``--tolerance`` (default 10%) is marked and makes the exit
status 1. Both sides run with this tree's interpreter and installed dependencies; each side's own
``bench/`` scripts import their own ``app`` (the scripts put their checkout first on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A figure: its name, whether lower is better, and how to read it from the benchmark's output.
Reader = Callable[[str], dict[str, float]]


def _ms_pair(pattern: str, name: str) -> Reader:
    def read(out: str) -> dict[str, float]:
        m = re.search(pattern, out)
        if m is None:
            raise ValueError(f"no {name!r} in output")
        return {name: float(m.group(1)) / float(m.group(2))}

    return read


def _number(pattern: str, name: str) -> Reader:
    def read(out: str) -> dict[str, float]:
        m = re.search(pattern, out)
        if m is None:
            raise ValueError(f"no {name!r} in output")
        return {name: float(m.group(1))}

    return read


def _both(*readers: Reader) -> Reader:
    def read(out: str) -> dict[str, float]:
        figures: dict[str, float] = {}
        for r in readers:
            figures.update(r(out))
        return figures

    return read


def _dify_stream(out: str) -> dict[str, float]:
    results = json.loads(out)
    return {
        f"dify_stream {name} / floor": float(r["ratio_to_floor"])
        for name, r in results.items()
        if isinstance(r, dict) and "ratio_to_floor" in r and name != "floor"
    }


@dataclass(frozen=True)
class Bench:
    name: str
    argv: tuple[str, ...]
    read: Reader
    # Figures where a higher value is better (throughput); the rest are costs.
    higher_is_better: frozenset[str] = frozenset()


BENCHES = (
    Bench(
        "core",
        ("bench/bench_core.py", "--part", "cpu"),
        _number(r"CPU overhead ratio: ([\d.]+)", "core CPU / floor"),
    ),
    Bench("dify_stream", ("bench/bench_dify_stream.py", "--json"), _dify_stream),
    Bench(
        "slack",
        ("bench/bench_slack.py",),
        _both(
            _ms_pair(
                r"bridge CPU per answer: ([\d.]+) ms \(floor ([\d.]+) ms", "slack CPU / floor"
            ),
            _number(r"p99 ratio ([\d.]+)", "slack ack p99 / floor"),
        ),
    ),
    Bench(
        "teams",
        ("bench/bench_teams.py",),
        _ms_pair(r"CPU per answer: ([\d.]+) ms \(floor ([\d.]+) ms", "teams CPU / floor"),
    ),
    Bench(
        "redact",
        ("bench/bench_redact.py",),
        _number(r"1 MB chat mix: .*-> ([\d.]+) MB/s", "redact chat mix MB/s"),
        frozenset({"redact chat mix MB/s"}),
    ),
    Bench(
        "render",
        ("bench/bench_render.py", "--runs", "50"),
        _number(r"streamed 20 KB answer.*?(\d+) ms CPU", "render 20 KB streamed ms"),
    ),
)


def _git(*argv: str) -> None:
    subprocess.run(["git", *argv], cwd=ROOT, check=True, capture_output=True)  # noqa: S603, S607


def _run(tree: Path, bench: Bench) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [sys.executable, *bench.argv],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{bench.name} in {tree} exited {done.returncode}: {done.stderr[-800:]}")
    return bench.read(done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision for side A")
    ap.add_argument("--rounds", type=int, default=3)
    names = ",".join(b.name for b in BENCHES)
    ap.add_argument("--only", help=f"comma-separated benchmark names: {names}")
    ap.add_argument("--tolerance", type=float, default=0.10)
    args = ap.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    base = tempfile.mkdtemp(prefix="ab-base-")
    _git("worktree", "add", "--detach", base, args.base)
    sides = {"A": Path(base), "B": ROOT}
    figures: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    try:
        for k in range(args.rounds):
            for bench in chosen:
                for side in ("A", "B") if k % 2 == 0 else ("B", "A"):
                    for name, value in _run(sides[side], bench).items():
                        figures[side].setdefault(name, []).append(value)
                print(f"round {k + 1}/{args.rounds}: {bench.name} done", file=sys.stderr)
    finally:
        _git("worktree", "remove", "--force", base)
    higher = frozenset().union(*(b.higher_is_better for b in chosen))
    worse = 0
    print(f"A = {args.base}, B = working tree; medians of {args.rounds} rounds")
    print(f"{'figure':36} {'A':>9} {'B':>9} {'B/A':>7}  (every round: A | B)")
    for name in figures["A"]:
        a = statistics.median(figures["A"][name])
        b = statistics.median(figures["B"].get(name, [float("nan")]))
        ratio = b / a
        bad = ratio < 1 - args.tolerance if name in higher else ratio > 1 + args.tolerance
        worse += bad
        rounds = " ".join(f"{v:.2f}" for v in figures["A"][name]) + " | "
        rounds += " ".join(f"{v:.2f}" for v in figures["B"].get(name, []))
        print(
            f"{name:36} {a:9.2f} {b:9.2f} {ratio:7.2f}{'  WORSE' if bad else '       '}  {rounds}"
        )
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
