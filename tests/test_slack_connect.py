"""Connecting the bot: Socket Mode (no public URL) and the OAuth install for many workspaces."""

from __future__ import annotations

import asyncio
import json
import re

from tests import test_slack_support as _support
from tests.fakes.slack_api import FakeSlack
from tests.test_slack_support import CHANNEL, MakeBot, SlackBot, payload

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def test_socket_mode_envelope_is_acked_and_answered(
    slack_bot: MakeBot, fake_slack: FakeSlack
) -> None:
    app_token = fake_slack.add_app_token()
    bot = await slack_bot({"SLACK_APP_TOKEN": app_token, "SLACK_SIGNING_SECRET": ""})
    await fake_slack.wait_socket()
    assert fake_slack.calls_to("apps.connections.open")[0].token == app_token

    ev = bot.mention("hello over the socket")
    envelope = json.loads(fake_slack.event_body(bot.team, ev, event_id="EvSOCK1"))
    eid = await fake_slack.send_envelope("events_api", envelope)
    ack = await fake_slack.wait_ack(eid, timeout=2)
    assert ack["envelope_id"] == eid

    (answer,) = await bot.final(CHANNEL, ev["ts"])
    assert answer.visible_text().strip() == "You said: hello over the socket"
    # Socket Mode redelivers without retry headers: the event id alone stops a second answer.
    again = await fake_slack.send_envelope("events_api", envelope, retry_attempt=1)
    await fake_slack.wait_ack(again, timeout=2)
    await bot.idle()
    assert len(bot.answers(CHANNEL, ev["ts"])) == 1
    # No HTTP endpoint without a signing secret: nothing unsigned gets in that way.
    async with bot.http.post(bot.events_url, data="{}") as r:
        assert r.status == 404


async def test_slash_command_over_socket_mode(slack_bot: MakeBot, fake_slack: FakeSlack) -> None:
    bot = await slack_bot(
        {"SLACK_APP_TOKEN": fake_slack.add_app_token(), "SLACK_SIGNING_SECRET": ""}
    )
    await fake_slack.wait_socket()
    cmd = payload(
        "slash_command",
        text="socket question",
        team_id=bot.team.id,
        response_url=fake_slack.response_url(),
        trigger_id="trig-sock",
    )
    eid = await fake_slack.send_envelope("slash_commands", cmd)
    await fake_slack.wait_ack(eid, timeout=2)
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.postMessage", ok_only=True))
    question = fake_slack.bot_messages(CHANNEL)[0]
    (answer,) = await bot.final(CHANNEL, question.ts)
    assert "You said: socket question" in answer.visible_text()


async def _install(bot: SlackBot, fake: FakeSlack, team_id: str) -> str:
    async with bot.http.get(f"{bot.service.base_url}/slack/install") as r:
        assert r.status == 200
        page = await r.text()
        cookie = r.headers.get("Set-Cookie", "")
    found = re.search(r"state=([^&\"']+)", page)
    assert found is not None, page
    state = found.group(1)
    assert state in cookie, "the state is bound to the browser with a cookie"
    code = fake.add_oauth_code(team_id, client_id="111.222", client_secret="oauth-secret")  # noqa: S106
    url = f"{bot.service.base_url}/slack/oauth_redirect?code={code}&state={state}"
    headers = {"Cookie": cookie.split(";", 1)[0]}
    async with bot.http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
    return state


OAUTH_ENV = {
    "SLACK_BOT_TOKEN": "",
    "SLACK_CLIENT_ID": "111.222",
    "SLACK_CLIENT_SECRET": "oauth-secret",
    "SLACK_STATE_SECRET": "state-signing-secret",
}


async def test_oauth_install_keeps_installations_in_redis_and_each_workspace_uses_its_token(
    slack_bot: MakeBot, fake_slack: FakeSlack
) -> None:
    bot = await slack_bot(OAUTH_ENV)
    await _install(bot, fake_slack, "T0ALPHA")
    await _install(bot, fake_slack, "T0BETA")
    alpha, beta = fake_slack.teams["T0ALPHA"], fake_slack.teams["T0BETA"]

    prefix = bot.service.settings.redis_key_prefix
    redis = bot.service.store.redis
    stored = json.loads(await redis.get(f"{prefix}:slack:bot:-:T0BETA"))
    assert stored["bot_token"] == beta.bot_token and stored["team_id"] == "T0BETA"

    for team in (alpha, beta):
        ev = bot.mention(f"hi from {team.id}", team=team)
        assert await bot.send(ev, team=team) == 200
        (answer,) = await bot.final(CHANNEL, ev["ts"])
        assert f"You said: hi from {team.id}" in answer.visible_text()
        posts = [
            c
            for c in fake_slack.calls_to("chat.postMessage")
            if c.params.get("thread_ts") == ev["ts"]
        ]
        assert posts and all(c.token == team.bot_token for c in posts)


async def test_oauth_callback_with_a_forged_state_installs_nothing(
    slack_bot: MakeBot, fake_slack: FakeSlack
) -> None:
    bot = await slack_bot(OAUTH_ENV)
    code = fake_slack.add_oauth_code("T0EVIL", client_id="111.222", client_secret="oauth-secret")  # noqa: S106
    forged = "abc.9999999999.0000"
    url = f"{bot.service.base_url}/slack/oauth_redirect?code={code}&state={forged}"
    async with bot.http.get(url, headers={"Cookie": f"slack-app-oauth-state={forged}"}) as r:
        assert r.status >= 400
    prefix = bot.service.settings.redis_key_prefix
    assert await bot.service.store.redis.get(f"{prefix}:slack:bot:-:T0EVIL") is None
    assert not fake_slack.calls_to("oauth.v2.access")


async def test_event_from_a_workspace_that_never_installed_the_app_is_not_answered(
    slack_bot: MakeBot, fake_slack: FakeSlack
) -> None:
    bot = await slack_bot(OAUTH_ENV)
    stranger = fake_slack.add_team("T0STRANGER")
    ev = bot.mention("anyone?", team=stranger)
    await bot.send(ev, team=stranger)
    await bot.idle()
    assert not fake_slack.calls_to("chat.postMessage")


async def test_uninstalling_the_app_forgets_the_workspace(
    slack_bot: MakeBot, fake_slack: FakeSlack
) -> None:
    bot = await slack_bot(OAUTH_ENV)
    await _install(bot, fake_slack, "T0GONE")
    team = fake_slack.teams["T0GONE"]
    first = bot.mention("still there?", team=team)
    await bot.send(first, team=team)
    await bot.final(CHANNEL, first["ts"])

    assert await bot.send({"type": "app_uninstalled", "event_ts": "1.1"}, team=team) == 200
    prefix = bot.service.settings.redis_key_prefix
    redis = bot.service.store.redis
    for _ in range(50):
        if await redis.get(f"{prefix}:slack:bot:-:T0GONE") is None:
            break
        await asyncio.sleep(0.02)
    assert await redis.get(f"{prefix}:slack:bot:-:T0GONE") is None

    later = bot.mention("hello?", team=team)
    await bot.send(later, team=team)
    await bot.idle()
    assert not bot.answers(CHANNEL, later["ts"])


async def test_a_bot_token_slack_refuses_is_logged_and_nothing_is_answered(
    slack_bot: MakeBot, fake_slack: FakeSlack
) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        bot = await slack_bot({"SLACK_BOT_TOKEN": "xoxb-revoked"})
        ev = bot.mention("anyone home?")
        assert await bot.send(ev) == 200, "Slack still gets its ack"
        await bot.idle()
    assert any(
        e.get("event") == "slack.auth_test_failed" and e.get("error") == "invalid_auth"
        for e in logs
    )
    assert not bot.answers(CHANNEL, ev["ts"])
    assert not bot.dify.messages
    assert all("xoxb-revoked" not in str(e) for e in logs), "tokens never reach the logs"
