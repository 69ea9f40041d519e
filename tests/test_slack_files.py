"""Files: what users attach reaches Dify; what Dify produces lands in the thread."""

from __future__ import annotations

from aiohttp import web

from tests import test_slack_support as _support
from tests.test_slack_support import CHANNEL, MakeBot

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

# Fixtures shared by the Slack tests (assigned, not imported, so tests may take them by name).
fake_slack = _support.fake_slack
slack_bot = _support.slack_bot


async def test_attached_image_is_downloaded_with_the_bot_token_and_sent_to_dify(
    slack_bot: MakeBot,
) -> None:
    bot = await slack_bot()
    f = bot.fake.host_file(bot.team, "chart.png", "image/png", PNG)
    ev = bot.mention("what does this chart show?")
    ev["files"] = [f.to_event()]
    await bot.send(ev)
    (answer,) = await bot.final(CHANNEL, ev["ts"])

    assert "You said: what does this chart show?" in answer.visible_text()
    (upload,) = bot.dify.uploads.values()
    assert upload.data == PNG and upload.mime_type == "image/png"
    chat = [r for r in bot.dify_requests() if r.path == "/chat-messages"][-1]
    assert chat.json["files"] == [
        {"type": "image", "transfer_method": "local_file", "upload_file_id": upload.id}
    ]


async def test_file_the_bot_may_not_read_gives_a_clear_message(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    other = bot.fake.add_team("T0OTHER")  # a file of another workspace: Slack serves a login page
    f = bot.fake.host_file(other, "secret.pdf", "application/pdf", b"%PDF-1.7 ...")
    ev = bot.mention("summarise this")
    ev["files"] = [f.to_event()]
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])
    text = msg.visible_text()
    assert "couldn't download" in text and "secret.pdf" in text
    assert "Reference: `" in msg.context_text()
    assert not bot.dify.uploads


async def test_unsupported_file_type_is_refused_in_plain_words(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    f = bot.fake.host_file(bot.team, "setup.exe", "application/x-msdownload", b"MZ" * 10)
    ev = bot.mention("install this")
    ev["files"] = [f.to_event()]
    await bot.send(ev)
    (msg,) = await bot.final(CHANNEL, ev["ts"])
    assert "can't read files of type application/x-msdownload" in msg.visible_text()


async def test_file_produced_by_dify_is_uploaded_into_the_thread(slack_bot: MakeBot) -> None:
    bot = await slack_bot()

    # Dify serves its tool files from its own host; a tiny server stands in for it.
    async def plot(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/files/tools/plot.png", plot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        bot.dify.message_files = [
            {"type": "image", "url": f"http://127.0.0.1:{port}/files/tools/plot.png"}
        ]
        ev = bot.mention("draw a plot")
        await bot.send(ev)
        await bot.final(CHANNEL, ev["ts"])
        await bot.fake.wait_for(lambda: any(u.completed for u in bot.fake.uploads.values()))
    finally:
        await runner.cleanup()

    (up,) = bot.fake.uploads.values()
    assert up.data == PNG and up.name == "plot.png"
    assert up.channel == CHANNEL and up.thread_ts == ev["ts"]
    msgs = bot.fake.thread(CHANNEL, ev["ts"])
    assert any(m.files == [up.id] for m in msgs), "the file shows in the thread"


async def test_a_file_pointing_outside_slack_never_gets_the_bot_token(slack_bot: MakeBot) -> None:
    bot = await slack_bot()
    # Someone else's server, named by a crafted event as the file's url_private.
    seen: list[str | None] = []

    async def grab(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", grab)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        f = bot.fake.host_file(bot.team, "chart.png", "image/png", PNG).to_event()
        # Same address, another port: another origin.
        f["url_private"] = f["url_private_download"] = f"http://127.0.0.1:{port}/chart.png"
        ev = bot.mention("what does this chart show?")
        ev["files"] = [f]
        await bot.send(ev)
        (msg,) = await bot.final(CHANNEL, ev["ts"])
    finally:
        await runner.cleanup()
    assert seen == [], "the other host was never even asked"
    text = msg.visible_text()
    assert "didn't open “chart.png”" in text and "not stored in Slack" in text
    assert not bot.dify.messages, "the question waits for a file the bot can read"


def test_the_token_goes_only_to_slack_file_hosts_and_the_configured_api_host() -> None:
    from adapters.slack._files import token_may_go_to

    api = "http://127.0.0.1:8123/api/"
    assert token_may_go_to("https://files.slack.com/files-pri/T1-F1/a.png", api)
    assert token_may_go_to("https://files.slack-gov.com/files-pri/T1-F1/a.png", api)
    assert token_may_go_to("http://127.0.0.1:8123/files-pri/F1/a.png", api)
    for url in (
        "http://files.slack.com/files-pri/T1-F1/a.png",  # not HTTPS
        "https://files.slack.com.evil.io/a.png",
        "https://evilslack.com/a.png",
        "https://files.slack.com:8443/a.png",
        "http://127.0.0.1:8124/files-pri/F1/a.png",
        "https://user@/a.png",
        "https://[::1/a.png",
    ):
        assert not token_may_go_to(url, api), url
