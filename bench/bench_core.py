"""Core benchmark: CPU overhead ratio, added latency, and 1,000 answers at once.

Run (from the repo root, Redis on 127.0.0.1:6379 or REDIS_URL)::

    .venv/bin/python bench/bench_core.py            # all three parts
    .venv/bin/python bench/bench_core.py --part cpu --rounds 7

A Dify-compatible SSE server runs in its own process (bench/_sse_server.py), so only the bridge's
CPU is counted. Figures are medians over rounds; the CPU ratio is measured side by side in one run
against a bare aiohttp loop that only reads and JSON-decodes the same stream (the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config.settings import BridgeFile, load_settings  # noqa: E402
from app.pipeline.forms import HumanForm  # noqa: E402
from app.pipeline.model import (  # noqa: E402
    IncomingMessage,
    Kind,
    PlatformLimits,
    ReplyExtras,
    Speaker,
    ThreadKey,
)
from app.server import gcpolicy  # noqa: E402
from app.server.loop import name as loop_name  # noqa: E402
from app.server.service import Service  # noqa: E402

LIMITS = PlatformLimits(
    max_message_chars=100_000, min_edit_interval=1.0, workspace_edits_per_minute=60_000
)
ROUTE = """
routes:
  - name: bench
    suggested_questions: false
    edit_interval: 1.0
"""


class BenchReply:
    """A reply handle that only notes when text first arrived and when the answer finished."""

    def __init__(self) -> None:
        self.first_text_at: float | None = None
        self.first_text = ""
        self.done = False
        self.failed: str | None = None

    async def start(self, placeholder: str) -> None:
        return None

    async def update(self, text: str, *, status: str | None = None) -> None:
        if self.first_text_at is None:
            self.first_text_at = time.time()
            self.first_text = text

    async def finish(self, text: str, extras: ReplyExtras) -> None:
        if self.first_text_at is None:
            self.first_text_at = time.time()
            self.first_text = text
        self.done = True

    async def fail(self, message: str, *, ref: str) -> None:
        self.failed = message
        self.done = True

    async def ask(self, text: str, forms: list[HumanForm], extras: ReplyExtras) -> None:
        await self.finish(text, extras)  # the benchmark's apps never pause on a form

    def resume_token(self) -> None:
        return None


def start_server(events: int, chunk: int, delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(  # noqa: S603 - our own benchmark server
        [
            sys.executable,
            str(ROOT / "bench" / "_sse_server.py"),
            str(events),
            str(chunk),
            str(delay),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def make_service(dify_url: str) -> Service:
    env = {
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_KEY_PREFIX": "bench" + uuid.uuid4().hex[:6],
        "DIFY_BASE_URL": dify_url,
        "DIFY_API_KEY": "app-bench",
        "LOG_LEVEL": "WARNING",
        "BREAKER_FAILURES": "1000",
        "USER_RATE_PER_MINUTE": "0",
        "WORKSPACE_RATE_PER_MINUTE": "0",
        "GC_TUNING": os.environ.get("GC_TUNING", "true"),
    }
    svc = await Service.create(
        load_settings(env),
        bridge_file=BridgeFile.model_validate(yaml.safe_load(ROUTE)),
        adapters=[],
        env=env,
    )
    if svc.settings.gc_tuning:  # as `dify-bridge serve` does once started (GC_TUNING=false: off)
        gcpolicy.settle_after_start()
    return svc


def message(i: int) -> IncomingMessage:
    return IncomingMessage(
        key=ThreadKey("console", "W1", "C1", f"{uuid.uuid4().hex}"),
        event_id=uuid.uuid4().hex,
        speaker=Speaker(id=f"U{i}", name="bench"),
        text="How do I reset my password?",
        kind=Kind.MENTION,
        starts_thread=True,  # a new thread per answer, as a top-level mention starts one
    )


async def floor_round(url: str, n: int, conc: int, session: aiohttp.ClientSession) -> float:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with (
            sem,
            session.post(
                f"{url}/chat-messages",
                json={"query": "q", "user": "u", "inputs": {}, "response_mode": "streaming"},
                headers={"Authorization": "Bearer app-bench"},
            ) as r,
        ):
            async for line in r.content:
                if line.startswith(b"data: "):
                    json.loads(line[6:])

    t = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - t) / n


async def floor_first_event(url: str, n: int, gap: float) -> list[float]:
    """One stream at a time, ``gap`` seconds apart: from the server's stamp to a bare aiohttp
    client holding the first event decoded (the latency floor of this machine and loop)."""
    lats: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            await asyncio.sleep(gap)
            async with session.post(
                f"{url}/chat-messages",
                json={"query": "q", "user": "u", "inputs": {}, "response_mode": "streaming"},
                headers={"Authorization": "Bearer app-bench"},
            ) as r:
                first = True
                async for line in r.content:
                    if line.startswith(b"data: "):
                        ev = json.loads(line[6:])
                        if first:
                            lats.append(time.time() - float(ev["answer"].split("|", 1)[0]))
                            first = False
    return lats


async def bridge_round(
    svc: Service, n: int, conc: int, gap: float = 0.0
) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(conc)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            if gap:
                await asyncio.sleep(gap)
            reply = BenchReply()
            await svc.bridge.handle(message(i), reply, LIMITS)
            if reply.failed:
                raise RuntimeError(reply.failed)
            sent = float(reply.first_text.split("|", 1)[0])
            assert reply.first_text_at is not None
            latencies.append(reply.first_text_at - sent)

    t = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return (time.process_time() - t) / n, latencies


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def part_cpu(rounds: int, n: int, conc: int) -> None:
    proc, url = start_server(400, 5, 0.0)
    svc = await make_service(url)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await floor_round(url, 20, conc, session)  # warm-up both paths
            await bridge_round(svc, 20, conc)
            floors, bridges, lats = [], [], []
            for _ in range(rounds):
                floors.append(await floor_round(url, n, conc, session))
                cpu, lat = await bridge_round(svc, n, conc)
                bridges.append(cpu)
                lats.extend(lat)
        f, b = statistics.median(floors), statistics.median(bridges)
        print(
            f"answer: 2 KB as 400 message events; {n} answers/round, {conc} concurrent, "
            f"{rounds} rounds; transport={svc.settings.dify_transport}; loop={loop_name()}"
        )
        print(f"floor (bare aiohttp read + json.loads): median {f * 1000:.2f} ms CPU per answer")
        print(f"bridge (whole pipeline, Redis, scheduler): median {b * 1000:.2f} ms CPU per answer")
        print(f"CPU overhead ratio: {b / f:.2f}  (target <= 1.5)")
        lat_ms = [x * 1000 for x in lats]
        print(
            f"added latency first event -> reply: p50 {pct(lat_ms, 50):.2f} ms, "
            f"p99 {pct(lat_ms, 99):.2f} ms  (target p99 < 5 ms; {len(lat_ms)} answers, "
            f"{conc} concurrent)"
        )
    finally:
        await svc.stop(grace=1)
        proc.terminate()


async def part_latency_idle(n: int, gap: float = 0.25) -> None:
    """Latency with one answer at a time (no queueing behind other streams), each question
    ``gap`` seconds after the last answer, as questions come in; next to a bare aiohttp
    client's time to its first event under the same gaps. (A process that has been idle a
    few hundred ms wakes more slowly than a busy one: on the 2-vCPU machine the floor itself
    goes from ~0.3 ms back to back to ~2 ms after 250 ms of idle.)"""
    proc, url = start_server(400, 5, 0.0)
    svc = await make_service(url)
    try:
        await bridge_round(svc, 10, 1)
        _, lats = await bridge_round(svc, n, 1, gap)
        floor = [x * 1000 for x in await floor_first_event(url, n, gap)]
        lat_ms = [x * 1000 for x in lats]
        print(
            f"added latency, one stream at a time ({gap * 1000:.0f} ms apart): "
            f"p50 {pct(lat_ms, 50):.2f} ms, p99 {pct(lat_ms, 99):.2f} ms ({n} answers); "
            f"bare aiohttp client, same gaps: p50 {pct(floor, 50):.2f} ms, "
            f"p99 {pct(floor, 99):.2f} ms; bridge minus floor: "
            f"p50 {pct(lat_ms, 50) - pct(floor, 50):.2f} ms, "
            f"p99 {pct(lat_ms, 99) - pct(floor, 99):.2f} ms"
        )
    finally:
        await svc.stop(grace=1)
        proc.terminate()


async def _lag_while(work: Any) -> tuple[list[float], float, float]:
    """Run ``work`` with a 10 ms ticker beside it: (lags, wall seconds, CPU seconds)."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    tick = asyncio.create_task(ticker())
    t0, c0 = time.perf_counter(), time.process_time()
    await work
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    await tick
    return lags, wall, cpu


async def part_scale(n: int) -> None:
    # 2 KB as 100 events of 20 chars, 40 ms apart: every answer streams for ~4 s, all at once.
    proc, url = start_server(100, 20, 0.04)
    svc = await make_service(url)
    try:
        # The floor at the same scale: a bare aiohttp loop reading the same n streams.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            flags, fwall, fcpu = await _lag_while(floor_round(url, n, n, session))
        fl = [x * 1000 for x in flags]
        print(
            f"scale floor (bare aiohttp, {n} streams): CPU {fcpu:.2f} s over {fwall:.1f} s; "
            f"loop lag p50 {pct(fl, 50):.1f} ms, p99 {pct(fl, 99):.1f} ms"
        )
        client = svc.bridge.client_for(svc.bridge.router.routes[0])

        async def client_only(i: int) -> None:
            stream = client.chat_stream(
                query="q", user=f"bench-{i}", conversation_id=None, inputs={}
            )
            async for _ in stream.batches():
                pass

        clags, cwall, ccpu = await _lag_while(asyncio.gather(*(client_only(i) for i in range(n))))
        cl = [x * 1000 for x in clags]
        print(
            f"scale DifyClient alone (httpx on aiohttp, no pipeline): CPU {ccpu:.2f} s over "
            f"{cwall:.1f} s; loop lag p50 {pct(cl, 50):.1f} ms, p99 {pct(cl, 99):.1f} ms"
        )
        replies = [BenchReply() for _ in range(n)]
        lags, wall, cpu = await _lag_while(
            asyncio.gather(
                *(svc.bridge.handle(message(i), r, LIMITS) for i, r in enumerate(replies))
            )
        )
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        complete = sum(1 for r in replies if r.done and not r.failed)
        lag_ms = [x * 1000 for x in lags]
        print(
            f"scale: {n} answers streaming at once, wall {wall:.1f} s, CPU {cpu:.2f} s, "
            f"loop={loop_name()}"
        )
        print(
            f"  complete: {complete}/{n}; peak RSS {rss_mb:.0f} MB (target < 250); "
            f"event-loop lag p50 {pct(lag_ms, 50):.1f} ms, p99 {pct(lag_ms, 99):.1f} ms "
            f"(target < 50)"
        )
        failed = [r.failed for r in replies if r.failed]
        if failed:
            print(f"  failures: {len(failed)}; first: {failed[0]}")
    finally:
        await svc.stop(grace=1)
        proc.terminate()


async def main() -> None:
    from app.server import logs

    logs.configure("WARNING", "console", cache=True)  # as `dify-bridge serve` does
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["cpu", "latency", "scale", "all"], default="all")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--answers", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--scale", type=int, default=1000)
    a = ap.parse_args()
    if a.part in ("cpu", "all"):
        await part_cpu(a.rounds, a.answers, a.concurrency)
    if a.part in ("latency", "all"):
        await part_latency_idle(200)
    if a.part in ("scale", "all"):
        await part_scale(a.scale)


if __name__ == "__main__":
    from app.server import loop

    # The loop the service itself would run (EVENT_LOOP, default uvloop where installed);
    # ``EVENT_LOOP=asyncio`` compares against asyncio's own loop.
    loop.run(main())
