"""One pass over markdown-it's tokens, each construct spelled by a platform's :class:`Dialect`."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from markdown_it.token import Token

from app.render.parse import _MD


@dataclass(slots=True)
class Table:
    """A GFM table as plain-text cells; ``align`` holds "left"/"center"/"right"/"" per column."""

    header: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)


class Dialect(Protocol):
    """What the walker needs from a platform: how each construct is spelled."""

    softbreak: str
    hardbreak: str
    indent_verbatim: bool

    def text(self, s: str) -> str: ...
    def code_inline(self, s: str) -> str: ...
    def style(self, kind: str, inner: str, nested: bool) -> str: ...
    def link(self, href: str, label: str, plain: str, autolink: bool) -> str: ...
    def image(self, src: str, alt: str) -> str: ...
    def html(self, s: str) -> str: ...
    def heading(self, inner: str) -> str: ...
    def code_block(self, content: str, info: str) -> list[str]: ...
    def hr(self) -> str: ...
    def bullet(self, depth: int) -> str: ...
    def ordered(self, number: int) -> str: ...
    def quote(self, lines: list[str]) -> list[str]: ...
    def table_marker(self) -> str: ...
    def finish(self, out: str) -> str: ...


def _closers(tokens: Sequence[Token]) -> dict[int, int]:
    """Index of each opening token's matching close."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, t in enumerate(tokens):
        if t.nesting == 1:
            stack.append(i)
        elif t.nesting == -1 and stack:
            pairs[stack.pop()] = i
    return pairs


def _plain(children: Sequence[Token] | None) -> str:
    """Text of an inline run without any formatting (table cells, link labels, alt text)."""
    out: list[str] = []
    for t in children or ():
        if t.type in ("text", "code_inline", "html_inline"):
            out.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif t.type == "image":
            out.append(_plain(t.children) or t.content)
    return "".join(out)


def _table_at(tokens: Sequence[Token], lo: int, hi: int) -> Table:
    header: list[str] = []
    rows: list[list[str]] = []
    align: list[str] = []
    row: list[str] | None = None
    for i in range(lo, hi):
        t = tokens[i]
        if t.type == "tr_open":
            row = []
        elif t.type == "th_open":
            align.append(str(t.attrGet("style") or "").removeprefix("text-align:"))
        elif t.type == "inline" and row is not None:
            children = t.children or (_MD.inline.parse(t.content, _MD, {}, []) if t.content else [])
            row.append(" ".join(_plain(children).split()))
        elif t.type == "tr_close" and row is not None:
            if not header and not rows and tokens[i - 1].type == "th_close":
                header = row
            else:
                rows.append(row)
            row = None
    width = max([len(header), *(len(r) for r in rows)])
    return Table(
        header=header + [""] * (width - len(header)),
        rows=[r + [""] * (width - len(r)) for r in rows],
        align=align + [""] * (width - len(align)),
    )


def display_width(s: str) -> int:
    """Columns a monospace font gives ``s``: CJK and full-width characters take two."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in s
    )


def _monospace(table: Table) -> str:
    """The table as aligned columns for a code block (CJK counts two columns)."""
    all_rows = [table.header, *table.rows]
    widths = [max(1, *(display_width(r[c]) for r in all_rows)) for c in range(len(table.header))]

    def fmt(row: list[str]) -> str:
        cells = []
        for c, cell in enumerate(row):
            gap = widths[c] - display_width(cell)
            a = table.align[c] if c < len(table.align) else ""
            left = gap if a == "right" else gap // 2 if a == "center" else 0
            cells.append(" " * left + cell + " " * (gap - left))
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(table.header), rule, *(fmt(r) for r in table.rows)]) + "\n"


_MAX_INLINE_DEPTH = 32


class _Walker:
    """One pass over markdown-it's tokens, spelling each construct with a :class:`Dialect`."""

    def __init__(self, dialect: Dialect, tokens: list[Token], tables: str) -> None:
        self.d = dialect
        self.tokens = tokens
        self.pairs = _closers(tokens)
        self.tables = tables
        self.depth = 0

    def render(self) -> str:
        lines = self.blocks(0, len(self.tokens))
        return self.d.finish("\n".join(text for text, _ in lines).strip("\n"))

    def blocks(self, lo: int, hi: int) -> list[tuple[str, bool]]:
        """Lines as (text, verbatim) for tokens[lo:hi]; blocks separated by blank lines."""
        out: list[tuple[str, bool]] = []
        tight = False
        i = lo
        while i < hi:
            t = self.tokens[i]
            end = self.pairs.get(i, i)
            lines: list[tuple[str, bool]]
            if t.meta.get("hide"):
                i = end + 1
                continue
            if t.type in ("paragraph_open", "heading_open"):
                text = self.inline(self.tokens[i + 1].children or [], t.type == "heading_open")
                if t.type == "heading_open":
                    text = self.d.heading(text)
                lines = [(ln, False) for ln in text.split("\n")]
                tight = tight or t.hidden
            elif t.type in ("bullet_list_open", "ordered_list_open"):
                lines = self.list_(i, end)
            elif t.type == "blockquote_open":
                inner = self.blocks(i + 1, end)
                quoted = self.d.quote([x for x, _ in inner])
                lines = [(q, v) for q, (_, v) in zip(quoted, inner, strict=True)]
            elif t.type in ("fence", "code_block"):
                lines = [(ln, True) for ln in self.d.code_block(t.content, t.info)]
            elif t.type == "hr":
                lines = [(self.d.hr(), False)]
            elif t.type == "html_block":
                lines = [(ln, False) for ln in self.d.html(t.content.rstrip("\n")).split("\n")]
            elif t.type == "table_open":
                if self.tables == "card":
                    lines = [(self.d.table_marker(), False)]
                else:
                    text = _monospace(_table_at(self.tokens, i, end))
                    lines = [(ln, True) for ln in self.d.code_block(text, "")]
            else:
                i = end + 1
                continue
            if not any(text for text, _ in lines):  # an empty quote or heading adds nothing
                i = end + 1
                continue
            if out and not tight:
                out.append(("", False))
            out.extend(lines)
            i = end + 1
        return out

    def list_(self, lo: int, hi: int) -> list[tuple[str, bool]]:
        ordered = self.tokens[lo].type == "ordered_list_open"
        number = int(self.tokens[lo].attrGet("start") or 1) if ordered else 0
        out: list[tuple[str, bool]] = []
        loose = any(
            t.type == "paragraph_open" and not t.hidden and t.level == self.tokens[lo].level + 2
            for t in self.tokens[lo:hi]
        )
        self.depth += 1
        i = lo + 1
        while i < hi:
            end = self.pairs.get(i, i)
            if self.tokens[i].type == "list_item_open":
                marker = self.d.ordered(number) if ordered else self.d.bullet(self.depth - 1)
                number += 1
                pad = " " * (len(marker) + 1)
                inner = self.blocks(i + 1, end) or [("", False)]
                if out and loose:
                    out.append(("", False))
                first, verbatim = inner[0]
                # A code block first in an item goes under the marker, never beside it.
                out.append((marker if verbatim else f"{marker} {first}".rstrip(), False))
                rest = inner if verbatim else inner[1:]
                for text, verb in rest:
                    indent = pad if (text and (self.d.indent_verbatim or not verb)) else ""
                    out.append((indent + text, verb))
            i = end + 1
        self.depth -= 1
        return out

    def inline(self, children: list[Token], in_heading: bool = False) -> str:
        pairs = _closers(children)
        active = frozenset({"strong"}) if in_heading else frozenset()
        return self._inline(children, 0, len(children), pairs, active, 0)

    def _inline(
        self,
        ch: list[Token],
        lo: int,
        hi: int,
        pairs: dict[int, int],
        active: frozenset[str],
        depth: int,
    ) -> str:
        d = self.d
        out: list[str] = []
        i = lo
        while i < hi:
            t = ch[i]
            ty = t.type
            if depth >= _MAX_INLINE_DEPTH and ty.endswith(("_open", "_close")):
                pass  # absurdly deep nesting: keep the text, drop the formatting
            elif ty == "text":
                out.append(d.text(t.content))
            elif ty == "softbreak":
                out.append(d.softbreak)
            elif ty == "hardbreak":
                out.append(d.hardbreak)
            elif ty == "code_inline":
                out.append(d.code_inline(t.content))
            elif ty in ("strong_open", "em_open", "s_open"):
                kind = ty.removesuffix("_open")
                end = pairs.get(i, i)
                inner = self._inline(ch, i + 1, end, pairs, active | {kind}, depth + 1)
                out.append(d.style(kind, inner, kind in active))
                i = end
            elif ty == "link_open":
                end = pairs.get(i, i)
                label = self._inline(ch, i + 1, end, pairs, active, depth + 1)
                href = str(t.attrGet("href") or "")
                out.append(d.link(href, label, _plain(ch[i + 1 : end]), t.markup == "autolink"))
                i = end
            elif ty == "image":
                out.append(d.image(str(t.attrGet("src") or ""), _plain(t.children) or t.content))
            elif ty == "html_inline":
                out.append(d.html(t.content))
            i += 1
        return "".join(out)
