"""Teams: the bot proves itself to Microsoft with a secret, a certificate or a managed identity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.fakes.bot_connector import BOT_APP_ID, FakeBotConnector


def make_certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dify-bridge bot")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def pem_file(tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> Path:
    path = tmp_path / "bot.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path


def certificate_env(connector: FakeBotConnector, path: Path) -> dict[str, str]:
    env = connector.service_env()
    del env["MICROSOFT_APP_PASSWORD"]
    env["MICROSOFT_APP_CERTIFICATE_PATH"] = str(path)
    return env


async def answered(service: Any, connector: FakeBotConnector) -> None:
    status, _, _ = await connector.deliver(service.base_url, connector.channel_mention("hello?"))
    assert status == 200
    await connector.wait_for(lambda f: any("You said" in c.text for c in f.sent("PUT")))
    assert all(c.status != 401 for c in connector.calls)


async def test_a_bot_with_a_certificate_signs_in_without_a_secret(
    make_service: Any, teams_env: FakeBotConnector, tmp_path: Path
) -> None:
    connector = teams_env
    key, cert = make_certificate()
    connector.client_certificate = cert  # uploaded to the app registration
    connector.require_bearer = True
    service = await make_service(
        certificate_env(connector, pem_file(tmp_path, key, cert)), adapters=["teams"]
    )
    await answered(service, connector)
    (req,) = connector.token_requests
    assert "client_secret" not in req
    assert req["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert req["client_id"] == BOT_APP_ID


async def test_a_password_protected_pfx_works_too(
    make_service: Any, teams_env: FakeBotConnector, tmp_path: Path
) -> None:
    connector = teams_env
    key, cert = make_certificate()
    connector.client_certificate = cert
    connector.require_bearer = True
    pfx = tmp_path / "bot.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"bot", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")
        )
    )
    env = certificate_env(connector, pfx)
    env["MICROSOFT_APP_CERTIFICATE_PASSWORD"] = "pfx-pass"  # noqa: S105 (test data)
    service = await make_service(env, adapters=["teams"])
    await answered(service, connector)


async def test_a_certificate_microsoft_does_not_know_is_refused_once_and_nothing_is_sent(
    make_service: Any, teams_env: FakeBotConnector, tmp_path: Path
) -> None:
    connector = teams_env
    connector.client_certificate = make_certificate()[1]  # a different one is registered
    key, cert = make_certificate()
    service = await make_service(
        certificate_env(connector, pem_file(tmp_path, key, cert)), adapters=["teams"]
    )
    status, _, seconds = await connector.deliver(service.base_url, connector.personal("hi"))
    assert status == 200 and seconds < 1
    await connector.wait_for(lambda f: len(f.token_requests) >= 1)
    await service.bridge.drain(timeout=5)
    assert connector.calls == []
    assert len(connector.token_requests) == 1


async def test_an_unusable_certificate_file_keeps_teams_off_naming_the_setting(
    make_service: Any, teams_env: FakeBotConnector, tmp_path: Path, capsys: Any
) -> None:
    for content in (None, b"not a certificate"):
        path = tmp_path / "broken.pem"
        if content is not None:
            path.write_bytes(content)
        service = await make_service(certificate_env(teams_env, path), adapters=["teams"])
        assert service.adapters == []
    logged = capsys.readouterr()
    assert "MICROSOFT_APP_CERTIFICATE_PATH" in logged.out + logged.err


async def test_a_managed_identity_bot_gets_its_token_from_the_instance_metadata_endpoint(
    make_service: Any, teams_env: FakeBotConnector
) -> None:
    connector = teams_env
    connector.require_bearer = True
    env = connector.service_env()
    del env["MICROSOFT_APP_PASSWORD"]
    env["MICROSOFT_APP_TYPE"] = "UserAssignedMSI"
    env["MICROSOFT_TOKEN_URL"] = connector.managed_identity_url
    service = await make_service(env, adapters=["teams"])
    await answered(service, connector)
    (req,) = connector.token_requests
    assert req["Metadata"] == "true"
    assert req["client_id"] == BOT_APP_ID


async def test_a_bot_with_neither_secret_nor_certificate_stays_off(
    make_service: Any, teams_env: FakeBotConnector
) -> None:
    env = teams_env.service_env()
    del env["MICROSOFT_APP_PASSWORD"]
    service = await make_service(env, adapters=["teams"])
    assert service.adapters == []
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{service.base_url}/api/messages", json={}) as r,
    ):
        assert r.status == 404
