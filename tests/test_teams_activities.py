"""Teams activities as they arrive: the question text, the thread, and refusals of bad input."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.teams import activities as acts
from adapters.teams.auth import is_loopback_url
from tests.fakes.bot_connector import BOT_ID, PAYLOADS, TENANT_ID


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text("utf-8"))
    return data


def with_text(name: str, text: str, *entities: dict[str, Any]) -> acts.Inbound:
    body = payload(name)
    body["text"] = text
    if entities:
        body["entities"] = list(entities)
    return acts.parse(body)


BOT_MENTION = {"type": "mention", "text": "<at>DifyBot</at>", "mentioned": {"id": BOT_ID}}


def test_recorded_channel_mention_becomes_the_plain_question() -> None:
    inb = acts.parse(payload("channel_mention"))
    assert acts.bot_mentioned(inb)
    assert acts.clean_text(inb) == "What is our travel policy?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<at>DifyBot</at> what is DifyBot?", "what is DifyBot?"),
        ("Hey <at>DifyBot</at>, compare A &amp; B", "Hey , compare A & B"),
        ("<at>DifyBot</at>&nbsp;&lt;script&gt; is text", "<script> is text"),
        ("  <at>DifyBot</at>  ", ""),
    ],
)
def test_only_the_bots_own_mention_is_removed(text: str, expected: str) -> None:
    assert acts.clean_text(with_text("channel_mention", text, BOT_MENTION)) == expected


def test_mentions_of_people_stay_as_their_names() -> None:
    grace = {"type": "mention", "text": "<at>Grace Hopper</at>", "mentioned": {"id": "29:grace"}}
    inb = with_text(
        "channel_mention", "<at>DifyBot</at> ask <at>Grace Hopper</at> first", BOT_MENTION, grace
    )
    assert acts.clean_text(inb) == "ask Grace Hopper first"


def test_a_mention_of_someone_else_named_like_the_bot_is_not_a_bot_mention() -> None:
    impostor = {"type": "mention", "text": "<at>DifyBot</at>", "mentioned": {"id": "29:someone"}}
    inb = with_text("group_chat_mention", "<at>DifyBot</at> hi", impostor)
    assert not acts.bot_mentioned(inb)
    assert acts.clean_text(inb) == "DifyBot hi"


def test_channel_post_and_its_replies_share_one_thread() -> None:
    root = acts.parse(payload("channel_mention"))
    reply = acts.parse(payload("channel_thread_reply"))
    assert acts.thread_key(root) == acts.thread_key(reply)
    key = acts.thread_key(root)
    assert key.platform == "teams" and key.workspace == TENANT_ID
    assert key.channel == "19:6d1f0c5e2b1b4f0e9a0d@thread.tacv2"
    assert key.thread == "1763881200000"
    place = acts.place(reply)
    assert place.conversation_id == "19:6d1f0c5e2b1b4f0e9a0d@thread.tacv2;messageid=1763881200000"
    assert place.reply_to_id == reply.id and place.bot == (BOT_ID, "DifyBot")


def test_only_a_new_channel_post_starts_its_thread() -> None:
    assert acts.starts_thread(acts.parse(payload("channel_mention")))
    assert not acts.starts_thread(acts.parse(payload("channel_thread_reply")))
    # A chat is one long thread: any message may have an earlier one still on its way.
    assert not acts.starts_thread(acts.parse(payload("personal_message")))
    assert not acts.starts_thread(acts.parse(payload("group_chat_mention")))


def test_channel_reply_without_messageid_still_finds_its_root() -> None:
    body = payload("channel_thread_reply")
    body["conversation"]["id"] = "19:6d1f0c5e2b1b4f0e9a0d@thread.tacv2"
    inb = acts.parse(body)
    assert acts.thread_key(inb).thread == "1763881200000"


def test_chats_are_their_own_thread() -> None:
    for name in ("personal_message", "group_chat_mention"):
        inb = acts.parse(payload(name))
        key = acts.thread_key(inb)
        assert key.thread == key.channel == inb.conversation_id
    assert acts.place(acts.parse(payload("personal_message"))).personal


def test_two_people_in_separate_personal_chats_never_share_a_thread() -> None:
    a = payload("personal_message")
    b = payload("personal_message")
    b["conversation"]["id"] = "a:1SomeoneElse"
    assert acts.thread_key(acts.parse(a)) != acts.thread_key(acts.parse(b))


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda b: b.pop("conversation"), "conversation must be an object"),
        (lambda b: b.update(serviceUrl="ftp://x"), "serviceUrl must be an http(s) URL"),
        (lambda b: b.update(text=["x"]), "text: Input should be a valid string"),
        (lambda b: b["from"].pop("id"), "from.id is missing"),
        (lambda b: b.update(id="x" * 600), "id is too long"),
        (lambda b: b.update(entities="nope"), "entities: Value error"),
        (lambda b: b.update(entities=[5]), "entities: Value error"),
        (lambda b: b.update(conversation="19:x"), "conversation: Input should be a valid dict"),
        (lambda b: b["conversation"].update(id=""), "conversation.id: String should have"),
        (lambda b: b.update(timestamp="yesterday"), "timestamp: Input should be a valid"),
    ],
)
def test_malformed_activities_are_refused_with_the_field_named(mutate: Any, problem: str) -> None:
    body = payload("channel_mention")
    mutate(body)
    with pytest.raises(acts.BadActivity, match=re.escape(problem)):
        acts.parse(body)


def test_timestamp_orders_questions_and_missing_tenant_is_tolerated() -> None:
    body = payload("personal_message")
    del body["conversation"]["tenantId"]
    del body["channelData"]
    inb = acts.parse(body)
    assert inb.timestamp == datetime(2026, 11, 23, 7, 3, tzinfo=UTC).timestamp()
    assert inb.tenant_id == "default"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:3978/", True),
        ("http://localhost:9000", True),
        ("http://[::1]:80/x", True),
        ("https://smba.trafficmanager.net/emea/", False),
        ("http://127.0.0.1.nip.io/", False),
        ("http://10.1.2.3/", False),
        ("file:///etc/passwd", False),
        ("http://[::1", False),
    ],
)
def test_local_mode_recognises_only_this_machine(url: str, ok: bool) -> None:
    assert is_loopback_url(url) is ok


def test_outgoing_activities_are_the_agents_sdk_models_on_the_wire() -> None:
    # Built from the SDK's models and serialised as its ConnectorClient does; a streamed answer
    # builds many of them, so none may leave reference cycles for the garbage collector.
    import gc

    from microsoft_agents.activity import Activity

    from adapters.teams import _sdk

    conv = {
        "id": "19:abc@thread.tacv2;messageid=1",
        "conversationType": "channel",
        "tenantId": TENANT_ID,
        "isGroup": True,
    }
    card = {"contentType": _sdk.ADAPTIVE_CARD, "content": {"type": "AdaptiveCard", "body": []}}
    ai_label = {
        "type": "https://schema.org/Message",
        "@type": "Message",
        "@context": "https://schema.org",
        "additionalType": ["AIGeneratedContent"],
    }
    stream = {
        "type": "streaminfo",
        "streamType": "streaming",
        "streamSequence": 2,
        "streamId": "s-1",
    }

    gc.collect()
    gc.disable()
    try:
        base = _sdk.base_activity(
            bot=(BOT_ID, "Dify"), user=("29:user", "Ada"), conversation=conv, reply_to_id="1"
        )
        activity = _sdk.build_activity(
            base,
            type=_sdk.MESSAGE,
            text="Hello",
            attachments=[card],
            suggested=["More?"],
            entities=[ai_label, stream],
            channel_data={"feedbackLoop": {"type": "default"}},
        )
        left_in_cycles = gc.collect()
    finally:
        gc.enable()
    assert left_in_cycles == 0
    assert activity == {
        "type": "message",
        "channelId": "msteams",
        "from": {"id": BOT_ID, "name": "Dify"},
        "recipient": {"id": "29:user", "name": "Ada"},
        "conversation": conv,
        "replyToId": "1",
        "text": "Hello",
        "textFormat": "markdown",
        "attachments": [card],
        "suggestedActions": {"actions": [{"type": "imBack", "title": "More?", "value": "More?"}]},
        "entities": [ai_label, stream],
        "channelData": {"feedbackLoop": {"type": "default"}},
    }
    # What Teams (and the SDK) reads back is what we meant to send.
    again = Activity.model_validate(activity)
    assert (
        again.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
        == activity
    )
