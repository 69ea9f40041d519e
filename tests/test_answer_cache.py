"""The one-shot answer cache for frequent slash-command questions."""

from __future__ import annotations

from typing import Any

from app.pipeline.model import Kind
from app.state.answer_cache import normalize_question
from tests.test_app_modes import ask, calls, message, new_thread

CACHED = """routes:
  - name: faq
    answer_cache_ttl: 120
    match: {channel: C1}
  - name: other
    answer_cache_ttl: 120
    match: {channel: C2}
"""


def cache_count(svc: Any, route: str, result: str) -> float:
    value = svc.metrics.registry.get_sample_value(
        "bridge_answer_cache_total", {"route": route, "result": result}
    )
    return value or 0.0


async def cache_keys(svc: Any) -> list[Any]:
    pattern = f"{svc.settings.redis_key_prefix}:acache:*"
    return [k async for k in svc.store.redis.scan_iter(match=pattern)]


def test_questions_that_differ_only_in_case_spacing_and_end_punctuation_are_the_same() -> None:
    assert normalize_question("  How do I reset my   PASSWORD?? ") == (
        normalize_question("how do i reset my password")
    )
    assert normalize_question("¿what's new?") == "what's new"
    assert normalize_question("?!") == ""


async def test_the_same_slash_command_question_is_answered_from_the_cache_without_dify(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.retriever_resources = [
        {"position": 1, "document_name": "IT handbook", "content": "Go to id.example.com"}
    ]
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=CACHED)
    first = await ask(svc, message(new_thread(), "How do I reset my password?", kind=Kind.COMMAND))
    again = await ask(svc, message(new_thread(), "how do i reset my  password", kind=Kind.COMMAND))
    assert again.final == first.final == "You said: How do I reset my password?"
    assert [s.title for s in again.extras.sources] == ["IT handbook"]
    assert len(calls(fake_dify, dify_app, "/chat-messages")) == 1
    assert cache_count(svc, "faq", "miss") == 1 and cache_count(svc, "faq", "hit") == 1
    keys = await cache_keys(svc)
    assert len(keys) == 1 and 0 < await svc.store.redis.ttl(keys[0]) <= 120


async def test_a_cached_route_keeps_slash_commands_one_shot(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=CACHED)
    t = new_thread()
    await ask(svc, message(t, "what is the wifi password", kind=Kind.COMMAND))
    await ask(svc, message(t, "and the guest wifi?", kind=Kind.COMMAND))
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert [c.json["conversation_id"] for c in sent] == ["", ""]
    assert await svc.store.get_conversation(t) is None


async def test_the_cache_is_never_shared_across_routes(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=CACHED)
    await ask(svc, message(new_thread("C1"), "who approves expenses?", kind=Kind.COMMAND))
    await ask(svc, message(new_thread("C2"), "who approves expenses?", kind=Kind.COMMAND))
    assert len(calls(fake_dify, dify_app, "/chat-messages")) == 2
    assert cache_count(svc, "other", "hit") == 0


async def test_mentions_in_a_conversation_never_use_the_cache(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=CACHED)
    await ask(svc, message(new_thread(), "who approves expenses?", kind=Kind.COMMAND))
    t = new_thread()
    first = await ask(svc, message(t, "who approves expenses?"))
    second = await ask(svc, message(t, "who approves expenses?"))
    sent = calls(fake_dify, dify_app, "/chat-messages")
    assert len(sent) == 3
    assert sent[2].json["conversation_id"] == first.extras.conversation_id
    assert second.error is None and cache_count(svc, "faq", "hit") == 0


async def test_the_cache_is_off_unless_the_route_turns_it_on(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    for _ in range(2):
        await ask(svc, message(new_thread(), "office hours?", kind=Kind.COMMAND))
    assert len(calls(fake_dify, dify_app, "/chat-messages")) == 2
    assert cache_count(svc, "default", "miss") == 0


async def test_questions_with_personal_data_are_never_cached(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=CACHED)
    q = "is ana.ruiz@example.com on leave?"
    await ask(svc, message(new_thread(), q, kind=Kind.COMMAND))
    await ask(svc, message(new_thread(), q, kind=Kind.COMMAND))
    assert len(calls(fake_dify, dify_app, "/chat-messages")) == 2
    keys = await cache_keys(svc)
    assert keys == []


async def test_routes_that_send_who_is_asking_do_not_share_answers(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    yaml = "routes:\n  - name: personal\n    answer_cache_ttl: 60\n    inputs: {who: speaker_id}\n"
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key}, bridge_yaml=yaml)
    for _ in range(2):
        await ask(svc, message(new_thread(), "my open tickets", kind=Kind.COMMAND))
    assert len(calls(fake_dify, dify_app, "/chat-messages")) == 2
