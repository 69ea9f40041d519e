"""Slack: a Dify run paused on a Human Input form shows the form in the thread (Block Kit inputs
and one button per action); a click sends the choice and the rest of the answer arrives in the
same thread, and the form shows who chose what."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests import test_slack_support as _support
from tests.test_human_input import APPROVAL
from tests.test_slack_support import CHANNEL, SECRET

fake_slack = _support.fake_slack
slack_bot = _support.slack_bot

YAML = "routes:\n  - name: approvals\n    edit_interval: 0.2\n    dify: {mode: advanced-chat}\n"


def hitl_app(fake_dify: Any, **knobs: Any) -> Any:
    return fake_dify.add_app(
        "app-" + uuid.uuid4().hex[:12],
        mode="advanced-chat",
        human_input={**APPROVAL, **knobs},
        chunk_size=6,
    )


def form_message(bot: Any, ts: str) -> Any:
    return next(
        m
        for m in bot.answers(CHANNEL, ts)
        if any(b.get("type") == "input" for b in m.blocks) or "Publish approval" in m.context_text()
    )


async def ask_for_form(bot: Any, question: str) -> tuple[dict[str, Any], Any]:
    """Mention the bot with ``question`` and wait for the form the paused run shows."""
    ev = bot.mention(question)
    await bot.send(ev)
    await bot.fake.wait_for(
        lambda: any(
            "input" in [b.get("type") for b in m.blocks] for m in bot.answers(CHANNEL, ev["ts"])
        )
    )
    return ev, form_message(bot, ev["ts"])


async def click(bot: Any, msg: Any, title: str, *, user: str, inputs: dict[str, str]) -> None:
    button = next(b for b in msg.buttons() if b["text"]["text"] == title)
    payload = bot.fake.block_action(bot.team, msg, button, user=user, inputs=inputs)
    body, headers = bot.fake.interaction(payload, secret=SECRET)
    assert (await bot.post(body, headers)).status == 200


async def test_a_paused_run_shows_the_form_and_a_click_brings_the_rest_of_the_answer(
    slack_bot: Any, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=YAML)
    ev, form = await ask_for_form(bot, "publish the post")
    answer = bot.answers(CHANNEL, ev["ts"])[0]
    assert answer.visible_text().strip() == "Here is the draft summary."
    assert "**draft**" in form.visible_text()
    inputs = [b for b in form.blocks if b["type"] == "input"]
    assert [b["label"]["text"] for b in inputs] == ["Comment", "Channel"]
    assert inputs[0]["element"]["initial_value"] == "Looks fine"
    assert [o["value"] for o in inputs[1]["element"]["options"]] == ["blog", "newsletter"]
    assert [b["text"]["text"] for b in form.buttons()] == ["Approve", "Reject"]
    assert form.buttons()[0].get("style") == "primary"

    await click(
        bot,
        form,
        "Approve",
        user="U0ANN",
        inputs={"dify_field:comment": "ship it", "dify_field:channel": "newsletter"},
    )
    await bot.fake.wait_for(
        lambda: any("published" in m.visible_text() for m in bot.answers(CHANNEL, ev["ts"]))
    )
    await bot.idle()
    assert (
        "<@U0ANN> chose “Approve” (Comment: ship it; Channel: newsletter)." in form.context_text()
    )
    assert not form.buttons() and not [b for b in form.blocks if b["type"] == "input"]
    rest = bot.answers(CHANNEL, ev["ts"])[-1]
    assert rest.visible_text().strip() == "Action approve with newsletter: published."
    assert any(b["action_id"] == "dify_like" for b in rest.buttons()), "like any other answer"
    assert app.form_submissions[0]["inputs"] == {"comment": "ship it", "channel": "newsletter"}
    assert fake_dify.spec_violations == []


async def test_a_second_click_is_told_who_decided_and_nothing_reaches_dify(
    slack_bot: Any, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=YAML)
    _, form = await ask_for_form(bot, "publish the post")
    stale = form.blocks  # the second person still sees the buttons
    await click(bot, form, "Reject", user="U0ANN", inputs={"dify_field:channel": "blog"})
    await bot.idle()
    form.blocks = stale
    await click(bot, form, "Approve", user="U0BOB", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(
        lambda: any("Already decided by <@U0ANN>" in str(r) for r in bot.fake.all_responses())
    )
    assert len(app.form_submissions) == 1 and app.form_submissions[0]["action"] == "reject"


async def test_invalid_or_refused_clicks_are_told_to_the_clicker_and_the_form_stays(
    slack_bot: Any, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    yaml = YAML + "    human_input: {answer_by: asker}\n"
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=yaml)
    _, form = await ask_for_form(bot, "publish the post")  # asked by the default user
    await click(bot, form, "Approve", user="U0STRANGER", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(
        lambda: any("Only the person who asked" in str(r) for r in bot.fake.all_responses())
    )
    await click(bot, form, "Approve", user=_support.USER, inputs={})
    await bot.fake.wait_for(
        lambda: any(
            "Please choose a value for “Channel”" in str(r) for r in bot.fake.all_responses()
        )
    )
    assert form.buttons(), "the form is still open"
    assert app.form_submissions == []


async def test_a_form_answered_in_dify_or_expired_says_so_on_the_form(
    slack_bot: Any, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify)
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=YAML)
    _, form = await ask_for_form(bot, "publish the post")
    (token,) = app.forms
    await fake_dify.submit_elsewhere(app, token, "approve")
    await click(bot, form, "Reject", user="U0ANN", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(lambda: "already answered elsewhere" in form.context_text())
    assert not form.buttons()

    _, form2 = await ask_for_form(bot, "publish another post")
    await fake_dify.expire_form(app, list(app.forms)[-1])
    await click(bot, form2, "Approve", user="U0ANN", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(lambda: "This form expired" in form2.context_text())


async def test_an_email_only_form_says_the_run_waits_for_an_email_approval(
    slack_bot: Any, fake_dify: Any
) -> None:
    app = hitl_app(fake_dify, email_only=True)
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=YAML)
    ev = bot.mention("publish the post")
    await bot.send(ev)
    await bot.fake.wait_for(
        lambda: any("by e-mail" in m.context_text() for m in bot.answers(CHANNEL, ev["ts"]))
    )
    await bot.idle()
    assert not any(m.buttons() for m in bot.answers(CHANNEL, ev["ts"]))


async def test_a_route_can_let_a_slack_user_group_answer(
    slack_bot: Any, fake_dify: Any, fake_slack: Any
) -> None:
    app = hitl_app(fake_dify)
    fake_slack.usergroups["S0EDITORS"] = ["U0EDIT"]
    yaml = YAML + "    human_input: {answer_by: listed, allowed: [S0EDITORS]}\n"
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=yaml)
    _, form = await ask_for_form(bot, "publish the post")
    await click(bot, form, "Approve", user="U0OTHER", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(
        lambda: any("not one of the people" in str(r) for r in bot.fake.all_responses())
    )
    await click(bot, form, "Approve", user="U0EDIT", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(lambda: "<@U0EDIT> chose “Approve”" in form.context_text())
    await asyncio.wait_for(bot.idle(), 10)


async def test_a_route_can_let_people_answer_by_their_slack_e_mail(
    slack_bot: Any, fake_dify: Any, fake_slack: Any
) -> None:
    app = hitl_app(fake_dify)
    fake_slack.add_user("U0MAIL", name="Mia", email="editor@example.com")
    fake_slack.add_user("U0NOPE", name="Noah", email="noah@example.com")
    yaml = YAML + "    human_input: {answer_by: listed, allowed: [editor@example.com]}\n"
    bot = await slack_bot({"DIFY_API_KEY": app.api_key}, bridge_yaml=yaml)
    _, form = await ask_for_form(bot, "publish the post")
    await click(bot, form, "Approve", user="U0NOPE", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(
        lambda: any("not one of the people" in str(r) for r in bot.fake.all_responses())
    )
    assert app.form_submissions == []
    await click(bot, form, "Approve", user="U0MAIL", inputs={"dify_field:channel": "blog"})
    await bot.fake.wait_for(lambda: "<@U0MAIL> chose “Approve”" in form.context_text())
    await asyncio.wait_for(bot.idle(), 10)
    assert len(app.form_submissions) == 1
