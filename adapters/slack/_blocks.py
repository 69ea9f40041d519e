"""Block Kit for answers: the text as ``markdown`` blocks, a status line, sources and buttons.

Button values carry what the click handler needs (the Dify message id, the suggested question), so
a click on any replica works without a Redis lookup. Values are JSON, at most 2,000 characters.
"""

from __future__ import annotations

import json
import re
from typing import Any

from adapters.slack import render
from app.pipeline.model import ReplyExtras

Block = dict[str, Any]

# Slack: markdown blocks share 12,000 characters per payload and all blocks ~13.2k; stay below with
# room for sources and buttons. The `text` fallback is cut at ~4,000 (msg_too_long).
PART_LIMIT = 11_000
FALLBACK_LIMIT = 3_000
_BUTTON_TEXT = 75
_VALUE_LIMIT = 2_000

ACTION_STOP = "dify_stop"
ACTION_LIKE = "dify_like"
ACTION_DISLIKE = "dify_dislike"
ACTION_SUGGEST = "dify_suggest"  # + "_<n>": action ids must be unique within a message
ACTION_RESET = "dify_new_topic"
# Slack's feedback_buttons element (agent messages): one action id, the rating in the value.
ACTION_FEEDBACK = "dify_feedback"
FEEDBACK_BLOCK = "dify_feedback"
RESET_BLOCK = "dify_topic"


def split(md: str, *, final: bool = True) -> list[str]:
    """Split an answer into message-sized Markdown parts, never inside a fenced code block.

    Tables become aligned code blocks first (Slack's markdown block has no tables), so the
    parts are exactly the texts of the ``markdown`` blocks, one per message.
    """
    # final=False: the answer is still streaming, its unfinished end is repaired for display.
    parts = [b["text"] for b in render.slack_answer_blocks(md, limit=PART_LIMIT, final=final)]
    return parts or [md]


# The `text` of a message whose Markdown has nothing readable yet (an answer that starts with a
# code fence or a table, still streaming): notifications and screen readers read this, so it is
# never empty or a lone space.
WRITING_FALLBACK = "The assistant is writing an answer…"
ANSWER_FALLBACK = "The assistant's answer (open the message to see it)."
_MARKUP = re.compile(r"[`*_~#>|=\-─\s]+")


def fallback_text(md: str, *, final: bool = True, default: str | None = None) -> str:
    """The ``text`` field: shown in notifications and by clients that cannot draw blocks.

    Never blank: when the Markdown renders to nothing readable, its words without markup, else
    ``default`` (else a sentence saying an answer is being written or is in the message)."""
    text = render.to_slack_mrkdwn(md, final=final) if md.strip() else ""
    if not _MARKUP.sub("", text):
        text = (
            _MARKUP.sub(" ", md).strip()
            or default
            or (ANSWER_FALLBACK if final else WRITING_FALLBACK)
        )
    if len(text) > FALLBACK_LIMIT:
        text = text[: FALLBACK_LIMIT - 1] + "…"
    return text


def answer_blocks(md: str) -> list[Block]:
    """One part of an answer (see :func:`split`) as a ``markdown`` block: Slack renders it."""
    return [{"type": "markdown", "text": md}] if md.strip() else []


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _button(text: str, action_id: str, value: dict[str, Any], *, style: str | None = None) -> Block:
    b: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:_BUTTON_TEXT], "emoji": True},
        "action_id": action_id,
        "value": json.dumps(value, separators=(",", ":"))[:_VALUE_LIMIT],
    }
    if style:
        b["style"] = style
    return b


def streaming_blocks(md: str, status: str | None, *, stop_button: bool) -> list[Block]:
    """An answer still arriving: the text so far, the live status, a Stop button."""
    blocks = answer_blocks(md) if md.strip() else []
    if status or not blocks:
        blocks.append(_context(f"_{status or 'Thinking…'}_"))
    if stop_button:
        blocks.append(
            {
                "type": "actions",
                "block_id": "dify_streaming",
                "elements": [_button("Stop", ACTION_STOP, {"k": "stop"}, style="danger")],
            }
        )
    return blocks


def final_extras_blocks(
    extras: ReplyExtras, *, feedback: bool, suggested: bool, reset: bool = False
) -> list[Block]:
    """Sources, notices and buttons under the last part of a finished answer.

    ``reset``: a "New topic" button, shown only under answers that belong to a Dify
    conversation (not under notes such as the reset confirmation itself).
    """
    blocks: list[Block] = []
    if extras.sources:
        src = render.slack_sources_block(extras.sources)
        if src:
            blocks.append(src)
    for notice in extras.notices:
        blocks.append(_context(f"_{render.to_slack_mrkdwn(notice)}_"))
    buttons: list[Block] = []
    if feedback and extras.dify_message_id:
        ref = {"m": extras.dify_message_id, "r": extras.route or ""}
        buttons.append(_button("👍", ACTION_LIKE, ref))
        buttons.append(_button("👎", ACTION_DISLIKE, ref))
    if buttons:
        blocks.append({"type": "actions", "block_id": "dify_feedback", "elements": buttons})
    if suggested and extras.suggested:
        blocks.append(
            {
                "type": "actions",
                "block_id": "dify_suggested",
                "elements": [
                    _button(q, f"{ACTION_SUGGEST}_{i}", {"q": q[:1500]})
                    for i, q in enumerate(extras.suggested[:5])
                    if q.strip()
                ],
            }
        )
    if reset and extras.conversation_id:
        blocks.append(
            {
                "type": "actions",
                "block_id": RESET_BLOCK,
                "elements": [_button("New topic", ACTION_RESET, {"k": "reset"})],
            }
        )
    return [b for b in blocks if b.get("type") != "actions" or b.get("elements")]


def feedback_buttons_block(message_id: str, route: str | None) -> Block:
    """Slack's thumbs for AI answers: a ``context_actions`` block with ``feedback_buttons``.

    Each button's value carries the Dify message id, the route and the rating, so the click
    handler needs no lookup (slack_sdk ``FeedbackButtonObject``: text ≤ 75, value ≤ 2,000).
    """

    def button(text: str, label: str, rating: str) -> Block:
        value = {"m": message_id, "r": route or "", "v": rating}
        return {
            "text": {"type": "plain_text", "text": text, "emoji": True},
            "accessibility_label": label,
            "value": json.dumps(value, separators=(",", ":"))[:_VALUE_LIMIT],
        }

    return {
        "type": "context_actions",
        "block_id": FEEDBACK_BLOCK,
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": ACTION_FEEDBACK,
                "positive_button": button("👍", "Good answer", "like"),
                "negative_button": button("👎", "Bad answer", "dislike"),
            }
        ],
    }


def error_blocks(partial_and_message: str, ref: str) -> list[Block]:
    """A failure as the user sees it: what happened, in plain words, and the reference id."""
    blocks = answer_blocks(partial_and_message) if partial_and_message.strip() else []
    blocks.append(_context(f"Reference: `{ref}` (give this to your admin if it keeps happening)"))
    return blocks


def feedback_done_blocks(blocks: list[Block], rating: str, user: str) -> list[Block]:
    """Replace the thumbs with a note of who rated, keeping everything else of the message."""
    out: list[Block] = []
    for b in blocks:
        if b.get("block_id") == "dify_feedback":
            icon = "👍" if rating == "like" else "👎"
            out.append(_context(f"{icon} Feedback from <@{user}>, thank you."))
        else:
            out.append(b)
    return out


def without_reset_button(blocks: list[Block]) -> list[Block]:
    """The clicked answer without its "New topic" row (one click is enough), all else kept."""
    return [b for b in blocks if b.get("block_id") != RESET_BLOCK]


def reset_done_blocks(text: str, user: str) -> list[Block]:
    """The note in the thread after a "New topic" click: what happens next, and who asked."""
    blocks = answer_blocks(text)
    if user:
        blocks.append(_context(f"New topic started by <@{user}>."))
    return blocks


def parse_value(raw: Any) -> dict[str, Any]:
    """A button value back to a dict; anything malformed becomes ``{}`` (never trust the wire)."""
    if not isinstance(raw, str) or len(raw) > _VALUE_LIMIT:
        return {}
    try:
        v = json.loads(raw)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}
