"""Human Input forms across `dify-bridge serve` replicas: the form shown by one replica is
answered through another (or after a restart), and the first click wins everywhere."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

from app.state.inflight import INTERRUPTED
from tests import test_replicas as _replicas
from tests.serve_process import Serve
from tests.test_human_input import APPROVAL
from tests.test_replicas import Cluster, wait_for
from tests.test_slack_support import CHANNEL, SECRET

cluster = _replicas.cluster

YAML = "routes:\n  - name: approvals\n    edit_interval: 0.5\n    dify: {mode: advanced-chat}\n"


def setup(cluster: Cluster, fake_dify: Any, tmp_path: Path) -> Any:
    app = fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="advanced-chat",
        human_input={**APPROVAL, "after": "Published everywhere."},
    )
    config = tmp_path / "bridge.yaml"
    config.write_text(YAML)
    cluster.env.update(DIFY_API_KEY=app.api_key, BRIDGE_CONFIG=str(config))
    return app


def form_of(cluster: Cluster, ts: str) -> Any:
    return next(
        (
            m
            for m in cluster.fake.bot_messages(CHANNEL, ts)
            if any(b.get("type") == "input" for b in m.blocks)
        ),
        None,
    )


async def click(
    cluster: Cluster, replica: Any, msg: Any, title: str, user: str, blocks: list[Any] | None = None
) -> int:
    shown = blocks if blocks is not None else msg.blocks
    button = next(
        e
        for b in shown
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["text"]["text"] == title
    )
    saved, msg.blocks = msg.blocks, shown
    payload = cluster.fake.block_action(
        cluster.team, msg, button, user=user, inputs={"dify_field:channel": "blog"}
    )
    msg.blocks = saved
    body, headers = cluster.fake.interaction(payload, secret=SECRET)
    async with cluster.http.post(
        replica.url + "/slack/events", data=body.encode(), headers=headers
    ) as r:
        return r.status


async def test_a_form_shown_by_one_replica_is_answered_through_another_once(
    cluster: Cluster, fake_dify: Any, tmp_path: Path
) -> None:
    app = setup(cluster, fake_dify, tmp_path)
    await cluster.start(2)
    ev = cluster.mention("publish the post")
    await cluster.send(cluster.replicas[0], ev, event_id="Ev" + uuid.uuid4().hex[:10])
    await wait_for(lambda: form_of(cluster, ev["ts"]) is not None)
    form = form_of(cluster, ev["ts"])
    stale = list(form.blocks)
    assert await click(cluster, cluster.replicas[1], form, "Approve", "U0ANN") == 200
    await wait_for(
        lambda: any(
            "Published everywhere." in m.visible_text()
            for m in cluster.fake.bot_messages(CHANNEL, ev["ts"])
        )
    )
    await wait_for(lambda: "<@U0ANN> chose “Approve”" in form.context_text())
    # Someone whose Slack still showed the buttons clicks on the first replica.
    assert await click(cluster, cluster.replicas[0], form, "Reject", "U0BOB", stale) == 200
    await wait_for(
        lambda: any("Already decided by <@U0ANN>" in str(r) for r in cluster.fake.all_responses())
    )
    assert [s["action"] for s in app.form_submissions] == ["approve"]


async def test_a_form_survives_a_restart_of_every_replica(
    cluster: Cluster, fake_dify: Any, tmp_path: Path
) -> None:
    app = setup(cluster, fake_dify, tmp_path)
    await cluster.start(1)
    ev = cluster.mention("publish the post")
    await cluster.send(cluster.replicas[0], ev, event_id="Ev" + uuid.uuid4().hex[:10])
    await wait_for(lambda: form_of(cluster, ev["ts"]) is not None)
    form = form_of(cluster, ev["ts"])
    old = cluster.replicas[0]
    old.proc.terminate()
    await asyncio.wait_for(old.proc.wait(), 15)
    fresh = await Serve.serving(cluster.env)
    cluster.replicas.append(fresh)
    assert await click(cluster, fresh, form, "Approve", "U0ANN") == 200
    await wait_for(
        lambda: any(
            "Published everywhere." in m.visible_text()
            for m in cluster.fake.bot_messages(CHANNEL, ev["ts"])
        )
    )
    assert len(app.form_submissions) == 1


async def test_a_resumed_answer_cut_off_by_a_killed_replica_is_closed_by_another(
    cluster: Cluster, fake_dify: Any, tmp_path: Path
) -> None:
    app = setup(cluster, fake_dify, tmp_path)
    app.human_input = {**APPROVAL, "after": "slowly " * 300}
    app.chunk_size, app.chunk_delay = 7, 0.05
    await cluster.start(2)
    shower, victim = cluster.replicas
    ev = cluster.mention("publish the post")
    await cluster.send(shower, ev, event_id="Ev" + uuid.uuid4().hex[:10])
    await wait_for(lambda: form_of(cluster, ev["ts"]) is not None)
    assert await click(cluster, victim, form_of(cluster, ev["ts"]), "Approve", "U0ANN") == 200
    await wait_for(
        lambda: any(
            "slowly" in m.visible_text() for m in cluster.fake.bot_messages(CHANNEL, ev["ts"])
        )
    )
    victim.proc.send_signal(signal.SIGKILL)
    await victim.proc.wait()
    # The survivor's janitor closes the resumed answer like any other cut-off answer.
    await wait_for(
        lambda: any(INTERRUPTED in m.text for m in cluster.fake.bot_messages(CHANNEL, ev["ts"])),
        timeout=25,
    )
