"""Slack's dialect for the renderer in :mod:`app.render.markdown`: mrkdwn, markdown blocks, sources.

Slack mrkdwn has no escape for ``*``, ``_``, ``~`` or backticks, and formatting markers only take
effect at word boundaries: ``これは*重要*です`` stays literal. We put a zero-width space (U+200B)
between a marker and an adjacent non-space character so bold works inside CJK text and next to
punctuation (the slackify-markdown approach). ``&``, ``<`` and ``>`` must be HTML-escaped
everywhere, code included: https://docs.slack.dev/messaging/formatting-message-text#escaping
Escaping ``<`` also means answer text can never produce ``<!channel>`` or ``<@U123>`` mentions.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from app.pipeline.model import Source
from app.render import markdown as render

ZWSP = "\u200b"
# Private-use sentinels the walker leaves next to markers; `finish` turns them into ZWSP or nothing
# once the neighbouring characters are known. Input text is scrubbed of them first.
_OPEN = "\ue000"
_CLOSE = "\ue001"
_MARKS = {"strong": "*", "em": "_", "s": "~"}
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", _OPEN: None, _CLOSE: None})
_URL_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "%3C", ">": "%3E", "|": "%7C", " ": "%20", _OPEN: None, _CLOSE: None}
)
_BULLETS = ("•", "◦", "▪")
_SAFE_SCHEMES = ("http://", "https://", "mailto:")
# Characters next to which a marker needs no ZWSP: whitespace, ASCII punctuation ("*bold*,"
# works) and other markers (a ZWSP between `*` and `_` in `*_x_*` would split the pair).
_NO_PAD = frozenset(" \t\n" + ZWSP + string.punctuation)
SOURCES_TEXT_MAX = 2000
_TITLE_MAX = 80


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` the way Slack requires in any message text."""
    return text.translate(_ESCAPES)


def safe_url(url: str) -> str | None:
    """The URL ready for ``<url|text>``, or None for schemes Slack should not link."""
    if not url.lower().startswith(_SAFE_SCHEMES):
        return None
    return url.translate(_URL_ESCAPES)


class SlackDialect:
    """Turns rendered pieces into Slack mrkdwn (see :class:`app.render.markdown.Dialect`)."""

    softbreak = "\n"
    hardbreak = "\n"
    indent_verbatim = False  # spaces before ``` lines would end up inside the code block

    def text(self, s: str) -> str:
        return escape(s)

    def code_inline(self, s: str) -> str:
        if not s.strip():
            return escape(s)
        # No way to escape a backtick inside Slack code: use a look-alike (modifier grave accent).
        return "`" + escape(s.replace("`", "\u02cb")) + "`"

    def style(self, kind: str, inner: str, nested: bool) -> str:
        mark = _MARKS[kind]
        if nested or not inner.strip():
            return inner
        if "\n" in inner:  # Slack formatting stops at a line break: mark each line
            return "\n".join(self.style(kind, line, False) for line in inner.split("\n"))
        # Slack ignores `* bold*`: keep edge whitespace outside the markers.
        core = inner.strip(" ")
        lead = inner[: len(inner) - len(inner.lstrip(" "))]
        trail = inner[len(inner.rstrip(" ")) :]
        return f"{lead}{_OPEN}{mark}{core}{mark}{_CLOSE}{trail}"

    def link(self, href: str, label: str, plain: str, autolink: bool) -> str:
        url = safe_url(href)
        if url is None:
            return escape(plain)
        del autolink  # `<a@b.c>` still wants its label: the href reads "mailto:a@b.c"
        if not plain.strip() or plain == href:
            return f"<{url}>"
        return f"<{url}|{escape(plain)}>"

    def image(self, src: str, alt: str) -> str:
        return self.link(src, alt, alt or "image", False)

    def html(self, s: str) -> str:
        return escape(s)

    def heading(self, inner: str) -> str:
        return self.style("strong", inner, False)

    def code_block(self, content: str, info: str) -> list[str]:
        del info  # Slack has no syntax highlighting; a language tag would show as code
        body = escape(content.replace("```", "``" + ZWSP + "`")).rstrip("\n")
        return ["```", *(body.split("\n") if body else [" "]), "```"]

    def hr(self) -> str:
        return "─" * 10

    def bullet(self, depth: int) -> str:
        return _BULLETS[depth % len(_BULLETS)]

    def ordered(self, number: int) -> str:
        return f"{number}."

    def quote(self, lines: list[str]) -> list[str]:
        # Slack has one quote level: a nested quote keeps its single marker.
        return [ln if ln.startswith(">") else f"> {ln}" if ln else ">" for ln in lines]

    def table_marker(self) -> str:
        return "(see table below)"

    def finish(self, out: str) -> str:
        """Resolve marker sentinels: ZWSP only where a marker touches a word character."""
        if _OPEN not in out and _CLOSE not in out:
            return out
        pieces: list[str] = []
        last = ""  # the last real (non-sentinel) character emitted so far
        start = 0
        n = len(out)
        i = _next_sentinel(out, 0)
        while i >= 0:
            chunk = out[start:i]
            pieces.append(chunk)
            last = chunk[-1] if chunk else last
            if out[i] == _OPEN:
                near = last
            else:
                j = i + 1
                while j < n and out[j] in (_OPEN, _CLOSE):
                    j += 1
                near = out[j : j + 1]
            if near and near not in _NO_PAD:
                pieces.append(ZWSP)
            start = i + 1
            i = _next_sentinel(out, start)
        pieces.append(out[start:])
        return "".join(pieces)


def _next_sentinel(s: str, start: int) -> int:
    a = s.find(_OPEN, start)
    b = s.find(_CLOSE, start)
    return b if a < 0 else a if b < 0 else min(a, b)


def _short(title: str) -> str:
    title = " ".join(title.split()) or "Untitled"
    return title if len(title) <= _TITLE_MAX else title[: _TITLE_MAX - 1] + "…"


def slack_sources_block(sources: Sequence[Source], *, max_items: int = 5) -> dict[str, Any]:
    """A compact Block Kit ``context`` block: ``Sources: 1. <url|Title> · 2. Title``.

    Dify often cites several chunks of one document: duplicates (same title and URL) are shown
    once. Items beyond ``max_items`` become "+N more". The single mrkdwn element stays within
    Slack's 2,000-character limit for context text. Raises ``ValueError`` for no sources.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items}")
    seen: set[tuple[str, str]] = set()
    unique: list[Source] = []
    for src in sorted(sources, key=lambda s: s.position):
        key = (" ".join(src.title.split()), src.url or "")
        if key not in seen:
            seen.add(key)
            unique.append(src)
    if not unique:
        raise ValueError("no sources to show")
    items: list[str] = []
    for n, src in enumerate(unique[:max_items], 1):
        label = escape(_short(src.title))
        url = safe_url(src.url) if src.url else None
        items.append(f"{n}. <{url}|{label}>" if url else f"{n}. {label}")
    while True:
        more = len(unique) - len(items)
        text = "Sources: " + " · ".join(items) + (f" · +{more} more" if more else "")
        if len(text) <= SOURCES_TEXT_MAX or len(items) == 1:
            break
        items.pop()
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SOURCES_TEXT_MAX]}]}


_DIALECT = SlackDialect()
SLACK_MARKDOWN_BLOCK_MAX = 12_000


def to_slack_mrkdwn(md: str, *, final: bool = False) -> str:
    """Render Dify Markdown as Slack mrkdwn (``text`` of chat.postMessage/update, section text).

    ``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>``, "•" lists, headings as bold lines,
    code spans and fences (language dropped), ``>`` quotes, tables as an aligned code block,
    images as links, HTML as escaped text. Without ``final`` the end is treated as still
    streaming (see :mod:`app.render.markdown`).
    """
    return render.render(_DIALECT, md, final=final)


# markdown block may honour it, so a zero-width space goes after the "<" (the text looks the same).
_MENTIONS = ("<!channel", "<!here", "<!everyone", "<!subteam", "<@")


def _defuse_mentions(text: str) -> str:
    if "<" not in text:
        return text
    for mention in _MENTIONS:
        text = text.replace(mention, "<\u200b" + mention[1:])
    return text


def slack_answer_blocks(
    md: str, *, limit: int = SLACK_MARKDOWN_BLOCK_MAX, final: bool = True
) -> list[dict[str, Any]]:
    """Slack ``markdown`` blocks for an answer: Slack renders the CommonMark itself.

    Tables become aligned code blocks first. Slack allows 12,000 characters of markdown blocks
    per message *cumulatively*, so each returned block is meant for its own message; a normal
    answer gives exactly one. Blank input gives an empty list. Pass ``final=False`` for an
    answer still streaming: its unfinished end is repaired as in :func:`to_slack_mrkdwn`.
    """
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= SLACK_MARKDOWN_BLOCK_MAX
    ):
        raise ValueError(f"limit must be 1..{SLACK_MARKDOWN_BLOCK_MAX}, got {limit!r}")
    source = render.normalize(md) if final else render.heal_source(md)
    text = _defuse_mentions(render.tables_as_code(source).strip())
    if not text:
        return []
    return [{"type": "markdown", "text": part} for part in render.split_markdown(text, limit)]
