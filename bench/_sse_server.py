"""A minimal Dify-compatible SSE server for the core benchmarks (run in its own process).

``python bench/_sse_server.py EVENTS CHUNK DELAY`` prints its base URL, then streams, for every
POST /v1/chat-messages, EVENTS ``message`` events of CHUNK characters each, DELAY seconds apart,
then ``message_end``; GET /v1/conversations names the user's newest conversation, as Dify does
after its first answer. GET /v1/info and /v1/parameters describe a chat app with Dify's defaults
(no inputs, no files, "Suggested questions after answer" off), and
/v1/messages/{id}/suggested answers what Dify answers then: 403
``app_suggested_questions_after_answer_disabled``. The first event's text is its own send time
(wall clock), so the benchmark can measure the bridge's added latency from what the reply handle
receives.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from aiohttp import web

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
CHUNK = int(sys.argv[2]) if len(sys.argv) > 2 else 5
DELAY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0


def frame(obj: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


# user -> their newest conversation id, so GET /conversations can name it as Dify would.
LATEST: dict[str, str] = {}


async def conversations(request: web.Request) -> web.Response:
    conv = LATEST.pop(request.query.get("user", ""), None)
    data = [{"id": conv, "name": "Password reset", "status": "normal"}] if conv else []
    return web.json_response({"limit": 5, "has_more": False, "data": data})


async def info(request: web.Request) -> web.Response:
    return web.json_response({"name": "Bench", "description": "", "tags": [], "mode": "chat"})


async def parameters(request: web.Request) -> web.Response:
    off = {"enabled": False}
    return web.json_response(
        {
            "opening_statement": "",
            "suggested_questions": [],
            "suggested_questions_after_answer": off,
            "speech_to_text": off,
            "text_to_speech": off,
            "retriever_resource": off,
            "annotation_reply": off,
            "more_like_this": off,
            "user_input_form": [],
            "sensitive_word_avoidance": off,
            "file_upload": {"enabled": False},
            "system_parameters": {"file_size_limit": 15, "image_file_size_limit": 10},
        }
    )


async def suggested(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "code": "app_suggested_questions_after_answer_disabled",
            "message": "Function Suggested questions after answer Disabled.",
            "status": 403,
        },
        status=403,
    )


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    conv = body.get("conversation_id") or str(uuid.uuid4())
    LATEST[str(body.get("user", ""))] = conv
    mid, task = str(uuid.uuid4()), str(uuid.uuid4())
    env = {
        "conversation_id": conv,
        "message_id": mid,
        "created_at": int(time.time()),
        "task_id": task,
        "id": mid,
    }
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    text = "abcdefghij" * (CHUNK // 10 + 1)
    # The first delta is the send time itself, so the benchmark can read it off the reply. The
    # frame is built around a placeholder first and the clock read just before the write, so
    # this server's own work (slow after an idle spell) is not counted as the bridge's.
    first = frame({"event": "message", **env, "answer": "@STAMP@", "from_variable_selector": None})
    head, tail = first.split(b"@STAMP@")
    await resp.write(head + f"{time.time():.6f}|".encode() + tail)
    if DELAY:
        await asyncio.sleep(DELAY)
    for _ in range(EVENTS - 1):
        ev = {"event": "message", **env, "answer": text[:CHUNK], "from_variable_selector": None}
        await resp.write(frame(ev))
        if DELAY:
            await asyncio.sleep(DELAY)
    await resp.write(
        frame(
            {
                "event": "message_end",
                **env,
                "metadata": {
                    "annotation_reply": None,
                    "retriever_resources": [],
                    "usage": {"total_tokens": EVENTS},
                },
                "files": None,
            }
        )
    )
    await resp.write_eof()
    return resp


async def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat-messages", chat)
    app.router.add_get("/v1/conversations", conversations)
    app.router.add_get("/v1/info", info)
    app.router.add_get("/v1/parameters", parameters)
    app.router.add_get("/v1/messages/{message_id}/suggested", suggested)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
