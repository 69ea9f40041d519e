"""The redaction seam with a real Redis: modes, pseudonym maps, notices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from app.config.settings import RedactionConfig, RedactionMode
from app.errors import ConfigError
from app.pipeline.model import ThreadKey
from app.redact import RedactionService

SECRET = "test-redaction-key-0123456789abcdef"  # noqa: S105  (test key)


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=5000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def service(redis: aioredis.Redis, prefix: str) -> RedactionService:
    return RedactionService(redis, secret=SECRET, ttl_seconds=600, prefix=prefix)


def thread(n: int = 1) -> ThreadKey:
    return ThreadKey("slack", "T1", "C1", f"1700000000.{n:06d}")


PSEUDO = RedactionConfig(mode=RedactionMode.PSEUDONYMIZE)


async def test_default_route_redacts_the_query_and_every_input(service: RedactionService) -> None:
    p = await service.prepare(
        RedactionConfig(),
        "Email bob@example.com or call 090-1234-5678",
        thread(),
        extra={"file_name": "invoice (bob@example.com).pdf", "channel": "general"},
    )
    assert p.query == "Email [EMAIL] or call [PHONE]"
    assert p.extra == {"file_name": "invoice ([EMAIL]).pdf", "channel": "general"}
    assert p.found == {"EMAIL": 2, "PHONE": 1}
    assert not p.blocked and p.restorer is None
    assert (
        service.notice(p)
        == "I removed 2 email addresses and 1 phone number before sending your message."
    )


async def test_clean_message_gets_no_notice(service: RedactionService) -> None:
    p = await service.prepare(RedactionConfig(), "What is our refund policy?", thread())
    assert p.query == "What is our refund policy?" and p.found == {}
    assert service.notice(p) is None


async def test_route_without_notify_stays_quiet(service: RedactionService) -> None:
    p = await service.prepare(RedactionConfig(notify=False), "bob@example.com", thread())
    assert p.query == "[EMAIL]" and service.notice(p) is None


async def test_block_mode_sends_nothing_and_says_which_kinds_were_found(
    service: RedactionService,
) -> None:
    cfg = RedactionConfig(mode=RedactionMode.BLOCK)
    p = await service.prepare(cfg, "card 4111 1111 1111 1111, mail bob@example.com", thread())
    assert p.blocked
    message = service.block_message(p)
    assert "payment card number" in message and "email address" in message
    assert "4111" not in message and "bob@" not in message
    # Even if a caller sent it anyway, only the redacted text is there.
    assert "4111" not in p.query and "bob@" not in p.query
    clean = await service.prepare(cfg, "hello", thread())
    assert not clean.blocked and clean.query == "hello"


async def test_off_mode_leaves_text_alone(service: RedactionService) -> None:
    cfg = RedactionConfig(mode=RedactionMode.OFF)
    p = await service.prepare(cfg, "bob@example.com", thread(), extra={"x": "090-1234-5678"})
    assert (p.query, p.extra, p.found, p.blocked) == (
        "bob@example.com",
        {"x": "090-1234-5678"},
        {},
        False,
    )


async def test_entity_list_of_a_route_limits_redaction(service: RedactionService) -> None:
    cfg = RedactionConfig(entities=("EMAIL",))
    p = await service.prepare(cfg, "bob@example.com 090-1234-5678", thread())
    assert p.query == "[EMAIL] 090-1234-5678"


async def test_second_message_in_thread_reuses_the_same_placeholder(
    service: RedactionService,
) -> None:
    t = thread(10)
    first = await service.prepare(PSEUDO, "Contact bob@example.com and 090-1234-5678", t)
    assert first.query == "Contact <EMAIL_1> and <PHONE_1>"
    second = await service.prepare(PSEUDO, "Also BOB@example.com, and alice@example.com", t)
    assert second.query == "Also <EMAIL_1>, and <EMAIL_2>"
    assert second.restorer is not None
    answer = "I wrote to <EMAIL_2> and <EMAIL_1>; call <PHONE_1>."
    assert second.restorer.final(answer) == (
        "I wrote to alice@example.com and bob@example.com; call 090-1234-5678."
    )
    assert service.notice(second) == (
        "I replaced 2 email addresses with placeholders before sending your message."
    )


async def test_message_without_pii_still_restores_earlier_placeholders(
    service: RedactionService,
) -> None:
    t = thread(11)
    await service.prepare(PSEUDO, "my mail is carol@example.com", t)
    later = await service.prepare(PSEUDO, "what was my address again?", t)
    assert later.query == "what was my address again?" and later.found == {}
    assert later.restorer is not None
    assert later.restorer.final("It is <EMAIL_1>.") == "It is carol@example.com."


async def test_threads_never_share_placeholders(service: RedactionService) -> None:
    a = await service.prepare(PSEUDO, "dave@example.com", thread(20))
    b = await service.prepare(PSEUDO, "erin@example.com", thread(21))
    assert a.query == b.query == "<EMAIL_1>"
    assert b.restorer is not None and b.restorer.final("<EMAIL_1>") == "erin@example.com"


async def test_pseudonym_map_is_encrypted_at_rest_and_expires(
    service: RedactionService, redis: aioredis.Redis, prefix: str
) -> None:
    t = thread(30)
    await service.prepare(PSEUDO, "frank@example.com 090-1234-5678", t)
    key = f"{prefix}:{{{t.hashed}}}:pseudo"
    raw = await redis.get(key)
    assert raw is not None
    assert b"frank" not in raw and b"090" not in raw and b"EMAIL" not in raw
    ttl = await redis.ttl(key)
    assert 0 < ttl <= 600


async def test_map_written_with_another_key_is_not_readable(
    redis: aioredis.Redis, prefix: str
) -> None:
    t = thread(31)
    old = RedactionService(redis, secret="old-key-" + "x" * 30, ttl_seconds=600, prefix=prefix)
    await old.prepare(PSEUDO, "gina@example.com", t)
    new = RedactionService(redis, secret="new-key-" + "y" * 30, ttl_seconds=600, prefix=prefix)
    p = await new.prepare(PSEUDO, "hank@example.com", t)
    # A fresh map: the old value cannot be decrypted, so nothing from it is restored.
    assert p.query == "<EMAIL_1>"
    assert p.restorer is not None and p.restorer.final("<EMAIL_1>") == "hank@example.com"


async def test_secrets_are_never_stored_even_when_pseudonymizing(
    service: RedactionService, redis: aioredis.Redis, prefix: str
) -> None:
    t = thread(32)
    p = await service.prepare(
        PSEUDO, "token xoxb-1234567890-abcdefghijKLMNOP and password=hunter2", t
    )
    assert p.query == "token [SECRET] and password=[SECRET]"
    assert p.restorer is None
    assert await redis.get(f"{prefix}:{{{t.hashed}}}:pseudo") is None


async def test_concurrent_messages_in_one_thread_keep_every_placeholder(
    service: RedactionService,
) -> None:
    t = thread(40)
    results = await asyncio.gather(
        *(service.prepare(PSEUDO, f"user{i}@example.com", t) for i in range(12))
    )
    placeholders = {r.query for r in results}
    assert len(placeholders) == 12  # no two values got the same placeholder
    last = await service.prepare(PSEUDO, "?", t)
    assert last.restorer is not None and len(last.restorer) == 12
    for r in results:
        assert last.restorer.final(r.query).endswith("@example.com")


async def test_pseudonymize_without_a_key_is_a_clear_config_error(
    redis: aioredis.Redis, prefix: str
) -> None:
    service = RedactionService(redis, secret=None, ttl_seconds=600, prefix=prefix)
    with pytest.raises(ConfigError, match="REDACTION_KEY"):
        await service.prepare(PSEUDO, "ivan@example.com", thread(50))
    with pytest.raises(ConfigError, match="route 'support'"):
        service.check(PSEUDO, route="support")
    # Other modes do not need the key.
    p = await service.prepare(RedactionConfig(), "ivan@example.com", thread(50))
    assert p.query == "[EMAIL]"


async def test_unknown_entity_in_route_config_is_a_config_error(service: RedactionService) -> None:
    from pydantic import ValidationError

    # The settings model refuses it when the routing file is loaded...
    with pytest.raises(ValidationError, match="PASSPORT"):
        RedactionConfig(entities=("PASSPORT",))
    # ...and the service refuses a config that skipped validation.
    unchecked = RedactionConfig.model_construct(entities=("PASSPORT",))
    with pytest.raises(ConfigError, match="unknown redaction entity type 'PASSPORT'"):
        await service.prepare(unchecked, "x", thread())


async def test_inputs_and_query_share_placeholders_and_secrets_in_between_are_markers(
    service: RedactionService,
) -> None:
    t = thread(60)
    p = await service.prepare(
        PSEUDO,
        "mail jo@example.com, token ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789, call 090-1234-5678",
        t,
        extra={"speaker_email": "jo@example.com", "history": "earlier: kim@example.com"},
    )
    assert p.query == "mail <EMAIL_1>, token [SECRET], call <PHONE_1>"
    assert p.extra == {"speaker_email": "<EMAIL_1>", "history": "earlier: <EMAIL_2>"}
    assert p.found == {"EMAIL": 3, "PHONE": 1, "SECRET": 1}


async def test_a_routes_phone_regions_reach_the_message_and_the_notice(
    service: RedactionService,
) -> None:
    query = "Kundin in Madrid: 612 34 56 78, NINO AB 12 34 56 C"
    plain = await service.prepare(RedactionConfig(), "Kundin: 612 34 56 78", thread(30))
    assert plain.query == "Kundin: 612 34 56 78"
    spain = RedactionConfig(phone_regions=("ES",))
    p = await service.prepare(spain, "Kundin: 612 34 56 78", thread(31))
    assert p.query == "Kundin: [PHONE]"
    # a country named in the message is a cue too, whatever the route says
    p = await service.prepare(RedactionConfig(), query, thread(32))
    assert p.query == "Kundin in Madrid: [PHONE], NINO [UK_NINO]"
    assert service.notice(p) == (
        "I removed 1 phone number and 1 UK National Insurance number before sending your message."
    )


async def test_a_national_insurance_number_keeps_its_placeholder_however_it_is_spaced(
    service: RedactionService,
) -> None:
    t = thread(33)
    first = await service.prepare(PSEUDO, "NINO: AB 12 34 56 C", t)
    second = await service.prepare(PSEUDO, "same person, AB123456C, and JG103759A", t)
    assert first.query == "NINO: <UK_NINO_1>"
    assert second.query == "same person, <UK_NINO_1>, and <UK_NINO_2>"
