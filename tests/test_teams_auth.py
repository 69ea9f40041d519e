"""Teams: who may talk to /api/messages, and how the bot proves itself on the way out."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.teams.tokens import TokenSource
from tests.fakes.bot_connector import BOT_APP_ID, FakeBotConnector


@pytest.fixture(autouse=True)
def _fresh(teams_env: FakeBotConnector, fake_dify: Any) -> None:
    fake_dify.reset()


def teams_env(connector: FakeBotConnector) -> dict[str, str]:
    return connector.service_env()


async def post(service: Any, activity: dict[str, Any], token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{service.base_url}/api/messages", json=activity, headers=headers) as r,
    ):
        return r.status


async def rejected_and_never_processed(
    service: Any,
    connector: FakeBotConnector,
    fake_dify: Any,
    activity: dict[str, Any],
    token: str | None,
    status: int = 401,
) -> None:
    before = len(fake_dify.requests)
    assert await post(service, activity, token) == status
    await post(service, connector.conversation_update(), connector.sign())  # a full round trip
    assert connector.calls == []
    assert len(fake_dify.requests) == before


async def test_activity_without_a_token_is_refused_and_never_answered(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    await rejected_and_never_processed(
        service, connector, fake_dify, connector.personal("hello?"), None
    )


async def test_token_signed_with_a_stranger_key_is_refused(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await rejected_and_never_processed(
        service, connector, fake_dify, connector.personal("hello?"), connector.sign(key=stranger)
    )


async def test_expired_token_is_refused(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    # Past the 5 minutes of allowed clock skew.
    token = connector.sign(expires_in=-600)
    await rejected_and_never_processed(
        service, connector, fake_dify, connector.personal("hello?"), token
    )


async def test_token_for_another_bot_or_from_another_issuer_is_refused(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    for token in (
        connector.sign(audience="11111111-2222-3333-4444-555555555555"),
        connector.sign(issuer="https://evil.example.com"),
        connector.sign(kid="unknown-key"),
        "not.a.jwt",
    ):
        await rejected_and_never_processed(
            service, connector, fake_dify, connector.personal("hello?"), token
        )


async def test_service_url_must_match_the_token_claim(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    # A valid token, replayed with an activity that points the bot somewhere else.
    activity = connector.personal("hello?")
    activity["serviceUrl"] = "https://attacker.example.com/"
    await rejected_and_never_processed(service, connector, fake_dify, activity, connector.sign())


async def test_signing_key_not_endorsed_for_teams_is_refused(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    connector.endorsements = ["webchat"]
    service = await make_service(teams_env(connector), adapters=["teams"])
    before = len(fake_dify.requests)
    assert await post(service, connector.personal("hello?"), connector.sign()) == 401
    assert connector.calls == []
    assert len(fake_dify.requests) == before


async def test_valid_token_is_answered_with_the_bots_own_token(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    connector.require_bearer = True  # the fake refuses calls without a token it issued
    service = await make_service(teams_env(connector), adapters=["teams"])
    assert await post(service, connector.channel_mention("hello?"), connector.sign()) == 200
    await connector.wait_for(lambda f: any("You said" in c.text for c in f.sent("PUT")))
    assert all(c.status != 401 for c in connector.calls)
    req = connector.token_requests[0]
    assert req["grant_type"] == "client_credentials"
    assert req["client_id"] == BOT_APP_ID
    assert req["scope"] == "https://api.botframework.com/.default"
    # One token serves every call until it nears expiry.
    assert len(connector.token_requests) == 1


async def test_local_mode_answers_loopback_without_a_token(
    make_service: Any, connector: FakeBotConnector
) -> None:
    service = await make_service({"TEAMS_ALLOW_UNAUTHENTICATED": "true"}, adapters=["teams"])
    assert await post(service, connector.channel_mention("hello?"), None) == 200
    await connector.wait_for(lambda f: any("You said" in c.text for c in f.sent("PUT")))
    assert all(c.authorization is None for c in connector.calls)


async def test_local_mode_never_calls_a_service_url_outside_this_machine(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service({"TEAMS_ALLOW_UNAUTHENTICATED": "true"}, adapters=["teams"])
    for url in (
        "https://smba.trafficmanager.net/emea/",
        "http://10.0.0.8/",
        "http://127.0.0.1.evil.io/",
    ):
        activity = connector.personal("hello?")
        activity["serviceUrl"] = url
        before = len(fake_dify.requests)
        assert await post(service, activity, None) == 403
        assert len(fake_dify.requests) == before


async def test_teams_stays_off_without_credentials(
    make_service: Any, connector: FakeBotConnector
) -> None:
    service = await make_service({}, adapters=["teams"])
    assert [a.name for a in service.adapters] == []
    assert await post(service, connector.personal("hello?"), None) == 404


async def test_single_tenant_bot_without_tenant_id_stays_off(
    make_service: Any, connector: FakeBotConnector
) -> None:
    env = teams_env(connector)
    del env["MICROSOFT_APP_TENANT_ID"]
    service = await make_service(env, adapters=["teams"])
    assert service.adapters == []


async def test_garbage_bodies_get_a_clear_400(
    make_service: Any, connector: FakeBotConnector
) -> None:
    service = await make_service({"TEAMS_ALLOW_UNAUTHENTICATED": "true"}, adapters=["teams"])
    async with aiohttp.ClientSession() as s:
        for body in (b"{not json", b"[]", b'{"type": "message"}', b'{"type": 5}'):
            async with s.post(f"{service.base_url}/api/messages", data=body) as r:
                assert r.status == 400
                assert (await r.json())["error"] == "bad_activity"
    assert connector.calls == []


async def test_token_endpoint_follows_the_bot_type() -> None:
    async with aiohttp.ClientSession() as session:

        def url(app_type: str, tenant: str | None) -> str:
            return TokenSource(
                session=session, app_id="a", password=None, app_type=app_type, tenant_id=tenant
            ).token_url

        assert url("SingleTenant", "contoso.onmicrosoft.com") == (
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        )
        assert url("MultiTenant", None) == (
            "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
        )
        assert url("UserAssignedMSI", "t").startswith("http://169.254.169.254/metadata/identity")


async def test_refused_bot_credentials_never_leave_a_request_hanging(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    env = {**teams_env(connector), "MICROSOFT_APP_PASSWORD": "wrong"}
    service = await make_service(env, adapters=["teams"])
    status, _, seconds = await connector.deliver(service.base_url, connector.personal("hi"))
    assert status == 200 and seconds < 1
    await connector.wait_for(lambda f: len(f.token_requests) >= 1)
    await service.bridge.drain(timeout=5)
    assert connector.calls == []  # nothing can be sent without a token; the log says why
    # Refused credentials are not retried on every call.
    assert len(connector.token_requests) == 1
