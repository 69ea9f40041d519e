"""Slack benchmark: 100 mentions at once in one workspace through the real /slack/events path.

Run (from the repo root, Redis on 127.0.0.1:6379 or REDIS_URL)::

    .venv/bin/python bench/bench_slack.py                    # 100 mentions, 25 channels
    .venv/bin/python bench/bench_slack.py --mentions 100 --channels 1

Three processes: this one runs dify-bridge (the Slack adapter mounted on the core server, request
signatures checked); a Dify-compatible SSE server (bench/_sse_server.py: 200 events of 5
characters, 20 ms apart, so ~4 s per answer) and the fake Slack Web API
(``python -m tests.fakes.slack_api``, enforcing Slack's documented per-method, per-workspace and
per-channel limits) run apart, so only the bridge's CPU is counted.

Reports: 429s received (target 0), chat.update calls per answer, time from the event to the first
visible answer text (p50/p99), the HTTP ack time (p99 target under 20 ms), and CPU per answer
next to the floor of the core benchmark (a bare aiohttp loop reading and JSON-decoding the same
Dify stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.logs import configure as configure_logs  # noqa: E402
from app.service import Service  # noqa: E402
from app.settings import load_settings  # noqa: E402
from tests.fakes.slack_api import sign  # noqa: E402

SECRET = "bench-signing-secret"  # noqa: S105 - benchmark value
TOKEN = "xoxb-bench-token"  # noqa: S105 - benchmark value
TEAM = "T0BENCH"
BOT_USER = "U0BOT"


def spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


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


def mention_body(i: int, channel: str, ts: str) -> str:
    event = {
        "type": "app_mention",
        "user": f"U{i:06d}",
        "text": f"<@{BOT_USER}> question number {i}?",
        "ts": ts,
        "channel": channel,
        "team": TEAM,
        "event_ts": ts,
    }
    return json.dumps(
        {
            "token": "unused",
            "team_id": TEAM,
            "api_app_id": "A0FAKEAPP",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:12].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        }
    )


async def run(mentions: int, channels: int, events: int, chunk: int, delay: float) -> None:
    sse, dify_url = spawn(
        [sys.executable, "bench/_sse_server.py", str(events), str(chunk), str(delay)]
    )
    fake, api_url = spawn(
        [sys.executable, "-m", "tests.fakes.slack_api", "--team", TEAM, "--token", TOKEN]
    )
    env = {
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_KEY_PREFIX": "bench" + uuid.uuid4().hex[:6],
        "DIFY_BASE_URL": dify_url,
        "DIFY_API_KEY": "app-bench",
        "LOG_LEVEL": "WARNING",
        "BREAKER_FAILURES": "1000",
        "USER_RATE_PER_MINUTE": "0",
        "WORKSPACE_RATE_PER_MINUTE": "0",
        "BRIDGE_CONFIG": "/nonexistent.yaml",
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": api_url,
    }
    configure_logs("WARNING", "json")
    svc = await Service.create(load_settings(env), adapters=["slack"])
    await svc.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            floor = statistics.median([await floor_cpu(dify_url, 20, http) for _ in range(3)])
            # Warm up one connection per request so the ack figure is the bridge, not TCP setup.
            base = time.time()
            bodies = []
            for i in range(mentions):
                ts = f"{int(base)}.{i:06d}"
                bodies.append((f"C{i % channels:08d}", ts, mention_body(i, f"C{i % channels:08d}", ts)))
            sent_at: dict[tuple[str, str], float] = {}
            acks: list[float] = []

            async def deliver(channel: str, ts: str, body: str) -> None:
                headers = sign(SECRET, body)
                sent_at[(channel, ts)] = time.time()
                t = time.monotonic()
                async with http.post(
                    f"{svc.base_url}/slack/events", data=body.encode(), headers=headers
                ) as r:
                    assert r.status == 200, r.status
                    await r.read()
                acks.append(time.monotonic() - t)

            cpu0 = time.process_time()
            wall0 = time.monotonic()
            await asyncio.gather(*(deliver(*b) for b in bodies))
            await asyncio.sleep(0.5)
            while svc.bridge.active_count:
                await asyncio.sleep(0.05)
            wall = time.monotonic() - wall0
            cpu = (time.process_time() - cpu0) / mentions
            async with http.get(api_url.replace("/api/", "/_fake/calls")) as r:
                record = await r.json()
    finally:
        await svc.stop(grace=5)
        for p in (sse, fake):
            p.terminate()
            p.wait(5)

    first_text: dict[str, float] = {}
    updates: dict[str, int] = {}
    posts: dict[str, int] = {}
    for c in record["calls"]:
        thread = c["thread"]
        if c["error"] or not thread:
            continue
        if c["visible"]:
            first_text.setdefault(thread, c["time"])
        if c["method"] == "chat.update":
            updates[thread] = updates.get(thread, 0) + 1
        if c["method"] == "chat.postMessage":
            posts[thread] = posts.get(thread, 0) + 1
    latencies = [first_text[ts] - at for (_, ts), at in sent_at.items() if ts in first_text]
    per_answer = [updates.get(ts, 0) for (_, ts) in sent_at]
    answered = sum(1 for (_, ts) in sent_at if ts in first_text)
    print(
        f"mentions answered: {answered}/{mentions} in {channels} channel(s), {wall:.1f} s "
        f"(answers ~{events * delay:.0f} s, {events} events of {chunk} chars)"
    )
    print(f"429s received: {record['ratelimited']} (target 0)")
    print(
        f"chat.update per answer: mean {statistics.mean(per_answer):.2f}, "
        f"min {min(per_answer)}, max {max(per_answer)}; "
        f"chat.postMessage per answer: mean {statistics.mean(posts.values() or [0]):.2f}"
    )
    if latencies:
        print(
            f"event -> first visible text: p50 {pct(latencies, 50) * 1000:.0f} ms, "
            f"p99 {pct(latencies, 99) * 1000:.0f} ms"
        )
    print(f"HTTP ack: p50 {pct(acks, 50) * 1000:.1f} ms, p99 {pct(acks, 99) * 1000:.1f} ms")
    print(
        f"CPU per answer: {cpu * 1000:.1f} ms (floor {floor * 1000:.2f} ms, "
        f"ratio {cpu / floor:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mentions", type=int, default=100)
    ap.add_argument("--channels", type=int, default=25)
    ap.add_argument("--events", type=int, default=200, help="Dify events (tokens) per answer")
    ap.add_argument("--chunk", type=int, default=5, help="characters per event")
    ap.add_argument("--delay", type=float, default=0.02, help="seconds between events")
    args = ap.parse_args()
    asyncio.run(run(args.mentions, args.channels, args.events, args.chunk, args.delay))


if __name__ == "__main__":
    main()
