"""The ack floor for bench_slack.py: a bare aiohttp server that checks Slack's request signature
and answers 200, nothing else (run in its own process; prints its base URL).

``python bench/_ack_server.py SIGNING_SECRET``
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

VERIFIER = SignatureVerifier(sys.argv[1] if len(sys.argv) > 1 else "secret")


async def events(request: web.Request) -> web.Response:
    body = (await request.read()).decode()
    if not VERIFIER.is_valid(
        body=body,
        timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
        signature=request.headers.get("X-Slack-Signature", ""),
    ):
        return web.Response(status=401)
    return web.Response(status=200)


async def main() -> None:
    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    from app.server import loop

    loop.run(main())  # the same loop as the bridge
