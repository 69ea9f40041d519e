"""Teams allows an app so many requests per second per tenant, whatever the number of replicas."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from adapters.teams.activities import Place
from adapters.teams.connector import BotConnector
from adapters.teams.pacer import TenantPacer
from adapters.teams.reply import EditReply, Runtime
from adapters.teams.tokens import TokenSource
from app.pipeline.model import ThreadKey
from app.server.metrics import Metrics
from tests.fakes.bot_connector import BOT_APP_ID, TENANT_ID, FakeBotConnector
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


async def test_an_answers_first_words_go_before_other_answers_waiting_edits(
    teams_env: FakeBotConnector,
) -> None:
    # One request every 0.5 s for the tenant: an interim edit of answer A is waiting for its
    # turn when answer Bravo first words arrive. Bravo first words are what its reader is waiting
    # for; A's edit only refreshes text A's reader already sees.
    fake = teams_env
    pacer = TenantPacer(rate=2.0, burst=1.0)
    async with aiohttp.ClientSession() as session:
        tokens = TokenSource(
            session=session,
            app_id=BOT_APP_ID,
            password=fake.app_password,
            app_type="SingleTenant",
            tenant_id=TENANT_ID,
            token_url=fake.token_url,
        )
        connector = BotConnector(
            session=session,
            tokens=tokens,
            metrics=Metrics(),
            allow_service_url=lambda _url: True,
            pacer=pacer,
        )

        async def nothing(*_: Any) -> Any:
            return False

        rt = Runtime(
            connector=connector,
            remember_feedback=nothing,
            stop_answer=nothing,
            feedback_enabled=lambda _route: False,
        )

        def reply(conv: str) -> EditReply:
            p = Place(
                service_url=fake.service_url,
                conversation_id=conv,
                conversation={"id": conv, "conversationType": "groupChat", "tenantId": TENANT_ID},
                reply_to_id="1",  # the question's activity
                bot=(BOT_APP_ID, "Bot"),
                user=("29:user", "User"),
                conversation_type="groupChat",
                tenant_id=TENANT_ID,
            )
            return EditReply(rt, p, ThreadKey("teams", TENANT_ID, conv, conv))

        a, b = reply("19:a@thread.v2"), reply("19:b@thread.v2")
        await a.start("Thinking…")
        await fake.wait_for(lambda f: len(f.sent("POST")) == 1)
        await a.update("Alpha first words")
        await b.start("Thinking…")
        await fake.wait_for(lambda f: len(f.sent("POST")) == 2)  # B's first words will replace it
        edit_a = asyncio.create_task(a.update("Alpha grows further"))
        await asyncio.sleep(0.05)  # A's edit now waits for the tenant's next slot
        await asyncio.gather(edit_a, b.update("Bravo first words"))
    puts = [c.text for c in fake.sent("PUT")]
    order = [next(i for i, t in enumerate(puts) if words in t) for words in ("Bravo", "further")]
    assert order[0] < order[1], puts
