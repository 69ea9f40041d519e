"""Slack benchmark: 100 mentions at once in one workspace through the real /slack/events path.

Run (from the repo root, Redis on 127.0.0.1:6379 or REDIS_URL)::

    .venv/bin/python bench/bench_slack.py                    # 100 mentions, 25 channels
    .venv/bin/python bench/bench_slack.py --mentions 100 --channels 1
    .venv/bin/python bench/bench_slack.py --mode native      # Slack's native streaming
    .venv/bin/python bench/bench_slack.py --busy             # 10 per channel: 1, then 3 replicas
    .venv/bin/python bench/bench_slack.py --channels 10 --replicas 3

``--mode edits`` (default) answers with ``chat.postMessage`` + ``chat.update``; ``--mode native``
routes every channel to native streaming (``native_streaming: always``: ``chat.startStream`` /
``appendStream`` / ``stopStream``, Tier 2 / 4 / 2 per workspace), where answers beyond the stream
tier go to edits. ``--dms`` sends each question as a DM to the agent (its own thread in its own
DM) instead of a mention: native streaming by default, edits with ``--mode edits``.

Three processes: dify-bridge (the Slack adapter on the core server, request signatures checked)
runs alone in a child process whose CPU time is measured; a Dify-compatible SSE server
(bench/_sse_server.py: 200 events of 5 characters, 20 ms apart, so ~4 s per answer) runs in
another; this process sends the signed events and serves the fake Slack Web API
(tests/fakes/slack_api.py), which enforces Slack's documented per-method, per-workspace and
per-channel limits and records every call.

With ``--replicas N`` the bridge runs as N processes on one Redis (the mentions are spread over
them as a load balancer would) and the CPU figure is theirs together. ``--busy`` is the busy-channel
shape: 100 mentions in 10 channels (10 per channel, Slack allows about one post per second per
channel), first with one replica, then with three.

Reports: 429s received (target 0), chat.update calls per answer, time from the event to the first
visible answer text (p50/p99), the HTTP ack time (p99 target under 20 ms) next to its floor (the
same burst against a bare aiohttp server that only checks the signature, bench/_ack_server.py),
and CPU per answer next to the floor of the core benchmark (a bare aiohttp loop reading and
JSON-decoding the same Dify stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config.settings import load_settings  # noqa: E402
from app.server import gcpolicy  # noqa: E402
from app.server.logs import configure as configure_logs  # noqa: E402
from app.server.service import Service  # noqa: E402
from tests.fakes.slack_api import FakeSlack, sign  # noqa: E402

SECRET = "bench-signing-secret"  # noqa: S105 - benchmark value
TOKEN = "xoxb-bench-token"  # noqa: S105 - benchmark value
TEAM = "T0BENCH"
BOT_USER = "U0BOT"


def spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # noqa: S603
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def spawn_async(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Like :func:`spawn`, without blocking this loop (it serves the child's Slack calls)."""
    return await asyncio.to_thread(spawn, args)


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
    if channel.startswith("D"):  # a DM to the agent: a message.im, no mention
        event.update(type="message", channel_type="im", text=f"question number {i}?")
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


async def serve(env_json: str) -> None:
    """The bridge process: dify-bridge with the Slack adapter; prints its base URL."""
    env = json.loads(env_json)
    configure_logs("WARNING", "json", cache=True)  # as `dify-bridge serve` does
    svc = await Service.create(load_settings(env), adapters=["slack"])
    await svc.start("127.0.0.1", 0)
    if svc.settings.gc_tuning:  # as `dify-bridge serve` does once started
        gcpolicy.settle_after_start()
    sys.stdout.write(svc.base_url + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    profile_to = os.environ.get("BENCH_PROFILE")  # where to write a cProfile of the bridge
    prof = None
    if profile_to:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    await stop.wait()
    if prof is not None and profile_to:
        prof.disable()
        prof.dump_stats(profile_to)
    await svc.stop(grace=5)


def raw_request(host: str, body: str) -> bytes:
    data = body.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in sign(SECRET, body).items())
    return (
        f"POST /slack/events HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


async def burst(host: str, port: int, raws: list[bytes]) -> list[float]:
    """Send every request at once on its own open connection; each one's time to the ack."""
    conns = [await asyncio.open_connection(host, port) for _ in raws]
    acks: list[float] = []

    async def deliver(n: int) -> None:
        reader, writer = conns[n]
        t = time.monotonic()
        writer.write(raws[n])
        status = await reader.readline()
        acks.append(time.monotonic() - t)
        assert b" 200 " in status, status
        writer.close()

    await asyncio.gather(*(deliver(n) for n in range(len(raws))))
    return acks


async def ack_floor(mentions: int, rounds: int = 3) -> tuple[float, float]:
    """Median p50/p99 ack of the same burst against a bare aiohttp server that only checks the
    signature (bench/_ack_server.py): what this machine allows before any bridge work."""
    proc, url = await spawn_async([sys.executable, "bench/_ack_server.py", SECRET])
    host, port = url.removeprefix("http://").split(":")
    p50s, p99s = [], []
    try:
        for _ in range(rounds):
            base = time.time()
            raws = [
                raw_request(host, mention_body(i, "C0FLOOR", f"{int(base)}.{i:06d}"))
                for i in range(mentions)
            ]
            acks = await burst(host, int(port), raws)
            p50s.append(pct(acks, 50))
            p99s.append(pct(acks, 99))
            await asyncio.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(5)
    return statistics.median(p50s), statistics.median(p99s)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _finished(m: Any) -> bool:
    """The final answer is shown: thumbs under an edited answer, feedback buttons under a
    streamed one."""
    return m.feedback_buttons() is not None or any(
        b.get("action_id") == "dify_like" for b in m.buttons()
    )


async def run(
    mentions: int,
    channels: int,
    events: int,
    chunk: int,
    delay: float,
    mode: str = "edits",
    dms: bool = False,
    replicas: int = 1,
) -> None:
    sse, dify_url = spawn(
        [sys.executable, "bench/_sse_server.py", str(events), str(chunk), str(delay)]
    )
    # Enforces Slack's limits; the referee is for the tests, not for timings.
    fake = FakeSlack(referee=False)
    await fake.start()
    fake.add_team(TEAM, token=TOKEN, bot_user_id=BOT_USER)
    env = {
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_KEY_PREFIX": "bench" + uuid.uuid4().hex[:6],  # one prefix: replicas share budgets
        "DIFY_BASE_URL": dify_url,
        "DIFY_API_KEY": "app-bench",
        "LOG_LEVEL": "WARNING",
        "BREAKER_FAILURES": "1000",
        "USER_RATE_PER_MINUTE": "0",
        "WORKSPACE_RATE_PER_MINUTE": "0",
        "BRIDGE_CONFIG": "",  # no routing file: the one default route
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake.api_url,
        "GC_TUNING": os.environ.get("GC_TUNING", "true"),
    }
    config = None
    if mode == "native" and not dms:
        config = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed in the finally below
            "w", suffix=".yaml", delete=False
        )
        config.write("routes:\n  - name: bench\n    native_streaming: always\n")
        config.close()
        env["BRIDGE_CONFIG"] = config.name
    if mode == "edits" and dms:
        config = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed in the finally below
            "w", suffix=".yaml", delete=False
        )
        config.write("routes:\n  - name: bench\n    native_streaming: off\n")
        config.close()
        env["BRIDGE_CONFIG"] = config.name
    bridges = [
        await spawn_async([sys.executable, __file__, "--serve", json.dumps(env)])
        for _ in range(replicas)
    ]
    bridge_ps = [psutil.Process(b.pid) for b, _ in bridges]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            floor = statistics.median([await floor_cpu(dify_url, 20, http) for _ in range(3)])
            floor_ack50, floor_ack99 = await ack_floor(mentions)
            # Slack keeps connections open: open them first, and send pre-built raw requests so
            # the ack figure is the bridge's time, not this process building HTTP requests.
            addrs = [url.removeprefix("http://").split(":") for _, url in bridges]
            conns = [
                await asyncio.open_connection(addrs[i % replicas][0], int(addrs[i % replicas][1]))
                for i in range(mentions)
            ]
            base = time.time()
            requests = []
            for i in range(mentions):
                channel, ts = (
                    f"D{i:08d}" if dms else f"C{i % channels:08d}",
                    f"{int(base)}.{i:06d}",
                )
                body = mention_body(i, channel, ts)
                requests.append((channel, ts, raw_request(addrs[i % replicas][0], body)))
            sent_at: dict[str, float] = {}
            acks: list[float] = []

            async def deliver(n: int, ts: str, raw: bytes) -> None:
                reader, writer = conns[n]
                sent_at[ts] = time.time()
                t = time.monotonic()
                writer.write(raw)
                status = await reader.readline()
                acks.append(time.monotonic() - t)
                assert b" 200 " in status, status
                writer.close()

            cpu0 = sum(cpu_seconds(p) for p in bridge_ps)
            wall0 = time.monotonic()
            await asyncio.gather(*(deliver(n, r[1], r[2]) for n, r in enumerate(requests)))
            # Done when every thread shows its final answer (the thumbs under it).
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                done = sum(
                    1
                    for ch, ts in {(r[0], r[1]) for r in requests}
                    if any(_finished(m) for m in fake.bot_messages(ch, ts))
                )
                if done == mentions:
                    break
                await asyncio.sleep(0.1)
            wall = time.monotonic() - wall0
            await asyncio.sleep(0.5)
            cpu = (sum(cpu_seconds(p) for p in bridge_ps) - cpu0) / mentions
    finally:
        for bridge, _ in bridges:
            bridge.send_signal(signal.SIGTERM)
        for bridge, _ in bridges:
            bridge.wait(15)
        sse.terminate()
        sse.wait(5)
        await fake.close()
        if config is not None:
            os.unlink(config.name)

    first_text: dict[str, float] = {}
    first_sign: dict[str, float] = {}
    updates: dict[str, int] = {}
    posts: dict[str, int] = {}
    streams: dict[str, int] = {}
    appends: dict[str, int] = {}
    for st in fake.statuses:
        if st["status"]:
            first_sign.setdefault(st["thread_ts"], st["time"])
    for c in fake.calls:
        if c.error or not c.thread:
            continue
        if c.method in ("chat.postMessage", "chat.startStream"):
            first_sign[c.thread] = min(first_sign.get(c.thread, c.time), c.time)
        if c.visible:
            first_text.setdefault(c.thread, c.time)
        if c.method == "chat.update":
            updates[c.thread] = updates.get(c.thread, 0) + 1
        if c.method == "chat.postMessage":
            posts[c.thread] = posts.get(c.thread, 0) + 1
        if c.method == "chat.startStream":
            streams[c.thread] = streams.get(c.thread, 0) + 1
        if c.method == "chat.appendStream":
            appends[c.thread] = appends.get(c.thread, 0) + 1
    latencies = [first_text[ts] - at for ts, at in sent_at.items() if ts in first_text]
    signs = [first_sign[ts] - at for ts, at in sent_at.items() if ts in first_sign]
    per_answer = [updates.get(ts, 0) for ts in sent_at]
    answered = sum(1 for ts in sent_at if ts in first_text)
    print(
        f"mode {mode}: {'DMs' if dms else 'mentions'} answered: {answered}/{mentions} in "
        f"{mentions if dms else channels} channel(s) "
        f"({1 if dms else mentions / channels:.0f} per channel), {replicas} replica(s), "
        f"{wall:.1f} s (answers ~{events * delay:.0f} s, {events} events of {chunk} chars)"
    )
    limited = sorted({c.method for c in fake.ratelimited})
    print(f"429s received: {len(fake.ratelimited)} (target 0) {', '.join(limited)}".rstrip())
    refused = [c for c in fake.calls if c.error and c.error != "ratelimited"]
    print(f"other Slack errors: {len(refused)}; contract errors: {len(fake.contract_errors)}")
    if mode == "native":
        print(
            f"answers streamed natively: {len(streams)}/{mentions} (chat.startStream is Tier 2 "
            f"per workspace; the rest used edits); chat.appendStream per streamed answer: mean "
            f"{statistics.mean(appends.get(t, 0) for t in streams) if streams else 0:.1f}"
        )
    print(
        f"chat.update per answer: mean {statistics.mean(per_answer):.2f}, "
        f"min {min(per_answer)}, max {max(per_answer)}; chat.postMessage per answer: "
        f"mean {statistics.mean([posts.get(ts, 0) for ts in sent_at]):.2f}"
    )
    if signs:
        print(
            f"event -> first visible sign of work (status line or message): "
            f"p50 {pct(signs, 50) * 1000:.0f} ms, p99 {pct(signs, 99) * 1000:.0f} ms "
            f"({len(signs)}/{mentions})"
        )
    if latencies:
        print(
            f"event -> first visible text: p50 {pct(latencies, 50) * 1000:.0f} ms, "
            f"p99 {pct(latencies, 99) * 1000:.0f} ms"
        )
    print(
        f"HTTP ack: p50 {pct(acks, 50) * 1000:.1f} ms, p99 {pct(acks, 99) * 1000:.1f} ms "
        f"(target < 20); bare aiohttp floor, same burst: p50 {floor_ack50 * 1000:.1f} ms, "
        f"p99 {floor_ack99 * 1000:.1f} ms; p99 ratio {pct(acks, 99) / floor_ack99:.2f}"
    )
    print(
        f"bridge CPU per answer: {cpu * 1000:.1f} ms (floor {floor * 1000:.2f} ms, "
        f"ratio {cpu / floor:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mentions", type=int, default=100)
    ap.add_argument("--channels", type=int, default=25)
    ap.add_argument("--events", type=int, default=200, help="Dify events (tokens) per answer")
    ap.add_argument("--chunk", type=int, default=5, help="characters per event")
    ap.add_argument("--delay", type=float, default=0.02, help="seconds between events")
    ap.add_argument(
        "--mode",
        choices=("edits", "native"),
        default="edits",
        help="answer with message edits or Slack's native streaming",
    )
    ap.add_argument(
        "--dms",
        action="store_true",
        help="direct messages to the agent (one DM each) instead of mentions",
    )
    ap.add_argument("--replicas", type=int, default=1, help="bridge processes on one Redis")
    ap.add_argument(
        "--busy",
        action="store_true",
        help="100 mentions in 10 channels, with 1 replica and then with 3",
    )
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run the bridge process
    args = ap.parse_args()
    if args.serve:
        from app.server import loop

        loop.run(serve(args.serve))  # the bridge on the loop the service would use
        return
    if args.busy:
        for replicas in (1, 3):
            asyncio.run(
                run(100, 10, args.events, args.chunk, args.delay, args.mode, False, replicas)
            )
            print()
        return
    asyncio.run(
        run(
            args.mentions,
            args.channels,
            args.events,
            args.chunk,
            args.delay,
            args.mode,
            args.dms,
            args.replicas,
        )
    )


if __name__ == "__main__":
    main()
