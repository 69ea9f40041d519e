"""What the assistant reads: Slack markup turned into plain text, and which events are questions."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack._normalize import Ignore, Trigger, classify, slack_to_plain
from app.pipeline.model import Kind
from tests.test_slack_support import payload

BOT = "U0BOT"


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("<@U0BOT> how do I reset my password?", "how do I reset my password?"),
        ("<@U0BOT|difybot> hi", "hi"),
        ("ask <@U0ANN|ann> or <@U0BOB>", "ask @ann or @U0BOB"),
        (
            "see <https://wiki.acme.io/vpn|the VPN page>",
            "see the VPN page (https://wiki.acme.io/vpn)",
        ),
        ("open <https://acme.io>", "open https://acme.io"),
        ("mail <mailto:it@acme.io|it@acme.io>", "mail it@acme.io"),
        ("in <#C0GEN|general> and <#C0RAND>", "in #general and #C0RAND"),
        ("<!here> is <!subteam^S01|@oncall> around?", "@here is @oncall around?"),
        ("due <!date^1392734382^{date}|Feb 18, 2014>", "due Feb 18, 2014"),
        ("a &lt;b&gt; &amp;&amp; c", "a <b> && c"),
        ("Tom &amp; Jerry &copy;", "Tom & Jerry &copy;"),
        ("東京の<@U0BOT>天気は？", "東京の天気は？"),
    ],
)
def test_slack_markup_becomes_plain_text_without_the_bot_mention(raw: str, plain: str) -> None:
    assert slack_to_plain(raw, bot_user_id=BOT) == plain


def _classify(event: dict[str, Any]) -> Trigger | Ignore:
    return classify(event, team="T0001", bot_user_id=BOT, bot_id="B0001")


def test_mention_in_a_channel_is_a_question_threaded_under_it() -> None:
    t = _classify(payload("app_mention"))
    assert isinstance(t, Trigger)
    assert (t.kind, t.thread_ts, t.text) == (Kind.MENTION, t.ts, "how do I reset my password?")


def test_the_message_copy_of_a_mention_is_left_to_app_mention() -> None:
    assert _classify(payload("message_channel_mention")) == Ignore("mention_via_app_mention")


def test_dm_is_direct_and_thread_reply_needs_a_known_thread() -> None:
    dm = _classify(payload("message_im"))
    assert isinstance(dm, Trigger) and dm.kind is Kind.DIRECT
    reply = _classify(payload("message_thread_reply"))
    assert isinstance(reply, Trigger)
    assert reply.kind is Kind.THREAD_REPLY and reply.needs_known_thread
    assert reply.thread_ts == "1763884800.000100"


@pytest.mark.parametrize(
    "name", ["message_changed", "message_deleted", "channel_join", "bot_message"]
)
def test_edits_deletes_joins_and_bots_are_not_questions(name: str) -> None:
    assert isinstance(_classify(payload(name)), Ignore)


@pytest.mark.parametrize(
    "broken",
    [
        {"ts": "not-a-ts"},
        {"ts": None},
        {"channel": ""},
        {"user": 42},
        {"thread_ts": "1.2.3"},
        {"text": "<@U0BOT>"},  # nothing left to ask
    ],
)
def test_malformed_events_are_ignored_not_crashed_on(broken: dict[str, Any]) -> None:
    assert isinstance(_classify(payload("app_mention", **broken)), Ignore)


def test_file_share_without_text_is_still_a_question() -> None:
    ev = payload("message_im", subtype="file_share", text="", files=[{"id": "F1"}])
    t = _classify(ev)
    assert isinstance(t, Trigger) and t.files == ({"id": "F1"},)
