"""Teams allows an app so many requests per second per tenant, whatever the number of replicas."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.fakes.bot_connector import FakeBotConnector
from tests.test_teams_channel import slow_answer


async def test_two_replicas_together_stay_inside_the_tenant_request_limit(
    make_service: Any, connector: FakeBotConnector, teams_env: Any, dify_app: Any
) -> None:
    # A tenant allowed 6 requests a second; two replicas (one Redis) share that allowance.
    connector.reset()
    connector.tenant_limits = ((6, 1.0),)
    env = {
        **connector.service_env(),
        "DIFY_API_KEY": dify_app.api_key,
        "TEAMS_TENANT_RPS": "6",
        "REDIS_KEY_PREFIX": "t" + uuid.uuid4().hex[:10],
    }
    replicas = [await make_service(env, adapters=["teams"]) for _ in range(2)]
    answer = slow_answer(dify_app, 30, 1.0)
    questions = [connector.channel_mention(f"Question {i}?") for i in range(8)]
    await asyncio.gather(
        *(connector.deliver(replicas[n % 2].base_url, q) for n, q in enumerate(questions))
    )
    await connector.wait_for(
        lambda f: sum(1 for c in f.sent() if c.body.get("entities")) == 8, within=30
    )
    assert connector.throttled == 0
    for q in questions:
        conv = q["conversation"]["id"]
        shown = [c for c in connector.sent() if c.conversation_id == conv]
        assert answer in shown[-1].text.replace("\\", "")
