"""Benchmark: CPU the Dify client spends reading a stream, against a bare aiohttp floor.

Run from the repo root::

    .venv/bin/python bench/bench_dify_stream.py                  # 50 streams x 7 rounds
    .venv/bin/python bench/bench_dify_stream.py --streams 50 --rounds 9 --json
    .venv/bin/python bench/bench_dify_stream.py --chunk-delay 0.002   # paced: 1 event per read

The fake Dify (``tests/fakes/dify.py``) runs in a separate process, so only this process's CPU
is measured (``time.process_time`` around each batch). Each stream is a 2,000-character answer
sent as 400 ``message`` events (5 characters each) plus ``message_end``; a batch is ``--streams``
concurrent streams. Variants, run interleaved in every round:

* ``floor``: a bare ``aiohttp.ClientSession`` reading lines and ``json.loads`` of every data line;
* ``client-aiohttp``: ``DifyClient`` over httpx with the httpx-aiohttp transport (the default);
* ``client-httpx``: ``DifyClient`` over plain httpx.

Reported: median CPU ms per stream and the ratio to the floor's median (target <= 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.dify import DifyClient, MessageEnd, TextDelta, make_http_client  # noqa: E402

KEY = "app-bench"
ANSWER_CHARS = 2000
CHUNK = 5  # -> 400 message events


def start_fake(chunk_delay: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """Fake Dify in its own process; returns it and its base URL."""
    answer = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40)[:ANSWER_CHARS]
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "tests.fakes.dify",
            "--port",
            "0",
            "--app",
            KEY,
            "--answer",
            answer,
            "--chunk-size",
            str(CHUNK),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"fake Dify did not start (got {url!r})")
    return proc, url


def body(i: int) -> dict[str, object]:
    return {
        "query": f"question {i}",
        "inputs": {},
        "user": f"bench-{i}",
        "response_mode": "streaming",
        "conversation_id": "",
        "auto_generate_name": False,
    }


async def floor_stream(session: aiohttp.ClientSession, url: str, i: int) -> int:
    """The least work possible: read lines, decode each data line, stop at message_end."""
    chars = 0
    async with session.post(
        f"{url}/chat-messages", json=body(i), headers={"Authorization": f"Bearer {KEY}"}
    ) as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                obj = json.loads(line[6:])
                if obj["event"] == "message":
                    chars += len(obj["answer"])
                elif obj["event"] == "message_end":
                    break
    return chars


async def client_stream(client: DifyClient, i: int) -> int:
    chars = 0
    async with aclosing(
        client.chat_stream(
            query=f"question {i}", user=f"bench-{i}", conversation_id=None, inputs={}
        )
    ) as stream:
        async for ev in stream:
            if type(ev) is TextDelta:
                chars += len(ev.answer)
            elif type(ev) is MessageEnd:
                break
    return chars


async def batch(n: int, one: Callable[[int], Awaitable[int]]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for ``n`` concurrent streams."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    bad = [r for r in results if r != ANSWER_CHARS]
    if bad:
        raise SystemExit(f"incomplete answers: {bad[:3]}")
    return cpu, wall


async def run(url: str, streams: int, rounds: int) -> dict[str, dict[str, float]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    http_aio = make_http_client("aiohttp")
    http_plain = make_http_client("httpx")
    variants: dict[str, Callable[[int], Awaitable[int]]] = {}
    clients = {
        "client-aiohttp": DifyClient(url, KEY, http=http_aio),
        "client-httpx": DifyClient(url, KEY, http=http_plain),
    }

    async def floor(i: int) -> int:
        return await floor_stream(session, url, i)

    variants["floor"] = floor
    for name, client in clients.items():
        variants[name] = functools.partial(client_stream, client)

    cpu: dict[str, list[float]] = {k: [] for k in variants}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for one in variants.values():  # warm-up: connections, imports, caches
            await batch(streams, one)
        for r in range(rounds):
            order = list(variants.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for name, one in order:
                c, w = await batch(streams, one)
                cpu[name].append(c / streams)
                wall[name].append(w)
    finally:
        await session.close()
        await http_aio.aclose()
        await http_plain.aclose()
    floor_med = statistics.median(cpu["floor"])
    return {
        name: {
            "cpu_ms_per_stream": statistics.median(cpu[name]) * 1000,
            "ratio_to_floor": statistics.median(cpu[name]) / floor_med,
            "wall_s_per_batch": statistics.median(wall[name]),
        }
        for name in variants
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--chunk-delay",
        type=float,
        default=0.0,
        help="seconds between events on the fake (e.g. 0.002: one event per network read)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    proc, url = start_fake(args.chunk_delay)
    try:
        results = asyncio.run(run(url, args.streams, args.rounds))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{args.streams} concurrent streams x {args.rounds} rounds; "
        f"{ANSWER_CHARS} chars as {ANSWER_CHARS // CHUNK} message events each; "
        f"chunk delay {args.chunk_delay} s"
    )
    print(f"{'variant':16} {'CPU ms/stream':>14} {'x floor':>8} {'wall s/batch':>13}")
    for name, r in results.items():
        print(
            f"{name:16} {r['cpu_ms_per_stream']:14.2f} {r['ratio_to_floor']:8.2f} "
            f"{r['wall_s_per_batch']:13.3f}"
        )


if __name__ == "__main__":
    main()
