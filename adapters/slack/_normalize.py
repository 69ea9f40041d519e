"""Slack events -> what the bridge needs, as pure functions (no I/O, easy to test).

Slack's message markup is not Markdown but a small token format: everything special sits between
``<`` and ``>`` and the three characters ``&<>`` are HTML-escaped. We turn it into plain text the
assistant can read, and drop the mention of the bot itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.pipeline.model import Kind

# Slack escapes only these three; html.unescape would also turn "&copy;" typed by a user into ©.
_UNESCAPE = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_TOKEN = re.compile(r"<([^<>\n]{1,2000})>")

# Subtypes that still are a person writing to us; every other subtype (edits, deletes, joins,
# bot_message, channel_topic, ...) is ignored.
_ANSWERED_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})


def _unescape(text: str) -> str:
    for a, b in _UNESCAPE:
        text = text.replace(a, b)
    return text


def _token_to_text(body: str, bot_user_id: str | None) -> str:
    target, _, label = body.partition("|")
    if target.startswith("@"):
        uid = target[1:]
        if bot_user_id and uid == bot_user_id:
            return ""
        return f"@{label or uid}"
    if target.startswith("#"):
        return f"#{label or target[1:]}"
    if target.startswith("!"):
        special = target[1:]
        if label:
            return label if special.startswith(("subteam^", "date^")) else f"@{label}"
        name = special.split("^", 1)[0]
        return f"@{name}"
    if target.startswith("mailto:"):
        return label or target[len("mailto:") :]
    if label and label != target:
        return f"{label} ({target})"
    return target


def slack_to_plain(text: str, *, bot_user_id: str | None = None) -> str:
    """Convert Slack markup to plain text and remove the bot's own mention.

    >>> slack_to_plain("<@UBOT> see <https://x.io|docs> &amp; ask <@U2|ann>", bot_user_id="UBOT")
    'see docs (https://x.io) & ask @ann'
    """
    out = _TOKEN.sub(lambda m: _token_to_text(m.group(1), bot_user_id), text)
    out = _unescape(out)
    # The removed mention leaves doubled or leading spaces behind.
    return re.sub(r"[ \t]{2,}", " ", out).strip()


def mentions(text: str, user_id: str | None) -> bool:
    """Whether ``text`` (raw Slack markup) mentions ``user_id``."""
    return bool(user_id) and (f"<@{user_id}>" in text or f"<@{user_id}|" in text)


@dataclass(frozen=True, slots=True)
class Trigger:
    """A Slack event the bot should answer (or may answer, for thread replies)."""

    kind: Kind
    team: str
    channel: str
    ts: str
    thread_ts: str
    user: str
    text: str
    files: tuple[dict[str, Any], ...]
    # Thread replies without a mention are answered only in threads the bot is part of.
    needs_known_thread: bool = False


@dataclass(frozen=True, slots=True)
class Ignore:
    """Why an event is not answered (logged at debug level, never with message text)."""

    reason: str


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


def classify(
    event: dict[str, Any], *, team: str, bot_user_id: str | None, bot_id: str | None
) -> Trigger | Ignore:
    """Decide whether an ``app_mention`` or ``message`` event is a question for the bot.

    A mention in a channel arrives twice (``app_mention`` and ``message``): the ``message`` copy is
    ignored here and the ``app_mention`` one answers. Nothing is marked as seen on the ignoring path
    (marking it would drop the mention when ``message`` arrives first).
    """
    etype = _str(event, "type")
    subtype = _str(event, "subtype")
    if subtype not in _ANSWERED_SUBTYPES:
        return Ignore(f"subtype:{subtype}")
    # Any bot, ourselves included: bots answering bots loop forever.
    if event.get("bot_id") or event.get("bot_profile"):
        return Ignore("bot_message")
    user = _str(event, "user")
    if not user or (bot_user_id and user == bot_user_id):
        return Ignore("no_human_user")
    channel, ts = _str(event, "channel"), _str(event, "ts")
    if not channel or not _valid_ts(ts):
        return Ignore("malformed")
    thread_ts = _str(event, "thread_ts")
    if thread_ts and not _valid_ts(thread_ts):
        return Ignore("malformed")
    raw_text = _str(event, "text")
    files = tuple(f for f in event.get("files") or () if isinstance(f, dict))
    text = slack_to_plain(raw_text, bot_user_id=bot_user_id)
    if not text and not files:
        return Ignore("empty")
    base = {
        "team": team,
        "channel": channel,
        "ts": ts,
        "thread_ts": thread_ts or ts,
        "user": user,
        "text": text,
        "files": files,
    }
    if etype == "app_mention":
        return Trigger(kind=Kind.MENTION, **base)  # type: ignore[arg-type]
    if etype != "message":
        return Ignore(f"type:{etype}")
    channel_type = _str(event, "channel_type")
    if channel_type == "im" or channel.startswith("D"):
        return Trigger(kind=Kind.DIRECT, **base)  # type: ignore[arg-type]
    if mentions(raw_text, bot_user_id):
        return Ignore("mention_via_app_mention")
    if thread_ts and thread_ts != ts:
        return Trigger(kind=Kind.THREAD_REPLY, needs_known_thread=True, **base)  # type: ignore[arg-type]
    return Ignore("not_addressed")


_TS = re.compile(r"^\d{1,12}\.\d{1,9}$")


def _valid_ts(ts: str) -> bool:
    return bool(_TS.match(ts))


def ts_to_time(ts: str) -> float:
    """Slack's ``ts`` is the send time in seconds; it orders messages in a thread."""
    try:
        return float(ts)
    except ValueError:
        return 0.0
