"""Teams' dialect for :mod:`app.render.markdown`: its Markdown subset for text messages.

Teams text messages render bold, italic, strike, links, lists, code and quotes, but no headings
and no tables (format-your-bot-messages). A single ``\\n`` is swallowed (two sentences fuse,
msteams-docs #740) while Dify's own UI shows it as a line break (remark-breaks), so soft breaks
become hard breaks (two spaces + newline). Literal text is escaped only where it would otherwise
turn into formatting, to keep copy-paste clean; bare URLs are left untouched.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from app.render import markdown as render
from app.render.markdown import Table, display_width, extract_tables, split_markdown

__all__ = [
    "TeamsDialect",
    "extract_tables",
    "split_markdown",
    "teams_table_card",
    "to_teams_markdown",
    "utf16_len",
]

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_URL_ESCAPES = str.maketrans({"(": "%28", ")": "%29", " ": "%20", "<": "%3C", ">": "%3E"})
_MARKS = {"strong": "**", "em": "*", "s": "~~"}
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _longest_run(s: str, ch: str) -> int:
    best = run = 0
    for c in s:
        run = run + 1 if c == ch else 0
        best = max(best, run)
    return best


def _escape_plain(s: str) -> str:
    """Backslash/entity-escape characters of a non-URL stretch that Markdown would act on."""
    out: list[str] = []
    n = len(s)
    for i, c in enumerate(s):
        prev = s[i - 1] if i else " "
        nxt = s[i + 1] if i + 1 < n else " "
        if c in "*`":
            out.append("\\" + c)
        elif c == "_":
            # snake_case never emphasises in CommonMark; only edges need an escape.
            out.append("_" if prev.isalnum() and nxt.isalnum() else "\\_")
        elif c == "~":
            out.append("\\~" if "~" in (prev, nxt) else "~")
        elif c == "\\":
            out.append("\\\\" if nxt in _ASCII_PUNCT else "\\")
        elif c == "<":
            out.append("&lt;")
        elif c == ">":
            out.append("&gt;")
        elif c == "&":
            out.append("&amp;" if nxt.isalnum() or nxt == "#" else "&")
        else:
            out.append(c)
    return "".join(out)


def escape(text: str) -> str:
    """Escape literal text for Teams Markdown, leaving ``http(s)://`` URLs as they are."""
    if not any(c in text for c in "*_`~\\<>&"):
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = min(
            (k for k in (text.find("http://", i), text.find("https://", i)) if k >= 0), default=-1
        )
        if j < 0:
            out.append(_escape_plain(text[i:]))
            break
        out.append(_escape_plain(text[i:j]))
        end = j
        while end < n and not text[end].isspace():
            end += 1
        out.append(text[j:end])
        i = end
    return "".join(out)


def safe_url(url: str) -> str | None:
    if not url.lower().startswith(_SAFE_SCHEMES):
        return None
    return url.translate(_URL_ESCAPES)


class TeamsDialect:
    """Turns rendered pieces into Teams Markdown (see :class:`app.render.markdown.Dialect`)."""

    softbreak = "  \n"
    hardbreak = "  \n"
    indent_verbatim = True  # Markdown needs code inside a list item indented to stay in it

    def text(self, s: str) -> str:
        return escape(s)

    def code_inline(self, s: str) -> str:
        if not s:
            return ""
        fence = "`" * (_longest_run(s, "`") + 1)
        pad = " " if s.startswith("`") or s.endswith("`") else ""
        return f"{fence}{pad}{s}{pad}{fence}"

    def style(self, kind: str, inner: str, nested: bool) -> str:
        if nested or not inner.strip():
            return inner
        mark = _MARKS[kind]
        core = inner.strip(" ")
        lead = inner[: len(inner) - len(inner.lstrip(" "))]
        trail = inner[len(inner.rstrip(" ")) :]
        return f"{lead}{mark}{core}{mark}{trail}"

    def link(self, href: str, label: str, plain: str, autolink: bool) -> str:
        url = safe_url(href)
        if url is None:
            return escape(plain)
        return f"[{label if label.strip() else escape(href)}]({url})"

    def image(self, src: str, alt: str) -> str:
        return self.link(src, escape(alt or "image"), alt or "image", False)

    def html(self, s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def heading(self, inner: str) -> str:
        return self.style("strong", inner, False)

    def code_block(self, content: str, info: str) -> list[str]:
        del info  # Teams shows no highlighting in text messages
        fence = "`" * max(3, _longest_run(content, "`") + 1)
        body = content.rstrip("\n")
        return [fence, *(body.split("\n") if body else []), fence]

    def hr(self) -> str:
        return "─" * 10

    def bullet(self, depth: int) -> str:
        del depth
        return "-"

    def ordered(self, number: int) -> str:
        return f"{number}."

    def quote(self, lines: list[str]) -> list[str]:
        return [f"> {ln}" if ln else ">" for ln in lines]

    def table_marker(self) -> str:
        return "_(see table below)_"

    def finish(self, out: str) -> str:
        return out


_CARD_BUDGET = 24_000  # UTF-16 units; Teams caps a whole activity at 40-100 KB
_ALIGN = {"left": "Left", "center": "Center", "right": "Right"}


def teams_table_card(table: Table, *, max_rows: int = 100) -> dict[str, Any]:
    """An Adaptive Card 1.5 (the attachment's ``content``) showing ``table`` as a ``Table``.

    Rows beyond ``max_rows``, or beyond what keeps the card small, are summarised in a note.
    """
    if not table.header:
        raise ValueError("a table needs at least one column")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    ncols = len(table.header)

    def row(cells: list[str], bold: bool) -> dict[str, Any]:
        cells = (cells + [""] * ncols)[:ncols]
        items = [
            {"type": "TextBlock", "text": c, "wrap": True, **({"weight": "Bolder"} if bold else {})}
            for c in cells
        ]
        return {"type": "TableRow", "cells": [{"type": "TableCell", "items": [x]} for x in items]}

    # Relative column widths from the longest cell, capped so one long cell cannot starve the rest.
    all_rows = [table.header, *table.rows]
    widths = [
        min(40, max(1, *(display_width(r[c]) for r in all_rows if c < len(r))))
        for c in range(ncols)
    ]
    columns: list[dict[str, Any]] = []
    for c in range(ncols):
        col: dict[str, Any] = {"width": widths[c]}
        a = table.align[c] if c < len(table.align) else ""
        if a in _ALIGN:
            col["horizontalCellContentAlignment"] = _ALIGN[a]
        columns.append(col)
    rows = [row(table.header, True)]
    size = utf16_len(json.dumps(rows[0], ensure_ascii=False))
    for r in table.rows[:max_rows]:
        rendered = row(r, False)
        size += utf16_len(json.dumps(rendered, ensure_ascii=False))
        if size > _CARD_BUDGET:
            break
        rows.append(rendered)
    body: list[dict[str, Any]] = [
        {
            "type": "Table",
            "gridStyle": "accent",
            "firstRowAsHeader": True,
            "showGridLines": True,
            "columns": columns,
            "rows": rows,
        }
    ]
    hidden = len(table.rows) - (len(rows) - 1)
    if hidden:
        body.append(
            {
                "type": "TextBlock",
                "text": f"{hidden} more rows not shown.",
                "isSubtle": True,
                "wrap": True,
            }
        )
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    }


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, the unit Teams measures message size in."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


_DIALECT = TeamsDialect()


def to_teams_markdown(
    md: str, *, tables: Literal["text", "card"] = "text", final: bool = False
) -> str:
    """Render Dify Markdown in the subset Teams text messages support.

    Headings become ``**bold**`` lines. Tables become an aligned code block (``tables="text"``)
    or the marker "(see table below)" when the caller sends :func:`teams_table_card` cards for
    :func:`app.render.markdown.extract_tables` (``tables="card"``).
    """
    return render.render(_DIALECT, md, tables=tables, final=final)
