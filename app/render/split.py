"""Splitting Markdown into messages at a platform's size limit, each part valid on its own."""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass

from markdown_it.token import Token

from app.render.parse import _BLOCKS, _normalize
from app.render.walk import _closers, _monospace, _table_at


@dataclass(slots=True)
class _Region:
    """Lines a part may not simply end inside: a fenced code block or a table body."""

    first: int  # first line at which a boundary falls inside (boundary k = before line k)
    last: int  # last such line, inclusive
    reopen: str  # what a continuation part starts with (fence opener / table header)
    close: str  # what a part ending inside it needs (closing fence; "" for tables)


def _lines(md: str) -> list[str]:
    parts = md.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _regions(tokens: list[Token], lines: list[str]) -> list[_Region]:
    regions: list[_Region] = []
    for t in tokens:
        if not t.map:
            continue
        start, end = t.map
        if t.type == "fence":
            opener = lines[start].rstrip("\n") + "\n"
            indent = opener[: len(opener) - len(opener.lstrip(" "))]
            tail = lines[end - 1].strip() if end - 1 > start else ""
            closed = len(tail) >= len(t.markup) and set(tail) == {t.markup[0]}
            regions.append(
                _Region(start + 1, end - 1 if closed else end, opener, indent + t.markup)
            )
        elif t.type == "table_open" and end - start > 2:
            header = "".join(lines[start : start + 2])
            regions.append(_Region(start + 3, end - 1, header, ""))
    return regions


_SENTENCE_END = "。！？!?."
_NO_CUT_BEFORE = frozenset("\u200d\ufe0e\ufe0f")


def _cut_line(md: str, pos: int, budget: int, *, code: bool) -> int:
    """Where to cut inside one over-long line: sentence end > space > hard (never mid-grapheme)."""
    hi = min(len(md), pos + budget)
    if hi >= len(md):
        return len(md)
    if not code:
        half = pos + budget // 2
        for k in range(hi - 1, half - 1, -1):
            c = md[k]
            if c in "。！？" or (c in ".!?" and md[k + 1] == " "):
                return k + 1 if c in "。！？" else min(k + 2, hi)
        space = md.rfind(" ", pos + 1, hi)
        if space > pos:
            return space + 1
    cut = hi
    while cut > pos + 1 and (
        unicodedata.combining(md[cut]) or md[cut] in _NO_CUT_BEFORE or md[cut - 1] == "\u200d"
    ):
        cut -= 1
    return cut


def split_markdown(md: str, limit: int) -> list[str]:
    """Split Markdown into parts of at most ``limit`` characters, each valid on its own.

    Cuts go at a blank line between blocks if one falls in the second half of the window, else
    at a line end, else a sentence end, else a space, else anywhere (never inside a character
    sequence like an emoji). A part never ends inside a fenced code block: the fence is closed
    and reopened, with the same info string, at the start of the next part; a long table
    repeats its header row in the next part. Whitespace at the cuts is dropped; all content is
    kept. Text that fits is returned unchanged as a single part.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive number of characters, got {limit!r}")
    if len(_normalize(md)) <= limit:
        return [md]
    md = _normalize(md)
    lines = _lines(md)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    inside: list[_Region | None] = [None] * (len(lines) + 1)
    for region in _regions(_BLOCKS.parse(md), lines):
        for k in range(region.first, min(region.last, len(lines)) + 1):
            inside[k] = region
    line_of = {s: k for k, s in enumerate(starts)}

    parts: list[str] = []
    pos = 0
    prefix = ""
    n = len(md)
    while True:
        if not prefix:
            while pos < n and md[pos] in "\n ":
                if md[pos] == " " and pos in line_of:
                    eol = md.find("\n", pos)
                    if eol >= 0 and not md[pos:eol].strip():
                        pos = eol + 1  # a blank line of spaces
                        continue
                    break  # indentation is content (nested lists, indented code)
                pos += 1
        if pos >= n:
            break
        room = limit - len(prefix)
        if room < 1:  # limit smaller than a fence line: give up on reopening
            prefix, room = "", limit
        if len(md) - pos <= room:
            parts.append(prefix + md[pos:].rstrip())
            break
        best: tuple[int, int, int] | None = None  # (quality, boundary, part length)
        k = _first_line_after(starts, pos)
        while k < len(lines) and starts[k] - pos <= room:
            b = starts[k]
            reg = inside[k]
            body = md[pos:b]
            size = len(prefix) + (len(body) + len(reg.close) if reg else len(body.rstrip()))
            # (a cut right after a fence's opening line would leave an empty code block)
            if size <= limit and body.strip() and not (reg and k == reg.first):
                quality = 1 if reg else 3 if not lines[k - 1].strip() else 2
                if b - pos < room // 2 and quality > 1:
                    quality -= 1  # a good cut too early would make a tiny part
                if best is None or (quality, b) >= best[:2]:
                    best = (quality, b, size)
            k += 1
        if best is not None:
            b = best[1]
            reg = inside[_line_index(starts, b)]
            body = md[pos:b]
            parts.append(prefix + (body + reg.close if reg else body.rstrip()))
            prefix = reg.reopen if reg else ""
            pos = b
            continue
        line_k = _line_index(starts, pos)
        opened = inside[line_k + 1] if line_k + 1 < len(inside) else None
        at_opener = pos == starts[line_k] and opened is not None and line_k + 1 == opened.first
        if not prefix and opened and opened.close and at_opener:
            prefix, pos = opened.reopen, starts[line_k + 1]  # the fence opener starts this part
            continue
        reg = _content_region(inside, line_k)
        closing = ("\n" + reg.close) if reg and reg.close else ""
        cut = _cut_line(md, pos, max(1, room - len(closing)), code=bool(closing))
        parts.append(
            prefix + md[pos:cut].rstrip(" ") + closing if closing else prefix + md[pos:cut].rstrip()
        )
        prefix = reg.reopen if closing and reg else ""
        pos = cut
    return [p for p in parts if p.strip()] or [""]


def _first_line_after(starts: list[int], pos: int) -> int:
    return bisect.bisect_right(starts, pos)


def _line_index(starts: list[int], pos: int) -> int:
    return bisect.bisect_right(starts, pos) - 1


def _content_region(inside: list[_Region | None], line_k: int) -> _Region | None:
    """The fence whose content line ``line_k`` is (boundaries before and after are inside)."""
    if (
        line_k + 1 < len(inside)
        and inside[line_k] is not None
        and inside[line_k] is inside[line_k + 1]
    ):
        return inside[line_k]
    return None


def tables_as_code(md: str) -> str:
    """Replace top-level tables with aligned code blocks (for renderers without tables)."""
    if "|" not in md:
        return md
    tokens = _BLOCKS.parse(md)
    pairs = _closers(tokens)
    tables = [
        (t.map, _table_at(tokens, i, pairs[i]))
        for i, t in enumerate(tokens)
        if t.type == "table_open" and t.level == 0 and t.map
    ]
    if not tables:
        return md
    lines = _lines(md)
    for (start, end), table in reversed(tables):
        lines[start:end] = ["```\n", _monospace(table), "```\n"]
    return "".join(lines)
