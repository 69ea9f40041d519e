"""Everything this adapter takes from the Microsoft 365 Agents SDK, in one place.

We use its activity models (``microsoft-agents-activity``, pydantic): every activity that comes
in is validated by ``Activity.model_validate`` and every activity that goes out is built from its
models and serialised by ``model_dump``, as the SDK's own ``ConnectorClient`` does. We do not use
its hosting, connector, MSAL or streaming parts: each is weaker than what this adapter needs
(docs/teams.md, Which SDK). Keeping every import of the SDK here means an SDK
upgrade touches this file, not the adapter's logic.

The Bot Framework protocol constants below are the SDK's values (``AuthenticationConstants`` in
``microsoft-agents-hosting-core``), copied so that the models are all we install.
"""

from __future__ import annotations

import logging
from typing import Any

from microsoft_agents.activity import (
    ActionTypes,
    Activity,
    ActivityTypes,
    AIEntity,
    Attachment,
    CardAction,
    ChannelAccount,
    Channels,
    ConversationAccount,
    Entity,
    Mention,
    StreamInfo,
    SuggestedActions,
)
from pydantic import ValidationError

MSTEAMS: str = Channels.ms_teams.value
BOTFRAMEWORK_ISSUER = "https://api.botframework.com"
DEFAULT_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
LOGIN_URL_PREFIX = "https://login.microsoftonline.com/"
TOKEN_ENDPOINT_PATH = "/oauth2/v2.0/token"  # noqa: S105 (a URL path, not a secret)
MULTI_TENANT_AUTHORITY = "botframework.com"
BOTFRAMEWORK_SCOPE = "https://api.botframework.com"
SIGNING_ALGORITHMS: tuple[str, ...] = ("RS256",)
SERVICE_URL_CLAIM = "serviceurl"

MESSAGE: str = ActivityTypes.message.value
TYPING: str = ActivityTypes.typing.value
INVOKE: str = ActivityTypes.invoke.value
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

# What the Bot Connector expects on the wire (and what the SDK's ConnectorClient sends): the
# camelCase aliases, only the fields we set, no nulls.
_DUMP: dict[str, Any] = {
    "by_alias": True,
    "exclude_unset": True,
    "exclude_none": True,
    "mode": "json",
}
# Typed entities serialise exactly as Teams documents them; the generic ``Entity`` would write
# ``@type`` twice (also as ``atType``).
_ENTITY_TYPES: dict[str, type[Entity]] = {
    "streaminfo": StreamInfo,
    "https://schema.org/Message": AIEntity,
    "mention": Mention,
}

# The SDK logs every rejected activity at ERROR with a traceback; a bad request is the sender's
# problem and is answered 400 with the field named (activities.parse), so keep that quiet.
logging.getLogger("microsoft_agents.activity.activity").setLevel(logging.CRITICAL)


class InvalidActivity(ValueError):
    """The SDK's model refused the body; the message names the first bad field."""


def parse_activity(body: dict[str, Any]) -> Activity:
    """An incoming activity validated by the SDK's model (raises :class:`InvalidActivity`)."""
    try:
        return Activity.model_validate(body)
    except (ValidationError, ValueError, TypeError) as e:
        raise InvalidActivity(_first_error(e)) from None


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError) and e.errors():
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where or 'activity'}: {err.get('msg', 'invalid')}"
    return str(e) or "invalid activity"


def dump(model: Activity | Entity | Attachment) -> dict[str, Any]:
    """A model as wire JSON."""
    out: dict[str, Any] = model.model_dump(**_DUMP)
    return out


def endorsed(channel_id: str, endorsements: list[str] | tuple[str, ...]) -> bool:
    """The signing key must be endorsed for the channel the activity claims to come from.

    Stricter than botframework-connector's ``EndorsementsValidator``, which lets an activity
    without a ``channelId`` pass (and the Agents SDK checks no endorsement at all)."""
    return bool(channel_id) and channel_id in endorsements


def base_activity(
    *,
    bot: tuple[str, str],
    user: tuple[str, str] | None,
    conversation: dict[str, Any],
    reply_to_id: str | None,
) -> Activity:
    """The addressing part of every activity of one reply, validated once by the SDK's models
    and copied per call (a streamed answer sends many activities to the same place)."""
    return Activity(
        type=MESSAGE,
        from_property=ChannelAccount(id=bot[0], name=bot[1]),
        recipient=ChannelAccount(id=user[0], name=user[1]) if user else None,
        conversation=ConversationAccount(
            id=conversation.get("id"),
            conversation_type=conversation.get("conversationType"),
            tenant_id=conversation.get("tenantId"),
            is_group=conversation.get("isGroup"),
        ),
        channel_id=MSTEAMS,
        reply_to_id=reply_to_id,
    )


def build_activity(
    base: Activity,
    *,
    type: str,
    text: str | None = None,
    entities: list[dict[str, Any]] | None = None,
    channel_data: dict[str, Any] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    suggested: list[str] | None = None,
    activity_id: str | None = None,
    attachment_layout: str | None = None,
) -> dict[str, Any]:
    """One outgoing activity as wire JSON: ``base`` plus content, each part an SDK model.

    ``entities`` and ``attachments`` come in wire shape (camelCase) and are validated into the
    SDK's typed entities and ``Attachment``; the addressing was validated by ``base_activity``.
    """
    update: dict[str, Any] = {"type": type}
    if activity_id:
        update["id"] = activity_id
    if text is not None:
        update["text"] = text
        update["text_format"] = "markdown"
    if attachments:
        update["attachments"] = [Attachment.model_validate(a) for a in attachments]
        if attachment_layout:
            update["attachment_layout"] = attachment_layout
    if suggested:
        update["suggested_actions"] = SuggestedActions(
            actions=[CardAction(type=ActionTypes.im_back, title=q, value=q) for q in suggested]
        )
    if channel_data:
        update["channel_data"] = channel_data
    if entities:
        update["entities"] = [_entity(e) for e in entities]
    return dump(base.model_copy(update=update))


def _entity(raw: dict[str, Any]) -> Entity:
    cls = _ENTITY_TYPES.get(str(raw.get("type")), Entity)
    return cls.model_validate(raw)
