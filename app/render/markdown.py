"""Dify's Markdown for chat platforms: rendering, table extraction and splitting at limits.

Dify answers in CommonMark plus GFM tables and strikethrough. We parse with markdown-it-py (a
real CommonMark parser) and walk its tokens once, handing each construct to a *dialect*
(each platform adapter brings its own) that knows the platform's syntax.

The edit scheduler renders the answer-so-far on every edit, so by default the functions treat
the end of the input as *still streaming*: an open code fence is closed, ``**bol`` is shown
bold, ``[foo](htt`` shows ``foo``, a lone ``-`` or ``##`` line waits for its text, and a table
header waits for its delimiter row. Nothing appears that would jump to different formatting on
the next edit. Pass ``final=True`` for the finished answer to render it exactly as written.

Japanese and other CJK text: CommonMark refuses ``**「重要」**です`` as bold (the closing
``**`` sits between punctuation and a letter); Dify users write it all the time, so ``*`` and
``~`` runs touching a CJK character may open/close regardless of punctuation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from app.render.heal import _parse, heal_source
from app.render.parse import _BLOCKS, _normalize
from app.render.split import split_markdown, tables_as_code
from app.render.walk import Dialect, Table, _closers, _table_at, _Walker, display_width

__all__ = [
    "Dialect",
    "Table",
    "display_width",
    "extract_tables",
    "heal_source",
    "normalize",
    "render",
    "split_markdown",
    "tables_as_code",
]

normalize = _normalize


# --- Streaming cache: re-render only what is new --------------------------------------------------
#
# Every edit renders the whole answer so far, and markdown-it-py needs ~1.4 ms per KB. Blocks
# before a "safe cut" cannot change when text is appended, and rendering is block-wise:
# render(A + B) == render(A) + blank line + render(B) when A ends at a safe cut. So the head up
# to the last safe cut is cached and each edit parses only the text since then.

_CACHE_FROM = 2_000  # below this, parsing is cheaper than looking for cuts
_HEADS: OrderedDict[tuple[str, str, str], str] = OrderedDict()
_HEADS_MAX = 256  # ~one entry per answer being streamed
_LIST_START = ("- ", "* ", "+ ")


def _starts_list_item(line: str) -> bool:
    if line.startswith(_LIST_START) or line in ("-", "*", "+"):
        return True
    digits = len(line) - len(line.lstrip("0123456789"))
    return 0 < digits <= 9 and line[digits : digits + 1] in (".", ")")


def _safe_cuts(src: str) -> list[int]:
    """Offsets of lines that start a block no later text can merge with the blocks before.

    That is an unindented line after a blank line, outside any fence, that does not continue a
    list. Link reference definitions and raw HTML blocks reach across blank lines: none then.
    """
    if "]:" in src:
        return []
    cuts: list[int] = []
    fence = ""
    prev_blank = False
    pos = 0
    for line in src.split("\n"):
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if fence:
            if indent < 4 and body.startswith(fence) and not body.strip().strip(fence[0]):
                fence = ""
            prev_blank = False
        else:
            if prev_blank and indent == 0 and body and not _starts_list_item(body):
                if body.startswith("<"):
                    break  # an HTML block may run on past blank lines
                cuts.append(pos)
            if indent < 4 and body.startswith(("```", "~~~")):
                fence = body[: len(body) - len(body.lstrip(body[0]))]
            prev_blank = not line.strip()
        pos += len(line) + 1
    return cuts


def _join(head: str, tail: str) -> str:
    return f"{head}\n\n{tail}" if head and tail else head or tail


def _render(dialect: Dialect, md: str, tables: str, final: bool) -> str:
    src = _normalize(md)
    cuts = _safe_cuts(src) if len(src) >= _CACHE_FROM else []
    if not cuts:
        return _Walker(dialect, _parse(src, final=final), tables).render()
    name = type(dialect).__name__
    last = cuts[-1]
    key = (name, tables, src[:last])
    head = _HEADS.get(key)
    if head is None:
        base_cut, base = 0, ""
        for c in reversed(cuts[-50:-1]):
            hit = _HEADS.pop((name, tables, src[:c]), None)  # superseded by the longer head
            if hit is not None:
                base_cut, base = c, hit
                break
        segment = _Walker(dialect, _parse(src[base_cut:last], final=True), tables).render()
        head = _join(base, segment)
        _HEADS[key] = head
        while len(_HEADS) > _HEADS_MAX:
            _HEADS.popitem(last=False)
    else:
        _HEADS.move_to_end(key)
    return _join(head, _Walker(dialect, _parse(src[last:], final=final), tables).render())


# --- Public functions ---------------------------------------------------------------------------


def render(
    dialect: Dialect, md: str, *, tables: Literal["text", "card"] = "text", final: bool = False
) -> str:
    """Render Dify Markdown with ``dialect``.

    Tables become an aligned code block (``tables="text"``) or the dialect's table marker when
    the caller shows :func:`extract_tables` itself (``tables="card"``). Without ``final`` the end
    is treated as still streaming (see the module docstring).
    """
    if tables not in ("text", "card"):
        raise ValueError(f'tables must be "text" or "card", got {tables!r}')
    return _render(dialect, md, tables, final)


def extract_tables(md: str) -> list[Table]:
    """Every GFM table in the text, in order, with plain-text cells."""
    tokens = _BLOCKS.parse(_normalize(md))
    pairs = _closers(tokens)
    return [_table_at(tokens, i, pairs[i]) for i, t in enumerate(tokens) if t.type == "table_open"]
