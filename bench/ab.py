"""A/B: every benchmark's ratio on two revisions, interleaved in one run on one machine.

    .venv/bin/python bench/ab.py --base <git-rev> [--rounds 3] [--only core,teams]

A is ``--base`` checked out into a temporary git worktree; B is this working tree. Each round
runs every benchmark once on A and once on B (the order alternates per round), so background
load falls on both sides alike. Benchmarks marked ``paired`` (Teams, Slack: answers paced by a
timed stream, the machine mostly idle) run A and B at the same time instead: this machine's
speed drifts by ±25 % within a minute (a fixed pure-Python loop: 318-521 ms in six runs), and
two copies of the Teams benchmark run side by side agree within ~5 %, one after the other
within ~25 %. Reported per figure: the median on each side, B/A of the medians and, for paired
benchmarks, the median of the per-round B/A ratios (the steadier one). A figure
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
    # Run A and B at the same time (see the module docstring).
    paired: bool = False


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
        paired=True,
    ),
    Bench(
        "teams",
        ("bench/bench_teams.py",),
        _both(
            _ms_pair(r"CPU per answer: ([\d.]+) ms \(floor ([\d.]+) ms", "teams CPU / floor"),
            _number(r"CPU per answer: ([\d.]+) ms", "teams CPU ms per answer"),
            _number(r"first visible text: p50 ([\d.]+) ms", "teams first text p50 ms"),
        ),
        paired=True,
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


def _start(tree: Path, bench: Bench) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
        [sys.executable, *bench.argv],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str], tree: Path, bench: Bench) -> dict[str, float]:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{bench.name} in {tree} exited {proc.returncode}: {err[-800:]}")
    return bench.read(out)


def _round(
    sides: dict[str, Path], bench: Bench, order: tuple[str, str]
) -> dict[str, dict[str, float]]:
    """One run of ``bench`` on each side: together if paired, else one after the other."""
    if bench.paired:
        procs = {side: _start(sides[side], bench) for side in order}
        return {side: _result(procs[side], sides[side], bench) for side in order}
    return {side: _result(_start(sides[side], bench), sides[side], bench) for side in order}


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
    paired: set[str] = set()
    try:
        for k in range(args.rounds):
            for bench in chosen:
                got = _round(sides, bench, ("A", "B") if k % 2 == 0 else ("B", "A"))
                for side, values in got.items():
                    for name, value in values.items():
                        figures[side].setdefault(name, []).append(value)
                        if bench.paired:
                            paired.add(name)
                print(f"round {k + 1}/{args.rounds}: {bench.name} done", file=sys.stderr)
    finally:
        _git("worktree", "remove", "--force", base)
    higher = frozenset().union(*(b.higher_is_better for b in chosen))
    worse = 0
    print(f"A = {args.base}, B = working tree; medians of {args.rounds} rounds")
    if paired:
        print("paired figures (A and B side by side): B/A is the median of the rounds' ratios")
    print(f"{'figure':36} {'A':>9} {'B':>9} {'B/A':>7}  (every round: A | B)")
    for name in figures["A"]:
        a = statistics.median(figures["A"][name])
        b = statistics.median(figures["B"].get(name, [float("nan")]))
        ratio = b / a
        if name in paired:  # side by side: the ratio of each round, then their median
            ratio = statistics.median(
                y / x for x, y in zip(figures["A"][name], figures["B"][name], strict=True)
            )
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
