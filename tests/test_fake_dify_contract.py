"""The fake Dify answers the way Dify's own OpenAPI says Dify answers.

The referee in ``tests/fakes/referees.py`` judges what the bridge *sends*; these stories judge
what the fake *says back*, event by event and body by body, so that a test cannot pass against a
fake that speaks a Dify that does not exist. Where the spec and the fake disagree, the fake is
fixed first (the brief's rule).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS30Validator

from tests.fakes import referees

SPEC = json.loads(referees.SPEC_PATH.read_text(encoding="utf-8"))
SCHEMAS = SPEC["components"]["schemas"]

# The union of stream events per endpoint, as the spec draws it (a discriminator on "event").
STREAM_UNION = {
    "/chat-messages": "ChunkChatEvent",
    "/completion-messages": "ChunkCompletionEvent",
    "/workflows/run": "ChunkWorkflowEvent",
}


def _problems(instance: Any, ref: str) -> list[str]:
    schema = {"components": SPEC["components"], "$ref": ref}
    validator = OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def _event_problems(path: str, event: dict[str, Any]) -> list[str]:
    union = SCHEMAS[STREAM_UNION[path]]
    mapping = union["discriminator"]["mapping"]
    name = event.get("event")
    if name not in mapping:
        return [f"event {name!r} is not one Dify's spec lists for {path}"]
    return [f"{name}: {p}" for p in _problems(event, mapping[name])]


async def _stream(base_url: str, key: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            base_url + path, json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
            elif line == "event: ping":
                events.append({"event": "ping"})
    return events


@pytest.mark.parametrize(
    ("mode", "path", "knobs"),
    [
        ("chat", "/chat-messages", {"suggested_questions": ["Next?"]}),
        (
            "advanced-chat",
            "/chat-messages",
            {"retriever_resources": [{"position": 1, "dataset_name": "Docs", "content": "x"}]},
        ),
        ("agent-chat", "/chat-messages", {"agent_thoughts": [{"tool": "search"}]}),
        ("completion", "/completion-messages", {}),
        ("workflow", "/workflows/run", {}),
    ],
)
async def test_every_streamed_event_is_one_dify_s_spec_describes(
    fake_dify: Any, mode: str, path: str, knobs: dict[str, Any]
) -> None:
    import uuid

    app = fake_dify.add_app("app-" + uuid.uuid4().hex[:12], mode=mode, **knobs)
    body: dict[str, Any] = {"inputs": {}, "user": "u-contract", "response_mode": "streaming"}
    if mode == "workflow":
        body["inputs"] = {"query": "What is Dify?"}
    else:
        body["query"] = "What is Dify?"
    events = await _stream(fake_dify.base_url, app.api_key, path, body)
    assert len(events) >= 2
    problems = [p for ev in events for p in _event_problems(path, ev)]
    assert problems == []


async def test_json_answers_are_the_shapes_dify_s_spec_describes(
    fake_dify: Any, dify_app: Any
) -> None:
    dify_app.suggested_questions = ["What else?"]
    dify_app.opening_statement = "Hi!"
    events = await _stream(
        fake_dify.base_url,
        dify_app.api_key,
        "/chat-messages",
        {"query": "hello", "inputs": {}, "user": "u-c", "response_mode": "streaming"},
    )
    end = next(e for e in events if e["event"] == "message_end")
    conv, msg = end["conversation_id"], end["message_id"]
    checks = {
        "/parameters": ("GET", None, {"user": "u-c"}, "AppParametersResponse"),
        "/info": ("GET", None, {}, "AppInfoResponse"),
        "/messages": (
            "GET",
            None,
            {"user": "u-c", "conversation_id": conv},
            "ConversationHistoryResponse",
        ),
        "/conversations": ("GET", None, {"user": "u-c"}, "ConversationsListResponse"),
        f"/messages/{msg}/suggested": ("GET", None, {"user": "u-c"}, "SuggestedQuestionsResponse"),
    }
    problems: list[str] = []
    async with aiohttp.ClientSession() as http:
        for path, (method, body, query, schema) in checks.items():
            resp = await http.request(
                method,
                fake_dify.base_url + path,
                params=query,
                json=body,
                headers={"Authorization": f"Bearer {dify_app.api_key}"},
            )
            assert resp.status == 200, (path, await resp.text())
            problems += [
                f"{path}: {p}"
                for p in _problems(await resp.json(), f"#/components/schemas/{schema}")
            ]
    assert problems == []
