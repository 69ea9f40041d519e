"""Everything this adapter takes from the Bot Framework SDK, in one place.

botbuilder-python 4.17.1 is archived (its successor is the Microsoft 365 Agents SDK,
``microsoft-agents-hosting-aiohttp``). Keeping every import of it in this module means a move to
the successor touches this file, not the adapter's logic.

What we use: the Bot Framework schema models to serialise outgoing activities exactly as the SDK
does, and the authentication constants and endorsement rule of botframework-connector. What we do
not use, and why (see README.md, Microsoft Teams): its HTTP stack. botframework-connector 4.17.1
fetches signing keys and tokens with blocking ``requests``/``msal`` calls on the event loop, and
its ``update_activity`` retries 429s silently in a worker thread, so the edit scheduler never sees
``Retry-After``. Our own aiohttp client (``connector.py``) has no retry layer at all.
"""

from __future__ import annotations

from typing import Any, cast

from botbuilder.schema import (
    ActionTypes,
    Activity,
    ActivityTypes,
    Attachment,
    CardAction,
    ChannelAccount,
    ConversationAccount,
    SuggestedActions,
)
from botframework.connector.auth import AuthenticationConstants
from botframework.connector.auth.endorsements_validator import EndorsementsValidator
from botframework.connector.channels import Channels
from msrest.serialization import Model, Serializer

MSTEAMS: str = Channels.ms_teams
BOTFRAMEWORK_ISSUER: str = AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
DEFAULT_OPENID_METADATA_URL: str = AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL
LOGIN_URL_PREFIX: str = AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX
TOKEN_ENDPOINT_PATH: str = AuthenticationConstants.TO_CHANNEL_FROM_BOT_TOKEN_ENDPOINT_PATH
MULTI_TENANT_AUTHORITY: str = AuthenticationConstants.DEFAULT_CHANNEL_AUTH_TENANT
BOTFRAMEWORK_SCOPE: str = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
SIGNING_ALGORITHMS: tuple[str, ...] = ("RS256",)
SERVICE_URL_CLAIM = "serviceurl"

MESSAGE: str = ActivityTypes.message
TYPING: str = ActivityTypes.typing
INVOKE: str = ActivityTypes.invoke
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

# One msrest serializer for every schema model. ``Model.serialize()`` builds a new one per call,
# and a serializer refers to itself through bound methods: a reference cycle per activity that
# only the garbage collector frees (README, How it works).
_SERIALIZER = Serializer(Activity._infer_class_models())  # type: ignore[no-untyped-call]


def _serialize(model: Model) -> dict[str, Any]:
    """What ``model.serialize()`` returns, through the shared serializer (as msrest does it)."""
    return cast(dict[str, Any], _SERIALIZER._serialize(model))  # type: ignore[no-untyped-call]


def endorsed(channel_id: str, endorsements: list[str]) -> bool:
    """The signing key must be endorsed for the channel the activity claims to come from."""
    return bool(EndorsementsValidator.validate(channel_id, endorsements))


def base_activity(
    *,
    bot: tuple[str, str],
    user: tuple[str, str] | None,
    conversation: dict[str, Any],
    reply_to_id: str | None,
) -> dict[str, Any]:
    """The addressing part of every activity of one reply, serialised by the SDK's schema models.

    Built once per reply and copied per call: msrest serialisation costs ~0.4 ms, and a streamed
    answer sends many activities to the same place.
    """
    activity = Activity(
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
    return _serialize(activity)


def build_activity(
    base: dict[str, Any],
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
    """One outgoing activity: ``base`` plus content (schema field names, camelCase).

    ``entities`` are passed through as given: the schema's ``Entity`` model would drop every
    field but ``type`` (streaminfo, citations and mentions all need theirs).
    """
    body = dict(base)
    body["type"] = type
    if activity_id:
        body["id"] = activity_id
    if text is not None:
        body["text"] = text
        body["textFormat"] = "markdown"
    if attachments:
        body["attachments"] = [
            _serialize(Attachment(content_type=a["contentType"], content=a["content"]))
            for a in attachments
        ]
        if attachment_layout:
            body["attachmentLayout"] = attachment_layout
    if suggested:
        body["suggestedActions"] = _serialize(
            SuggestedActions(
                actions=[CardAction(type=ActionTypes.im_back, title=q, value=q) for q in suggested]
            )
        )
    if channel_data:
        body["channelData"] = channel_data
    if entities:
        body["entities"] = entities
    return body
