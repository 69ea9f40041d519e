"""Dify Markdown -> the activities Teams shows: text parts, table cards, citations, AI label.

Limits (shared/docs/platform-limits.md): a message may hold about 100 KB of UTF-16 with everything;
we split text at ``PART_LIMIT`` characters (never inside a code block:
``app.render.markdown.split_markdown``) so a part plus its card and entities stays far below
80 KB. Teams' text Markdown has no tables, so in group chats and channels tables travel in one
Adaptive Card (schema 1.5) on the last part; each part is one Teams message (see :func:`layout`).
Citations: one root ``schema.org/Message`` entity, at most 20 claims, names <= 80 and abstracts <=
160 characters, with ``[n]`` markers in the text.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from adapters.teams import _sdk, render
from app.pipeline.forms import FormResult, HumanForm, Outcome
from app.pipeline.model import OutFile, ReplyExtras, Source

PART_LIMIT = 20_000
# Teams refuses activities above ~100 KB (UTF-16, everything included); stay under 80 KB with
# room for the addressing fields and channelData.
MAX_PART_BYTES = 76_000
MAX_TEXT_BYTES = 60_000  # leaves room for the citations entity on the same message
STREAM_TEXT_LIMIT = 24_000  # stop streaming updates beyond this; the final message carries all
MAX_CITATIONS = 20
CITATION_NAME = 80
CITATION_ABSTRACT = 160
# The "New topic" button: an Adaptive Card whose Action.Submit comes back as a message activity
# with no text and this ``value`` (Teams copies the action's ``data`` into it).
RESET_VALUE: dict[str, str] = {"difyBridge": "newTopic"}
RESET_TITLE = "New topic"
RESET_ACTIONS: dict[str, Any] = {
    "type": "ActionSet",
    "actions": [{"type": "Action.Submit", "title": RESET_TITLE, "data": dict(RESET_VALUE)}],
}
# The "Stop" button of an answer being edited in place (1:1 streams have Teams' own Stop).
STOP_VALUE: dict[str, str] = {"difyBridge": "stop"}
STOP_TITLE = "Stop"
MAX_CARD_BYTES = 60_000
AI_LABEL: dict[str, Any] = {
    "type": "https://schema.org/Message",
    "@type": "Message",
    "@context": "https://schema.org",
    "additionalType": ["AIGeneratedContent"],
}
STOP_CARD: dict[str, Any] = {
    "contentType": _sdk.ADAPTIVE_CARD,
    "content": {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": [
            {
                "type": "ActionSet",
                "actions": [
                    {"type": "Action.Submit", "title": STOP_TITLE, "data": dict(STOP_VALUE)}
                ],
            }
        ],
    },
}


@dataclass(slots=True)
class Part:
    """One outgoing message of a (possibly split) answer: text and at most one card."""

    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    channel_data: dict[str, Any] | None = None
    suggested: list[str] = field(default_factory=list)


def layout(part: Part) -> str | None:
    """``attachmentLayout`` that keeps a part one message.

    Teams shows a message's text and each attachment of a ``list`` layout as separate messages,
    and refuses an update that would become several (400 BadSyntax "Activity resulted into
    multiple skype activities"; the Agents Playground applies the same rule). A ``carousel`` is
    one message, so text with its one card goes as a carousel."""
    return "carousel" if part.attachments and part.text else None


def interim(text: str, status: str | None = None) -> str:
    """What a growing answer looks like in an edited message (status line in italics below).

    The same conversion as the final message (tables become the "see table below" marker whose
    card comes with the final message), with half-written Markdown healed. Empty while nothing
    visible has arrived (an answer starting with ``## `` or a table row): the placeholder stays."""
    shown = render.to_teams_markdown(text, tables="card") if text else ""
    if status:
        line = f"_{_one_line(status)}_"
        shown = f"{shown}\n\n{line}" if shown.strip() else line
    return shown if shown.strip() else ""


def streamable(text: str) -> str:
    """The part of a growing answer a 1:1 stream may show, rendered as the final message is.

    Teams wants every streamed text to extend the previous one, and healing half-written
    Markdown would rewrite the end. So the stream shows complete blocks (up to the last blank
    line outside a code fence; tables as aligned text, as in the final 1:1 message), plus the
    whole words of the block being written when it is plain prose or a plain list, whose
    rendering cannot change as it grows. The caller still checks that the result extends what
    was streamed."""
    cut = _stable_end(text)
    tail = text[cut:]
    words = _plain_words(tail)
    if words:
        cut += len(words)
    if cut <= 0:
        return ""
    return render.to_teams_markdown(text[:cut], final=True).rstrip()


_LIST_MARK = re.compile(r"^(?:[-+] |\d{1,9}[.)] )")
_NOT_PLAIN = frozenset("*_`~[]<>!\\|&#=")


def _plain_words(tail: str) -> str:
    """The complete words of an unfinished block, when it is plain prose (or a plain list):
    no Markdown a later character could turn into something else; else ""."""
    if any(c in _NOT_PLAIN for c in tail):
        return ""
    words = tail[: max(tail.rfind(" "), tail.rfind("\n"), 0)]
    if not _plain_lines(words) and "\n" in words:
        words = words[: words.rfind("\n")]  # a list item just being started
    return words if _plain_lines(words) else ""


def _plain_lines(words: str) -> bool:
    if not words.strip():
        return False
    for line in words.split("\n"):
        rest = _LIST_MARK.sub("", line, count=1)
        if not rest or rest[0].isspace() or rest[0] in "-+":
            return False  # indented code, a nested marker or a setext underline in the making
    return True


def _stable_end(text: str) -> int:
    """Offset just after the last blank line that is not inside a fenced code block."""
    fence = ""
    best = 0
    pos = 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith("\n"):
            break  # the line is still being written
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~")):
            mark = stripped[0]
            fence = mark * (len(stripped) - len(stripped.lstrip(mark)))
            continue
        if not stripped:
            best = pos
    return best


def plain(text: str) -> str:
    """A short message of the bot's own, rendered for Teams."""
    return render.to_teams_markdown(text, final=True)


def error_text(message: str, ref: str) -> str:
    return f"{render.to_teams_markdown(message, final=True)}\n\n_Reference: {ref}_"


def final_parts(
    text: str,
    extras: ReplyExtras,
    *,
    feedback: bool,
    suggestions: bool,
    reset: bool = False,
    file_origin: str | None = None,
    personal: bool = False,
) -> list[Part]:
    """The final answer as one message (several only when it exceeds Teams' size limit).

    Group chats and channels: the text (Teams Markdown, ``[n]`` citation markers, AI label,
    feedback) plus at most one Adaptive Card holding every table and the "New topic" button,
    sent as a carousel (see :func:`layout`). 1:1 chats (``personal``): the final message of a
    stream can carry no card without Teams showing it as a second message, so tables are
    aligned text and "New topic" is a suggested action (one of the route's reset words).
    Buttons and sources ride on the last message.

    ``reset``: the route offers a "New topic" button; it is shown only under an answer that
    belongs to a Dify conversation (not under the reset confirmation or one-shot answers).
    ``file_origin``: the Dify API's origin; files Dify produces are links under the text, and
    Dify gives relative URLs (``/files/tools/...``) when its ``FILES_URL`` is not set."""
    tables = [] if personal else render.extract_tables(text)
    table_mode: Literal["text", "card"] = "card" if tables else "text"
    notes = [f"_{_one_line(n)}_" for n in extras.notices if n.strip()]
    files = [_file_link(f, file_origin) for f in extras.files if f.url]
    citations = _citations(extras.sources)
    tail = "\n\n".join(x for x in ("\n".join(files), "\n".join(notes)) if x)
    md = text.rstrip()
    if tail:
        md = f"{md}\n\n{tail}" if md.strip() else tail
    chunks = _render_parts(md, table_mode, PART_LIMIT) or [""]
    if citations:
        # Added after rendering: the renderer would escape the brackets Teams looks for.
        markers = " ".join(f"[{c['position']}]" for c in citations)
        chunks[-1] = f"{chunks[-1]}\n\n{markers}" if chunks[-1] else markers
    parts = [Part(text=c, entities=[dict(AI_LABEL)]) for c in chunks]
    if citations:
        # The claims belong with the text holding their [n] markers.
        parts[-1].entities = [{**AI_LABEL, "citation": citations}]
    body: list[dict[str, Any]] = []
    for t in tables:
        body += render.teams_table_card(t)["body"]
    if reset and extras.conversation_id and not personal:
        body.append(RESET_ACTIONS)
    cards = _pack(body)
    if cards and part_bytes(parts[-1]) + _json_bytes(cards[0]) <= MAX_PART_BYTES:
        parts[-1].attachments = [cards.pop(0)]
    # Too big together: the rest in card-only messages (one card is at most ~60 KB).
    parts += [Part(text="", attachments=[c], entities=[dict(AI_LABEL)]) for c in cards]
    last = parts[-1]
    if feedback and extras.dify_message_id:
        last.channel_data = {"feedbackLoop": {"type": "default"}}
    if suggestions and extras.suggested:
        last.suggested = [s[:200] for s in extras.suggested[:5] if s.strip()]
    if reset and extras.conversation_id and personal:
        last.suggested.append(RESET_TITLE)
    return parts


def _pack(body: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Card elements into as few cards as fit ``MAX_CARD_BYTES`` each, in order."""
    cards: list[list[dict[str, Any]]] = []
    size = 0
    for element in body:
        n = _json_bytes(element)
        if not cards or size + n > MAX_CARD_BYTES:
            cards.append([])
            size = 0
        cards[-1].append(element)
        size += n
    return [_card(b, []) for b in cards]


def reset_card() -> dict[str, Any]:
    """The "New topic" button alone as an attachment."""
    return _card([RESET_ACTIONS], [])


def stop_card() -> dict[str, Any]:
    """The "Stop" button under an answer that is still being written (group chats, channels)."""
    return STOP_CARD


def is_reset_click(value: Any) -> bool:
    """The ``value`` of a click on the "New topic" button."""
    return isinstance(value, dict) and all(value.get(k) == v for k, v in RESET_VALUE.items())


def is_stop_click(value: Any) -> bool:
    """The ``value`` of a click on the "Stop" button."""
    return isinstance(value, dict) and all(value.get(k) == v for k, v in STOP_VALUE.items())


def _render_parts(md: str, tables: Literal["text", "card"], limit: int) -> list[str]:
    """Render, then split what will be sent (Teams Markdown is Markdown, so code fences are
    closed and reopened at cuts). A part still too big in UTF-16 bytes (emoji, CJK) is split
    again with half the limit."""
    return _split(render.to_teams_markdown(md, tables=tables, final=True), limit)


def _split(text: str, limit: int) -> list[str]:
    out: list[str] = []
    for chunk in render.split_markdown(text, limit):
        if render.utf16_len(chunk) * 2 > MAX_TEXT_BYTES and limit > 1000:
            out += _split(chunk, limit // 2)
        else:
            out.append(chunk)
    return out


def part_bytes(part: Part) -> int:
    """Size of a part as Teams counts it (UTF-16 bytes), without the addressing fields."""
    return (
        render.utf16_len(part.text) * 2
        + sum(_json_bytes(a) for a in part.attachments)
        + sum(_json_bytes(e) for e in part.entities)
    )


def _json_bytes(obj: Any) -> int:
    return render.utf16_len(json.dumps(obj, ensure_ascii=False)) * 2


def _citations(sources: list[Source]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, s in enumerate(sources[:MAX_CITATIONS], start=1):
        appearance: dict[str, Any] = {
            "@type": "DigitalDocument",
            "name": _clip(s.title or f"Source {n}", CITATION_NAME),
            "abstract": _clip(_one_line(s.snippet) or s.title or "Source", CITATION_ABSTRACT),
        }
        if s.url and s.url.startswith(("https://", "http://")):
            appearance["url"] = s.url
        out.append({"@type": "Claim", "position": n, "appearance": appearance})
    return out


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _file_link(f: OutFile, origin: str | None) -> str:
    """A Markdown link to a file Dify produced. A relative URL that cannot be resolved stays
    relative: the renderer then shows the name without a (broken) link."""
    url = f.url
    if not urlsplit(url).scheme and origin:
        url = urljoin(origin.rstrip("/") + "/", url)
    return f"[{f.name or _file_label(url)}]({url})"


def _file_label(url: str) -> str:
    tail = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or "file"


# ------------------------------------------------------------------- Human Input forms

# A form's buttons: ``Action.Submit`` whose click comes back as a message activity with this
# ``value`` plus every input's value under its id (``field:<variable>``).
FORM_VALUE = "form"
FIELD_PREFIX = "field:"
_FORM_STYLES = {"primary": "positive"}  # Adaptive Cards: default | positive | destructive


def form_part(form: HumanForm, notices: list[str] | None = None) -> Part:
    """A Dify Human Input form as an Adaptive Card (inputs and one button per action)."""
    return Part(text="", attachments=[_card(_form_body(form, notices or []), _form_actions(form))])


def closed_form_part(form: HumanForm, result: FormResult) -> Part:
    """The form once decided (who chose what) or closed (why): no inputs, no buttons."""
    line = result.message
    if result.outcome is Outcome.ALREADY_DECIDED and result.decided_by:
        line = f"Decided by {result.decided_by}" + (
            f": “{result.action_title}”." if result.action_title else "."
        )
    icon = "✅" if result.outcome in (Outcome.ACCEPTED, Outcome.ALREADY_DECIDED) else "ℹ️"
    body = _form_head(form, [])
    body.append({"type": "TextBlock", "text": f"{icon} {line}", "wrap": True, "weight": "Bolder"})
    return Part(text="", attachments=[_card(body, [])])


def parse_form_click(value: Any) -> tuple[str, str, dict[str, str]] | None:
    """(form key, action id, field values) of a click on a form's button, else None."""
    if not isinstance(value, dict) or value.get("difyBridge") != FORM_VALUE:
        return None
    key, action = value.get("f"), value.get("a")
    if not (isinstance(key, str) and key and isinstance(action, str) and action):
        return None
    values = {
        k[len(FIELD_PREFIX) :]: str(v)[:10_000]
        for k, v in value.items()
        if isinstance(k, str) and k.startswith(FIELD_PREFIX) and isinstance(v, str | int | float)
    }
    return key, action, values


def _form_head(form: HumanForm, notices: list[str]) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _clip(form.title, 200),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
        },
    ]
    if form.content:
        # TextBlocks take a Markdown subset (bold, italic, lists, links): enough for a form.
        body.append({"type": "TextBlock", "text": form.content[:20_000], "wrap": True})
    body += [
        {"type": "TextBlock", "text": f"_{_one_line(n)}_", "wrap": True, "isSubtle": True}
        for n in notices
    ]
    return body


def _form_body(form: HumanForm, notices: list[str]) -> list[dict[str, Any]]:
    body = _form_head(form, notices)
    if not form.answerable:
        body.append({"type": "TextBlock", "text": f"📧 {form.blocked}", "wrap": True})
        return body
    for f in form.fields:
        fid = FIELD_PREFIX + f.name
        if f.kind == "select":
            field: dict[str, Any] = {
                "type": "Input.ChoiceSet",
                "id": fid,
                "label": f.label,
                "style": "compact",
                "isRequired": True,
                "errorMessage": f"Please choose a value for {f.label}.",
                "choices": [{"title": o[:200], "value": o} for o in f.options],
            }
        else:
            field = {"type": "Input.Text", "id": fid, "label": f.label, "isMultiline": f.multiline}
        if f.default:
            field["value"] = f.default
        body.append(field)
    if form.expires_at:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(form.expires_at))
        body.append(
            {
                "type": "TextBlock",
                "isSubtle": True,
                "wrap": True,
                "text": f"Answer by {{{{DATE({stamp}, SHORT)}}}} {{{{TIME({stamp})}}}}.",
            }
        )
    return body


def _form_actions(form: HumanForm) -> list[dict[str, Any]]:
    if not form.answerable:
        return []
    out = []
    for a in form.actions:
        action: dict[str, Any] = {
            "type": "Action.Submit",
            "title": _clip(a.title, 100),
            "data": {"difyBridge": FORM_VALUE, "f": form.key, "a": a.id},
        }
        if a.style in _FORM_STYLES:
            action["style"] = _FORM_STYLES[a.style]
        out.append(action)
    return out


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    content: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    }
    if actions:
        content["actions"] = actions
    return {"contentType": _sdk.ADAPTIVE_CARD, "content": content}
