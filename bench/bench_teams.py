"""Teams benchmark: 50 channel threads answering at once through the real /api/messages path.

Run (from the repo root, Redis on 127.0.0.1:6379 or REDIS_URL)::

    .venv/bin/python bench/bench_teams.py                 # 50 threads, ~10 s answers
    .venv/bin/python bench/bench_teams.py --threads 100 --events 150

Three processes: this one runs dify-bridge (the Teams adapter mounted on the core server, JWT
validation on); a Dify-compatible SSE server (bench/_sse_server.py) and the fake Bot Connector
(``python -m tests.fakes.bot_connector``, with Teams' documented per-thread throttling) run apart,
so only the bridge's CPU is counted. Every activity carries a JWT signed by the fake.

Reports: 429s received (target 0), updates (PUTs) per answer, time from posting the activity to
the first visible answer text (p50/p99), HTTP ack time, and CPU per answer next to the floor of
the core benchmark (a bare aiohttp loop reading and JSON-decoding the same stream).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config.settings import load_settings  # noqa: E402
from app.server import gcpolicy  # noqa: E402
from app.server import loop as service_loop  # noqa: E402
from app.server.logs import configure as configure_logs  # noqa: E402
from app.server.service import Service  # noqa: E402
from tests.fakes.bot_connector import BOT_APP_ID, TENANT_ID, FakeBotConnector  # noqa: E402

PLACEHOLDER = "Thinking…"


def spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    # Our own helper scripts with fixed arguments.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # noqa: S603
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def wakeups() -> int:
    """This process's voluntary context switches so far: each is a sleep in the event loop's
    poll that ended with a wake-up (Linux; 0 elsewhere). Not a CPU figure, but it shows a
    change in how often the bridge sleeps and wakes (e.g. 55-64 per answer before the paced
    reads shared a grid, 18-19 after) without the machine's drift in speed."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def floor_cpu(url: str, n: int, session: aiohttp.ClientSession) -> float:
    """CPU per answer of merely reading the same Dify stream (the core benchmark's floor)."""

    async def one() -> None:
        async with session.post(
            f"{url}/chat-messages",
            json={"query": "q", "user": "u", "inputs": {}, "response_mode": "streaming"},
            headers={"Authorization": "Bearer app-bench"},
        ) as r:
            async for line in r.content:
                if line.startswith(b"data: "):
                    json.loads(line[6:])

    t = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - t) / n


async def run(
    threads: int, events: int, chunk: int, delay: float, dump: str | None, profile: str | None
) -> None:
    sse, dify_url = spawn(
        [sys.executable, "bench/_sse_server.py", str(events), str(chunk), str(delay)]
    )
    bc, service_url = spawn([sys.executable, "-m", "tests.fakes.bot_connector"])
    builder = FakeBotConnector()  # only to build activities shaped like Teams'
    builder.port = int(service_url.rstrip("/").rsplit(":", 1)[1])
    env = {
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_KEY_PREFIX": "bench" + uuid.uuid4().hex[:6],
        "DIFY_BASE_URL": dify_url,
        "DIFY_API_KEY": "app-bench",
        "LOG_LEVEL": "WARNING",
        "BREAKER_FAILURES": "1000",
        "USER_RATE_PER_MINUTE": "0",
        "WORKSPACE_RATE_PER_MINUTE": "0",
        "BRIDGE_CONFIG": "",  # no routing file: the one default route
        "MICROSOFT_APP_ID": BOT_APP_ID,
        "MICROSOFT_APP_PASSWORD": "s3cret",
        "MICROSOFT_APP_TENANT_ID": TENANT_ID,
        "MICROSOFT_TOKEN_URL": f"{service_url}botframework.com/oauth2/v2.0/token",
        "TEAMS_OPENID_METADATA_URL": f"{service_url}v1/.well-known/openidconfiguration",
        "GC_TUNING": os.environ.get("GC_TUNING", "true"),
    }
    os.environ["MICROSOFT_TOKEN_URL"] = env["MICROSOFT_TOKEN_URL"]
    svc = await Service.create(load_settings(env), adapters=["teams"], env=env)
    await svc.start("127.0.0.1", 0)
    if svc.settings.gc_tuning:  # as `dify-bridge serve` does once started
        gcpolicy.settle_after_start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            floor = statistics.median([await floor_cpu(dify_url, 20, http) for _ in range(3)])
            mint = f"{service_url}_fake/token"
            async with http.get(mint, params={"serviceUrl": service_url}) as r:
                token = (await r.json())["token"]
            activities = [builder.channel_mention(f"Question {i}?") for i in range(threads)]
            sent_at: dict[str, float] = {}
            acks: list[float] = []

            async def deliver(a: dict[str, Any]) -> None:
                sent_at[a["conversation"]["id"]] = time.time()
                t = time.monotonic()
                async with http.post(
                    f"{svc.base_url}/api/messages",
                    json=a,
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 200, r.status
                acks.append(time.monotonic() - t)

            # One activity on an idle bot first: the ack time without 49 others in the queue.
            await deliver(builder.channel_mention("Warm-up question?"))
            idle_ack = acks.pop()
            await svc.bridge.drain(timeout=300)
            sent_at.clear()
            prof = cProfile.Profile() if profile else None
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            woke0 = wakeups()
            wall0 = time.monotonic()
            if prof is not None:
                prof.enable()
            await asyncio.gather(*(deliver(a) for a in activities))
            await svc.bridge.drain(timeout=300)
            if prof is not None:
                prof.disable()
            wall = time.monotonic() - wall0
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
            user = (usage1.ru_utime - usage0.ru_utime) / threads
            system = (usage1.ru_stime - usage0.ru_stime) / threads
            cpu = user + system
            loop_kind = service_loop.name()
            woke = (wakeups() - woke0) / threads
            if prof is not None and profile:
                prof.dump_stats(profile)
            async with http.get(f"{service_url}_fake/calls") as r:
                record = await r.json()
    finally:
        await svc.stop(grace=5)
        for p in (sse, bc):
            p.terminate()
            p.wait(5)

    calls = record["calls"]
    if dump:
        doc = json.dumps({"sent_at": sent_at, "calls": calls})
        await asyncio.to_thread(Path(dump).write_text, doc, "utf-8")
    first_text: dict[str, float] = {}
    puts: dict[str, int] = {}
    for c in calls:
        conv = c["conversation_id"]
        if c["status"] < 300 and c["chars"] and c["text_head"] != PLACEHOLDER:
            first_text.setdefault(conv, c["wall"])
        if c["method"] == "PUT" and c["status"] < 300:
            puts[conv] = puts.get(conv, 0) + 1
    latencies = [first_text[k] - sent_at[k] for k in sent_at if k in first_text]
    per_answer = [puts.get(k, 0) for k in sent_at]
    answered = sum(1 for k in sent_at if k in first_text)
    finals = {c["conversation_id"] for c in calls if c["final"] and c["status"] < 300}
    failed = {c["conversation_id"] for c in calls if c["error_ref"] and c["status"] < 300}
    print(
        f"threads answered: {len(finals & set(sent_at))}/{threads} "
        f"(errors shown: {len(failed & set(sent_at))}, any text: {answered}) in {wall:.1f} s "
        f"(answers ~{events * delay:.0f} s, {events * chunk} chars each)"
    )
    print(f"429s received: {record['throttled']} (target 0)")
    print(
        f"updates per answer: mean {statistics.mean(per_answer):.1f}, "
        f"min {min(per_answer)}, max {max(per_answer)}"
    )
    print(
        f"activity -> first visible text: p50 {pct(latencies, 50) * 1000:.0f} ms, "
        f"p99 {pct(latencies, 99) * 1000:.0f} ms"
    )
    print(
        f"HTTP ack: idle {idle_ack * 1000:.1f} ms; during the burst of {threads}: "
        f"p50 {pct(acks, 50) * 1000:.1f} ms, p99 {pct(acks, 99) * 1000:.1f} ms"
    )
    print(
        f"CPU per answer: {cpu * 1000:.1f} ms (floor {floor * 1000:.2f} ms, "
        f"ratio {cpu / floor:.1f}; user {user * 1000:.1f} ms, system {system * 1000:.1f} ms; "
        f"loop={loop_kind})"
    )
    print(f"event-loop wake-ups per answer: {woke:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--events", type=int, default=100, help="Dify text events per answer")
    ap.add_argument("--chunk", type=int, default=20, help="characters per event")
    ap.add_argument("--delay", type=float, default=0.1, help="seconds between events")
    ap.add_argument("--dump", help="write every Bot Connector call as JSON to this file")
    ap.add_argument(
        "--profile", help="write a cProfile of the burst to this file (CPU figures then inflate)"
    )
    a = ap.parse_args()
    configure_logs("WARNING", "json")
    # The loop `dify-bridge serve` runs (EVENT_LOOP, default uvloop where installed).
    service_loop.run(run(a.threads, a.events, a.chunk, a.delay, a.dump, a.profile))


if __name__ == "__main__":
    main()
