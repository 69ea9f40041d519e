"""Teams: a Dify run paused on a Human Input form shows it as an Adaptive Card (``Input.*`` and
one ``Action.Submit`` per action); a click sends the choice, the card shows who chose what, and
the rest of the answer arrives in the same thread or chat."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from adapters.teams import compose
from tests.fakes.bot_connector import Call, FakeBotConnector
from tests.test_human_input import APPROVAL

pytestmark = pytest.mark.usefixtures("teams_env")

YAML = "routes:\n  - name: approvals\n    edit_interval: 0.2\n    dify: {mode: advanced-chat}\n"


async def teams_bot(
    make_service: Any, connector: FakeBotConnector, app: Any, yaml: str = YAML
) -> Any:
    env = {**connector.service_env(), "DIFY_API_KEY": app.api_key}
    return await make_service(env, bridge_yaml=yaml, adapters=["teams"])


def hitl_app(fake_dify: Any, **knobs: Any) -> Any:
    return fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="advanced-chat",
        human_input={**APPROVAL, **knobs},
        chunk_size=6,
    )


def card_of(c: Call) -> dict[str, Any] | None:
    for a in c.body.get("attachments") or []:
        if a.get("contentType") == "application/vnd.microsoft.card.adaptive":
            return dict(a["content"])
    return None


def form_cards(connector: FakeBotConnector, conv: str) -> list[Call]:
    return [
        c
        for c in connector.sent("POST")
        if c.conversation_id == conv and (card := card_of(c)) and card.get("actions")
    ]


async def form_in_channel(
    connector: FakeBotConnector, bot: Any, question: str
) -> tuple[dict[str, Any], Call]:
    """Mention the bot in a new channel thread; the thread's root and the form card it posts."""
    root = connector.channel_mention(question)
    await connector.deliver(bot.base_url, root)
    conv = root["conversation"]["id"]
    await connector.wait_for(lambda f: bool(form_cards(f, conv)), within=10)
    (posted,) = form_cards(connector, conv)
    return root, posted


def submit(card: dict[str, Any], title: str, inputs: dict[str, str]) -> dict[str, Any]:
    """What Teams sends for a click: the action's data plus every input's value by id."""
    action = next(a for a in card["actions"] if a["title"] == title)
    value = dict(action["data"])
    for el in card["body"]:
        if el["type"].startswith("Input."):
            value[el["id"]] = inputs.get(el["id"], el.get("value", ""))
    return value


async def test_a_form_in_a_channel_thread_is_answered_and_the_answer_continues_there(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await teams_bot(make_service, connector, app)
    root, posted = await form_in_channel(connector, bot, "publish the post")
    conv = root["conversation"]["id"]
    card = card_of(posted)
    assert card is not None
    texts = [b.get("text", "") for b in card["body"] if b["type"] == "TextBlock"]
    assert texts[0] == "Publish approval" and "**draft**" in texts[1]
    fields = [b for b in card["body"] if b["type"].startswith("Input.")]
    assert [(f["type"], f["id"], f.get("value")) for f in fields] == [
        ("Input.Text", "field:comment", "Looks fine"),
        ("Input.ChoiceSet", "field:channel", None),
    ]
    assert [c["value"] for c in fields[1]["choices"]] == ["blog", "newsletter"]
    assert [(a["title"], a.get("style")) for a in card["actions"]] == [
        ("Approve", "positive"),
        ("Reject", None),
    ]
    assert any(
        "Here is the draft summary." in c.text
        for c in connector.sent()
        if c.conversation_id == conv
    ), "the text before the form"

    click = connector.card_click(
        submit(card, "Approve", {"field:channel": "newsletter", "field:comment": "ship it"}),
        reply_to=posted.response["id"],
        conversation=root["conversation"],
    )
    status, _, seconds = await connector.deliver(bot.base_url, click)
    assert status == 200 and seconds < 2, "acknowledged at once, answered in the background"
    await connector.wait_for(
        lambda f: any("published" in c.text for c in f.sent() if c.conversation_id == conv),
        within=10,
    )
    await connector.wait_for(
        lambda f: any(
            c.method == "PUT" and c.activity_id == posted.response["id"] for c in f.sent()
        )
    )
    decided = next(c for c in connector.sent("PUT") if c.activity_id == posted.response["id"])
    done = card_of(decided)
    assert done is not None and "actions" not in done
    assert (
        done["body"][-1]["text"]
        == "✅ Grace Hopper chose “Approve” (Comment: ship it; Channel: newsletter)."
    )
    assert app.form_submissions[0]["inputs"] == {"comment": "ship it", "channel": "newsletter"}
    assert fake_dify.spec_violations == []


async def test_a_form_in_a_personal_chat_closes_the_stream_and_a_second_click_is_refused(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await teams_bot(make_service, connector, app)
    chat = "a:1HitlPersonal" + uuid.uuid4().hex[:8]
    ask = connector.personal("publish the post", chat=chat)
    await connector.deliver(bot.base_url, ask)
    await connector.wait_for(lambda f: bool(form_cards(f, chat)), within=10)
    final = [c for c in connector.sent() if c.conversation_id == chat and c.stream_type == "final"]
    assert final and "Here is the draft summary." in final[0].text, "the stream ended first"
    (posted,) = form_cards(connector, chat)
    card = card_of(posted)
    assert card is not None
    value = submit(card, "Reject", {"field:channel": "blog"})
    await connector.deliver(
        bot.base_url,
        connector.card_click(
            value, reply_to=posted.response["id"], conversation=ask["conversation"]
        ),
    )
    await connector.wait_for(
        lambda f: any(
            "Action reject with blog: published." in c.text
            for c in f.sent()
            if c.conversation_id == chat
        ),
        within=10,
    )
    await connector.deliver(
        bot.base_url,
        connector.card_click(
            submit(card, "Approve", {"field:channel": "blog"}),
            reply_to=posted.response["id"],
            conversation=ask["conversation"],
        ),
    )
    await connector.wait_for(
        lambda f: any(
            "Already decided by" in c.text and "Your choice was not sent" in c.text
            for c in f.sent()
            if c.conversation_id == chat
        ),
        within=10,
    )
    assert len(app.form_submissions) == 1


async def test_invalid_input_and_email_only_forms_are_plain_words_in_teams(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await teams_bot(make_service, connector, app)
    root, posted = await form_in_channel(connector, bot, "publish the post")
    conv = root["conversation"]["id"]
    card = card_of(posted)
    assert card is not None
    await connector.deliver(
        bot.base_url,
        connector.card_click(
            submit(card, "Approve", {"field:channel": ""}),
            reply_to=posted.response["id"],
            conversation=root["conversation"],
        ),
    )
    await connector.wait_for(
        lambda f: any(
            "Please choose a value for “Channel”." in c.text
            for c in f.sent()
            if c.conversation_id == conv
        ),
        within=10,
    )
    assert app.form_submissions == []

    mail = hitl_app(fake_dify, email_only=True)
    bot2 = await teams_bot(make_service, connector, mail)
    root2 = connector.channel_mention("publish by mail")
    await connector.deliver(bot2.base_url, root2)
    conv2 = root2["conversation"]["id"]
    await connector.wait_for(
        lambda f: any(
            "by e-mail" in str(card_of(c)) for c in f.sent() if c.conversation_id == conv2
        ),
        within=10,
    )
    assert not form_cards(connector, conv2), "no buttons for a form we cannot answer"


def test_a_click_value_is_read_only_when_it_is_a_form_of_ours() -> None:
    assert compose.parse_form_click(
        {"difyBridge": "form", "f": "k", "a": "approve", "field:comment": "ok", "other": "x"}
    ) == ("k", "approve", {"comment": "ok"})
    assert compose.parse_form_click({"difyBridge": "newTopic"}) is None
    assert compose.parse_form_click({"difyBridge": "form", "f": "", "a": "x"}) is None
    assert compose.parse_form_click("garbage") is None


async def test_a_form_answered_in_dify_or_expired_says_so_on_the_card(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await teams_bot(make_service, connector, app)
    cards: dict[str, Call] = {}
    roots = {}
    for text in ("publish the post", "publish another post"):
        roots[text], cards[text] = await form_in_channel(connector, bot, text)
    first, second = list(app.forms)
    await fake_dify.submit_elsewhere(app, first, "approve")
    await fake_dify.expire_form(app, second)
    for text, expected in (
        ("publish the post", "already answered elsewhere"),
        ("publish another post", "This form expired"),
    ):
        posted, root = cards[text], roots[text]
        card = card_of(posted)
        assert card is not None
        await connector.deliver(
            bot.base_url,
            connector.card_click(
                submit(card, "Approve", {"field:channel": "blog"}),
                reply_to=posted.response["id"],
                conversation=root["conversation"],
            ),
        )
        await connector.wait_for(
            lambda f, p=posted, e=expected: any(
                c.method == "PUT" and c.activity_id == p.response["id"] and e in str(card_of(c))
                for c in f.sent()
            ),
            within=10,
        )
    assert app.form_submissions == []


async def test_a_form_click_answered_while_the_service_stops_still_gets_its_reply(
    make_service: Any, connector: FakeBotConnector, fake_dify: Any
) -> None:
    # The resumed run arrives a moment after the click is acknowledged; the service is told to
    # stop in between. Shutdown waits for the click's reply instead of closing the connector's
    # session under it (which crashed the reply with "Session is closed").
    from structlog.testing import capture_logs

    app = hitl_app(fake_dify, resume_delay=0.5)
    bot = await teams_bot(make_service, connector, app)
    root, posted = await form_in_channel(connector, bot, "publish the post")
    conv = root["conversation"]["id"]
    card = card_of(posted)
    assert card is not None
    click = connector.card_click(
        submit(card, "Approve", {"field:channel": "blog"}),
        reply_to=posted.response["id"],
        conversation=root["conversation"],
    )
    with capture_logs() as logs:
        status, _, _ = await connector.deliver(bot.base_url, click)
        assert status == 200
        await bot.stop(grace=5)
    assert any("published" in c.text for c in connector.sent() if c.conversation_id == conv)
    assert not [e for e in logs if e["event"] == "task.crashed"], logs
