"""Incoming Teams activities: validated, classified, turned into thread keys and reply places.

Nothing here talks to the network. ``parse`` validates the body with the Agents SDK's
``Activity`` model and refuses anything that is not a well-formed activity (the handler answers
400), so the rest of the adapter works with typed fields only.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass, field
from typing import Any

from adapters.teams import _sdk
from app.pipeline.model import ThreadKey

PERSONAL = "personal"
GROUP = "groupChat"
CHANNEL = "channel"
_MESSAGEID = ";messageid="
_AT_TAG = re.compile(r"<at(?:\s[^>]*)?>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_MAX_ID = 512
_CUT = "\x00"  # marks where a bot mention was (a NUL the user sent just becomes a space)
_AROUND_CUT = re.compile(r"[ \t]*\x00[ \t]*")


class BadActivity(ValueError):
    """The body is not an activity we can read; the message says which field."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """The fields of one activity the adapter uses, validated."""

    type: str
    id: str
    service_url: str
    channel_id: str
    conversation_id: str
    conversation_type: str
    tenant_id: str
    from_id: str
    from_name: str
    aad_object_id: str | None
    recipient_id: str
    recipient_name: str
    text: str = ""
    name: str | None = None
    reply_to_id: str | None = None
    entities: tuple[dict[str, Any], ...] = ()
    attachments: tuple[dict[str, Any], ...] = ()
    value: Any = None
    timestamp: float | None = None
    # ``channelData.channel.name``: Teams names the channel on some channel messages (never in
    # chats; the General channel often has none).
    channel_name: str | None = None
    raw_conversation: dict[str, Any] = field(default_factory=dict)

    @property
    def base_conversation_id(self) -> str:
        """The conversation id without the reply chain (``;messageid=``) suffix."""
        return self.conversation_id.split(_MESSAGEID, 1)[0]

    @property
    def root_id(self) -> str | None:
        """The channel reply chain's root message id, when the conversation id names one."""
        _, sep, root = self.conversation_id.partition(_MESSAGEID)
        return root if sep and root else None


def _id(value: str | None, name: str, *, required: bool = True) -> str:
    if not value:
        if required:
            raise BadActivity(f"{name} is missing")
        return ""
    if len(value) > _MAX_ID:
        raise BadActivity(f"{name} is too long")
    return value


def parse(body: Any) -> Inbound:
    """Validate a JSON body as a Bot Framework activity; raise :class:`BadActivity`.

    The SDK's ``Activity`` model checks the types of every field; what it leaves optional but
    answering needs (who sent it, to whom, where to answer) is checked here."""
    if not isinstance(body, dict):
        raise BadActivity("the body must be a JSON object")
    try:
        a = _sdk.parse_activity(body)
    except _sdk.InvalidActivity as e:
        raise BadActivity(str(e)) from None
    conversation, sender, recipient = a.conversation, a.from_property, a.recipient
    if conversation is None:
        raise BadActivity("conversation must be an object")
    if sender is None:
        raise BadActivity("from must be an object")
    if recipient is None:
        raise BadActivity("recipient must be an object")
    conv_id = _id(conversation.id, "conversation.id")
    service_url = _id(a.service_url, "serviceUrl")
    if not service_url.startswith(("https://", "http://")):
        raise BadActivity("serviceUrl must be an http(s) URL")
    channel_data = a.channel_data if isinstance(a.channel_data, dict) else {}
    tenant = conversation.tenant_id
    if not tenant:
        t = channel_data.get("tenant")
        tenant = t.get("id") if isinstance(t, dict) else None
    if not isinstance(tenant, str) or not tenant or len(tenant) > _MAX_ID:
        tenant = "default"  # the Emulator sends none
    type_ = a.type
    return Inbound(
        type=type_,
        id=_id(a.id, "id", required=type_ in ("message", "invoke")),
        service_url=service_url,
        channel_id=_id(str(a.channel_id or ""), "channelId"),
        conversation_id=conv_id,
        conversation_type=_conversation_type(
            conv_id, conversation.conversation_type, conversation.is_group, channel_data
        ),
        tenant_id=tenant,
        from_id=_id(sender.id, "from.id"),
        from_name=sender.name or "",
        aad_object_id=_id(sender.aad_object_id, "from.aadObjectId", required=False) or None,
        recipient_id=_id(recipient.id, "recipient.id"),
        recipient_name=recipient.name or "",
        text=a.text or "",
        name=a.name,
        reply_to_id=_id(a.reply_to_id, "replyToId", required=False) or None,
        entities=tuple(_sdk.dump(e) for e in a.entities or ()),
        attachments=tuple(_sdk.dump(x) for x in a.attachments or ()),
        value=a.value,
        timestamp=a.timestamp.timestamp() if a.timestamp else None,
        channel_name=_channel_name(channel_data),
        raw_conversation={
            k: v
            for k, v in (
                ("id", conv_id),
                ("conversationType", conversation.conversation_type),
                ("tenantId", conversation.tenant_id),
                ("isGroup", conversation.is_group),
            )
            if v is not None
        },
    )


def _conversation_type(
    cid: str, ctype: str | None, is_group: bool | None, channel_data: dict[str, Any]
) -> str:
    if ctype in (PERSONAL, GROUP, CHANNEL):
        return ctype
    if _MESSAGEID in cid or "channel" in channel_data or "@thread.tacv2" in cid:
        return CHANNEL
    if is_group:
        return GROUP
    return PERSONAL


def _channel_name(channel_data: dict[str, Any]) -> str | None:
    """The channel's display name when the activity carries one (optional: never refused)."""
    channel = channel_data.get("channel")
    name = channel.get("name") if isinstance(channel, dict) else None
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_ID:
        return None
    return name.strip()


def bot_mentioned(inb: Inbound) -> bool:
    return any(_is_bot_mention(e, inb.recipient_id) for e in inb.entities)


def _is_bot_mention(entity: dict[str, Any], bot_id: str) -> bool:
    mentioned = entity.get("mentioned")
    return (
        entity.get("type") == "mention"
        and isinstance(mentioned, dict)
        and mentioned.get("id") == bot_id
    )


def clean_text(inb: Inbound) -> str:
    """The user's words: the bot's own mention removed, other mentions as plain names.

    Only the exact ``text`` of each mention entity naming the bot is removed, once per entity,
    so "<at>DifyBot</at> what is DifyBot?" keeps its second "DifyBot". The SDK's
    ``Activity.remove_recipient_mention`` removes the tag too, but leaves ``&nbsp;``, HTML
    entities and other people's ``<at>`` tags in the text.
    """
    text = inb.text.replace("&nbsp;", " ")
    for e in inb.entities:
        if _is_bot_mention(e, inb.recipient_id):
            tag = e.get("text")
            if isinstance(tag, str) and tag:
                text = text.replace(tag, _CUT, 1)
    text = _AROUND_CUT.sub(" ", text)
    text = _AT_TAG.sub(lambda m: m.group(1), text)
    text = html.unescape(text).replace("\xa0", " ")
    return text.strip()


def channel_root(inb: Inbound) -> str:
    """The reply chain's root: named in the conversation id; else the message replied to
    (a reply); else the message itself (a new post)."""
    return inb.root_id or inb.reply_to_id or inb.id


def starts_thread(inb: Inbound) -> bool:
    """A new channel post (not a reply): the first message of its reply chain."""
    return inb.conversation_type == CHANNEL and channel_root(inb) == inb.id


def event_id(inb: Inbound) -> str:
    """The activity's id for deduplication (a redelivered activity has the same one)."""
    # Channel message ids are millisecond timestamps, unique per conversation only: scope them
    # so two channels posting in the same millisecond never collide.
    return f"{inb.id}@{short(inb.base_conversation_id)}"


def short(text: str) -> str:
    """A short stable digest of an id, for keys and task names."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def thread_key(inb: Inbound) -> ThreadKey:
    """Channels: the reply chain (root message id); chats: the chat itself."""
    base = inb.base_conversation_id
    if inb.conversation_type == CHANNEL:
        return ThreadKey("teams", inb.tenant_id, base, channel_root(inb))
    return ThreadKey("teams", inb.tenant_id, base, base)


@dataclass(frozen=True, slots=True)
class Place:
    """Where and as whom to answer: the saved conversation reference of one question."""

    service_url: str
    conversation_id: str  # for channels, with ``;messageid=<root>`` so replies join the chain
    conversation: dict[str, Any]
    reply_to_id: str | None
    bot: tuple[str, str]
    user: tuple[str, str]
    conversation_type: str
    tenant_id: str

    @property
    def personal(self) -> bool:
        return self.conversation_type == PERSONAL


def place(inb: Inbound) -> Place:
    conv_id = inb.conversation_id
    if inb.conversation_type == CHANNEL:
        conv_id = f"{inb.base_conversation_id}{_MESSAGEID}{channel_root(inb)}"
    conversation = dict(inb.raw_conversation)
    conversation["id"] = conv_id
    return Place(
        service_url=inb.service_url,
        conversation_id=conv_id,
        conversation=conversation,
        reply_to_id=inb.id or None,
        bot=(inb.recipient_id, inb.recipient_name),
        user=(inb.from_id, inb.from_name),
        conversation_type=inb.conversation_type,
        tenant_id=inb.tenant_id,
    )
