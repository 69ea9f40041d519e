"""The referees: Dify's own OpenAPI and slack_sdk's own definitions judge what the fakes receive.

Every other test runs with them on (``tests/conftest.py`` fails a test whose requests they
refused); these stories show that they do refuse what the platforms would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes import referees
from tests.fakes.dify import FakeDify
from tests.fakes.slack_api import FakeSlack

SHARED_SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "openapi_service.json"


def test_the_spec_in_the_repo_is_the_one_the_project_was_given() -> None:
    if not SHARED_SPEC.exists():
        pytest.skip(f"no {SHARED_SPEC} beside this checkout to compare with")
    assert referees.SPEC_PATH.read_bytes() == SHARED_SPEC.read_bytes(), (
        f"{SHARED_SPEC} changed: copy it to {referees.SPEC_PATH} and run the tests"
    )


async def _dify(
    fake: FakeDify, key: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """One request to the fake Dify: its status and decoded JSON body (None if not JSON)."""
    async with aiohttp.ClientSession() as http:
        resp = await http.request(
            method, fake.base_url + path, json=body, headers={"Authorization": f"Bearer {key}"}
        )
        data = await resp.json() if resp.content_type == "application/json" else None
        await resp.read()
    return resp.status, data


@pytest.mark.referee_refuses
async def test_a_chat_message_without_a_user_is_refused_as_dify_would(
    own_dify: FakeDify, dify_app: Any
) -> None:
    status, body = await _dify(
        own_dify,
        dify_app.api_key,
        "POST",
        "/chat-messages",
        {"query": "hi", "inputs": {}, "response_mode": "streaming"},
    )
    # The fake answers in Dify's own words; the referee names the rule from Dify's spec.
    assert (status, body["message"]) == (400, "Arg user must be provided.")
    assert any(
        "POST /chat-messages" in v and "'user' is a required property" in v
        for v in own_dify.spec_violations
    )


@pytest.mark.referee_refuses
async def test_a_query_of_the_wrong_type_is_refused(own_dify: FakeDify, dify_app: Any) -> None:
    body = {"query": 42, "inputs": {}, "user": "u1", "response_mode": "streaming"}
    await _dify(own_dify, dify_app.api_key, "POST", "/chat-messages", body)
    assert "42 is not of type 'string'" in referees.VIOLATIONS[-1]


@pytest.mark.referee_refuses
async def test_an_endpoint_dify_does_not_have_is_named(own_dify: FakeDify, dify_app: Any) -> None:
    status, _ = await _dify(own_dify, dify_app.api_key, "GET", "/chat-history")
    assert status == 404
    assert "Path not found" in referees.VIOLATIONS[-1]


async def test_a_wrong_key_is_dify_s_401_not_a_referee_matter(own_dify: FakeDify) -> None:
    status, _ = await _dify(own_dify, "app-nobody", "POST", "/chat-messages", {"query": "hi"})
    assert status == 401
    assert referees.VIOLATIONS == []


@pytest.fixture
async def own_dify() -> Any:
    """A fake Dify of this module's own, so the refusals here stay out of the session's fake."""
    fake = FakeDify()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def dify_app(own_dify: Any) -> Any:
    return own_dify.add_app("app-referee", mode="chat")


@pytest.fixture
async def slack() -> Any:
    fake = FakeSlack()
    await fake.start()
    team = fake.add_team("T0REF")
    yield fake, team
    await fake.close()


async def _call(fake: FakeSlack, token: str, method: str, **params: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            fake.api_url + method,
            data=json.dumps(params),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        result: dict[str, Any] = await resp.json()
        return result


@pytest.mark.referee_refuses
async def test_a_section_over_slack_s_3000_characters_is_refused(slack: Any) -> None:
    fake, team = slack
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    body = await _call(
        fake, team.bot_token, "chat.postMessage", channel="C1", text="t", blocks=blocks
    )
    assert body["error"] == "invalid_blocks"
    assert "cannot exceed 3000 characters" in body["response_metadata"]["messages"][0]
    assert fake.messages["C1"] == []


@pytest.mark.referee_refuses
async def test_a_message_without_its_channel_is_refused(slack: Any) -> None:
    fake, team = slack
    body = await _call(fake, team.bot_token, "chat.postMessage", text="hello")
    assert body["error"] == "invalid_arguments"
    assert "missing required argument(s) channel" in fake.contract_errors[-1]


@pytest.mark.referee_refuses
async def test_an_argument_slack_sdk_does_not_name_is_refused(slack: Any) -> None:
    fake, team = slack
    body = await _call(fake, team.bot_token, "chat.update", channel="C1", ts="1.2", txt="typo")
    assert body["error"] == "invalid_arguments"
    assert "not in slack_sdk's signature: txt" in fake.contract_errors[-1]


@pytest.mark.referee_refuses
async def test_a_block_type_slack_sdk_does_not_know_is_refused(slack: Any) -> None:
    fake, team = slack
    blocks = [{"type": "paragraph", "text": "hi"}]
    await _call(fake, team.bot_token, "chat.postMessage", channel="C1", text="t", blocks=blocks)
    assert "does not know block type 'paragraph'" in fake.contract_errors[-1]


async def test_a_valid_markdown_message_passes_every_referee(slack: Any) -> None:
    fake, team = slack
    body = await _call(
        fake,
        team.bot_token,
        "chat.postMessage",
        channel="C1",
        text="Hello",
        blocks=[{"type": "markdown", "text": "**Hello**"}],
    )
    assert body["ok"] is True
    assert fake.contract_errors == []
