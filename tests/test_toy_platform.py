"""A new platform is one package and one entry point (issue 24).

A developer writes tests/toy_platform (an adapter speaking a toy chat protocol over HTTP),
declares it in the ``dify_bridge.adapters`` entry point group, and starts the real service:
people on the toy platform get streamed Dify answers, and nothing in ``app/`` names the toy.
The toy reaches the core through its seams only; the rules that make this possible (the core
names no platform and imports no adapter, adapters do not import each other) are in
tests/test_architecture.py.
"""

from __future__ import annotations

import ast
import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the toy platform the way a pip package would: a dist-info with an entry point."""
    dist = tmp_path / "toy_platform-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-platform\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[dify_bridge.adapters]\ntoy = tests.toy_platform:PLATFORM\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


async def read_thread(
    http: aiohttp.ClientSession, base: str, thread: str, *, until: str = "finish"
) -> dict[str, Any]:
    for _ in range(200):
        async with http.get(f"{base}/toy/threads/{thread}") as resp:
            assert resp.status == 200
            seen: dict[str, Any] = await resp.json()
        if any(kind in (until, "fail") for kind, _ in seen["events"]):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {until} in thread {thread}: {seen}")


async def test_a_person_on_a_new_platform_gets_a_streamed_answer(
    toy_installed: None, make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.answer = "Toys are fun to build, and this one speaks to Dify. " * 3
    dify_app.chunk_size = 5
    dify_app.chunk_delay = 0.02
    svc = await make_service(
        {"DIFY_API_KEY": dify_app.api_key},
        bridge_yaml="routes:\n  - name: toy\n    edit_interval: 0.2\n",
        adapters=["toy"],
    )
    assert [a.name for a in svc.adapters] == ["toy"]
    base = f"http://127.0.0.1:{svc.port}"
    thread = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as http:
        ask = {"id": f"m-{thread}", "thread": thread, "user": "ana", "text": "what is a toy?"}
        async with http.post(f"{base}/toy/messages", json=ask) as resp:
            assert resp.status == 202
        seen = await read_thread(http, base, thread)
        # The client retries the same message: it is answered once.
        async with http.post(f"{base}/toy/messages", json=ask) as resp:
            assert await resp.json() == {"duplicate": True}

    events = seen["events"]
    assert events[0] == ["start", "Thinking…"]
    updates = [text for kind, text in events if kind == "update"]
    assert len(updates) >= 2, events  # the answer grew while Dify streamed it...
    assert all(dify_app.answer.startswith(u) for u in updates)  # ...as prefixes of it
    assert events[-1] == ["finish", dify_app.answer]
    assert seen["known"] is True  # the core remembers the toy thread (its Dify conversation)
    assert seen["last"] == f"m-{thread}"  # the toy's own key, in its own namespace
    chats = [r for r in fake_dify.requests_to("/chat-messages") if r.api_key == dify_app.api_key]
    assert [r.json["query"] for r in chats] == ["what is a toy?"]
    assert chats[0].json["user"] == f"toy:toy-workspace:toy-channel:{thread}"


# --------------------------------------------------------------------------- the rule behind it


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_toy_platform_uses_only_the_core_seams() -> None:
    used = imported_modules(ROOT / "tests" / "toy_platform" / "__init__.py")
    ours = {m for m in used if m.split(".")[0] in ("app", "adapters")}
    assert ours == {
        "app.seams.context",
        "app.pipeline.forms",
        "app.pipeline.model",
        "app.seams.plugin",
    }
