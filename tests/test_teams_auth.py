"""Teams: who may talk to /api/messages, and how the bot proves itself on the way out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.teams.auth import SigningKeys
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


# --------------------------------------------------------------------------- forged tokens
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token made by hand: PyJWT refuses to sign HS256 with a PEM key, an attacker
    does not."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def unsigned(claims: dict[str, Any], kid: str) -> str:
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def claims_for(connector: FakeBotConnector, service_url: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "https://api.botframework.com",
        "aud": connector.app_id,
        "serviceurl": service_url,
        "nbf": now - 10,
        "exp": now + 3600,
    }


class Trap:
    """A server standing in for the service URL an attacker names: counts every connection."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Trap:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


FORGERIES: dict[str, Callable[[FakeBotConnector, str], str]] = {
    "alg none": lambda c, url: unsigned(claims_for(c, url), c.kid),
    "HS256 with the app password": lambda c, url: hs256(
        claims_for(c, url), c.app_password.encode(), c.kid
    ),
    "HS256 keyed with the public key": lambda c, url: hs256(
        claims_for(c, url),
        c.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        c.kid,
    ),
    "a key not in the JWKS": lambda c, url: c.sign(
        service_url=url, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ),
    "an unknown kid": lambda c, url: c.sign(service_url=url, kid="not-published"),
    "expired": lambda c, url: c.sign(service_url=url, expires_in=-600),
    "nbf in the future": lambda c, url: c.sign(
        service_url=url, claims={"nbf": int(time.time()) + 3600}
    ),
    "no exp": lambda c, url: c.sign(service_url=url, claims={"exp": None}),
    "wrong audience": lambda c, url: c.sign(
        service_url=url, audience="11111111-2222-3333-4444-555555555555"
    ),
    "wrong issuer": lambda c, url: c.sign(service_url=url, issuer="https://evil.example.com"),
    "serviceurl claim for another URL": lambda c, url: c.sign(service_url=c.service_url),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_forged_token_is_refused_before_anything_reaches_its_service_url(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any, forgery: str
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    async with Trap() as trap:
        activity = connector.personal("hello?")
        activity["serviceUrl"] = trap.url
        token = FORGERIES[forgery](connector, trap.url)
        before = len(fake_dify.requests)
        assert await post(service, activity, token) == 401
        await post(service, connector.conversation_update(), connector.sign())  # a round trip
        assert trap.connections == 0
        assert len(fake_dify.requests) == before


async def test_the_trap_does_see_a_bot_that_answers_there(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    # The control for the story above: with a genuine token for the trap's URL the bot does
    # connect to it, so "no connection" there means the forged token stopped everything.
    service = await make_service(teams_env(connector), adapters=["teams"])
    async with Trap() as trap:
        activity = connector.channel_mention("hello?")
        activity["serviceUrl"] = trap.url
        assert await post(service, activity, connector.sign(service_url=trap.url)) == 200
        for _ in range(100):
            if trap.connections:
                break
            await asyncio.sleep(0.05)
        assert trap.connections >= 1
        await service.bridge.drain(timeout=10)


async def test_an_activity_claiming_an_unendorsed_channel_is_refused(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    for channel in ("webchat", ""):
        activity = connector.personal("hello?")
        activity["channelId"] = channel
        await rejected_and_never_processed(
            service, connector, fake_dify, activity, connector.sign()
        )


async def test_a_signing_key_without_endorsements_is_not_trusted(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    connector.endorsements = []
    service = await make_service(teams_env(connector), adapters=["teams"])
    assert await post(service, connector.personal("hello?"), connector.sign()) == 401
    assert connector.calls == []


async def test_a_token_seen_before_is_checked_again_for_each_activity(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    # Verified tokens are remembered; the per-activity checks still run on every request.
    service = await make_service(teams_env(connector), adapters=["teams"])
    before = len(fake_dify.requests_to("/chat-messages"))
    token = connector.sign()
    assert await post(service, connector.channel_mention("first?"), token) == 200
    replayed = connector.channel_mention("second?")
    replayed["serviceUrl"] = "https://attacker.example.com/"
    assert await post(service, replayed, token) == 401
    other_channel = connector.channel_mention("third?")
    other_channel["channelId"] = "webchat"
    assert await post(service, other_channel, token) == 401
    await service.bridge.drain(timeout=10)
    questions = [r.json["query"] for r in fake_dify.requests_to("/chat-messages")[before:]]
    assert questions == ["first?"]


async def test_unknown_key_ids_do_not_turn_into_key_downloads(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    service = await make_service(teams_env(connector), adapters=["teams"])
    assert await post(service, connector.personal("hello?"), connector.sign()) == 200
    fetched = connector.jwks_fetches
    for i in range(20):
        token = connector.sign(kid=f"forged-{i}")
        assert await post(service, connector.personal("hello?"), token) == 401
    assert connector.jwks_fetches == fetched  # within the minute after a fetch: none


async def test_an_unknown_key_id_refetches_the_keys_at_most_once_a_minute(
    connector: FakeBotConnector,
) -> None:
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        keys = SigningKeys(connector.openid_metadata_url, session, clock=lambda: now[0])
        assert await keys.get(connector.kid) is not None
        first = connector.jwks_fetches
        connector.kid = "rolled-over"  # Microsoft publishes a new key
        try:
            now[0] += 30
            assert await keys.get("rolled-over") is None  # too soon after the last fetch
            assert connector.jwks_fetches == first
            now[0] += 31
            assert await keys.get("rolled-over") is not None  # a minute on: one refetch
            assert connector.jwks_fetches == first + 1
            for kid in ("a", "b", "c"):
                now[0] += 10
                assert await keys.get(kid) is None
            assert connector.jwks_fetches == first + 1
        finally:
            connector.kid = "fake-key-1"
