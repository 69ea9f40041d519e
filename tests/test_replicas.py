"""Several `dify-bridge serve` processes on one Redis, as a load balancer spreads Slack's calls.

Each replica is a real subprocess; Slack and Dify are the wire fakes in this test process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from app.state.inflight import INTERRUPTED
from tests.fakes.slack_api import FakeSlack, Team
from tests.serve_process import Serve
from tests.test_slack_support import CHANNEL, SECRET, USER, payload


class Cluster:
    fake_dify: Any

    def __init__(self, fake: FakeSlack, team: Team, dify_app: Any, env: dict[str, str]) -> None:
        self.fake, self.team, self.dify_app, self.env = fake, team, dify_app, env
        self.replicas: list[Serve] = []
        self.http = aiohttp.ClientSession()

    async def start(self, n: int) -> None:
        self.replicas = list(await asyncio.gather(*(Serve.serving(self.env) for _ in range(n))))

    async def close(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas))
        await self.http.close()

    def mention(self, text: str, *, thread_ts: str | None = None) -> dict[str, Any]:
        t = self.team
        m = self.fake.user_message(
            t, CHANNEL, f"<@{t.bot_user_id}> {text}", user=USER, thread_ts=thread_ts
        )
        ev = payload(
            "app_mention",
            text=m.text,
            user=USER,
            ts=m.ts,
            event_ts=m.ts,
            channel=CHANNEL,
            team=t.id,
        )
        if thread_ts:
            ev["thread_ts"] = thread_ts
        return ev

    async def send(
        self,
        replica: Serve,
        event: dict[str, Any],
        *,
        event_id: str,
        retry_num: int | None = None,
    ) -> int:
        body, headers = self.fake.event(
            self.team, event, secret=SECRET, event_id=event_id, retry_num=retry_num
        )
        async with self.http.post(
            replica.url + "/slack/events", data=body.encode(), headers=headers
        ) as r:
            return r.status

    def dify_calls(self) -> list[Any]:
        return [r for r in self.dify_requests() if r.path.endswith("/chat-messages")]

    def dify_requests(self) -> list[Any]:
        return [r for r in self.fake_dify.requests if r.api_key == self.dify_app.api_key]


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(fake_dify: Any, dify_app: Any, redis_url: str) -> AsyncIterator[Cluster]:
    fake = FakeSlack()
    await fake.start()
    team = fake.add_team("T" + uuid.uuid4().hex[:8].upper())
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX="rep" + uuid.uuid4().hex[:8],
        DIFY_BASE_URL=fake_dify.base_url,
        DIFY_API_KEY=dify_app.api_key,
        SLACK_BOT_TOKEN=team.bot_token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=fake.api_url,
        BRIDGE_CONFIG="",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        LOCK_TTL_SECONDS="3",
        USER_RATE_PER_MINUTE="0",
        WORKSPACE_RATE_PER_MINUTE="0",
        SHUTDOWN_GRACE_SECONDS="5",
    )
    for k in ("SLACK_APP_TOKEN", "SLACK_CLIENT_ID", "MICROSOFT_APP_ID"):
        env.pop(k, None)
    c = Cluster(fake, team, dify_app, env)
    c.fake_dify = fake_dify
    try:
        yield c
    finally:
        await c.close()
        await fake.close()


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def test_slack_retries_of_one_event_on_three_replicas_give_exactly_one_answer(
    cluster: Cluster,
) -> None:
    await cluster.start(3)
    ev = cluster.mention("what is our travel policy?")
    event_id = "Ev" + uuid.uuid4().hex[:10].upper()
    statuses = await asyncio.gather(
        *(
            cluster.send(r, ev, event_id=event_id, retry_num=i or None)
            for i, r in enumerate(cluster.replicas)
        )
    )
    assert statuses == [200, 200, 200]  # every replica acks; only one answers
    await wait_for(
        lambda: any(
            m.text and "You said" in m.text for m in cluster.fake.bot_messages(CHANNEL, ev["ts"])
        )
    )
    await asyncio.sleep(1.0)  # a late duplicate would show up by now
    assert len(cluster.dify_calls()) == 1
    answers = [m for m in cluster.fake.bot_messages(CHANNEL, ev["ts"]) if m.text]
    assert len(answers) == 1


async def test_two_messages_of_one_thread_on_two_replicas_are_answered_in_order(
    cluster: Cluster,
) -> None:
    cluster.dify_app.chunk_delay = 0.05
    await cluster.start(2)
    first = cluster.mention("first question")
    await cluster.send(cluster.replicas[0], first, event_id="Ev1" + uuid.uuid4().hex[:8])
    second = cluster.mention("second question", thread_ts=first["ts"])
    await cluster.send(cluster.replicas[1], second, event_id="Ev2" + uuid.uuid4().hex[:8])
    await wait_for(
        lambda: (
            len(cluster.dify_calls()) == 2
            and sum(
                1
                for m in cluster.fake.bot_messages(CHANNEL, first["ts"])
                if "second question" in m.text
            )
            == 1
        ),
        timeout=30,
    )
    calls = cluster.dify_calls()
    assert [c.json["query"] for c in calls] == ["first question", "second question"]
    assert calls[0].json["conversation_id"] == ""
    assert calls[1].json["conversation_id"] != ""  # continues the conversation the first made


async def test_an_answer_cut_off_by_a_killed_replica_is_closed_by_another(
    cluster: Cluster,
) -> None:
    cluster.dify_app.answer = "slowly " * 300
    cluster.dify_app.chunk_size = 7
    cluster.dify_app.chunk_delay = 0.05
    await cluster.start(2)
    victim, survivor = cluster.replicas
    ev = cluster.mention("a long answer please")
    await cluster.send(victim, ev, event_id="EvK" + uuid.uuid4().hex[:8])
    await wait_for(
        lambda: any("slowly" in m.text for m in cluster.fake.bot_messages(CHANNEL, ev["ts"]))
    )
    victim.proc.send_signal(signal.SIGKILL)
    await victim.proc.wait()
    # The lease (LOCK_TTL_SECONDS=3) expires; the survivor's janitor (every 5 s) closes it.
    await wait_for(
        lambda: any(INTERRUPTED in m.text for m in cluster.fake.bot_messages(CHANNEL, ev["ts"])),
        timeout=20,
    )
    assert survivor.proc.returncode is None


async def test_sigterm_lets_a_streaming_answer_finish_and_exits_cleanly(cluster: Cluster) -> None:
    cluster.dify_app.answer = "steady " * 40
    cluster.dify_app.chunk_size = 7
    cluster.dify_app.chunk_delay = 0.03
    await cluster.start(1)
    (replica,) = cluster.replicas
    ev = cluster.mention("finish me")
    await cluster.send(replica, ev, event_id="EvT" + uuid.uuid4().hex[:8])
    await wait_for(
        lambda: any("steady" in m.text for m in cluster.fake.bot_messages(CHANNEL, ev["ts"]))
    )
    replica.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(replica.proc.wait(), 20) == 0
    final = [m.text for m in cluster.fake.bot_messages(CHANNEL, ev["ts"]) if m.text]
    assert any(t.strip().endswith("steady") and t.count("steady") == 40 for t in final)


async def test_sighup_reloads_the_routing_file(cluster: Cluster, tmp_path: Any) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text("routes:\n  - name: before\n")
    log = tmp_path / "replica.log"
    cluster.env["BRIDGE_CONFIG"] = str(cfg)
    replica = await Serve.serving(cluster.env, log_path=str(log))
    cluster.replicas.append(replica)
    cfg.write_text("routes:\n  - name: after\n")
    replica.proc.send_signal(signal.SIGHUP)
    await wait_for(
        lambda: (
            log.exists() and '"config.reloaded"' in log.read_text() and '"after"' in log.read_text()
        ),
        timeout=10,
    )
