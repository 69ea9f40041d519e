"""The Markdown parser the renderer walks: markdown-it-py (CommonMark + GFM tables/strikethrough).

Japanese and other CJK text: CommonMark refuses ``**「重要」**です`` as bold (the closing
``**`` sits between punctuation and a letter); Dify users write it all the time, so ``*`` and
``~`` runs touching a CJK character may open/close regardless of punctuation.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from markdown_it import MarkdownIt
from markdown_it.rules_inline import emphasis, strikethrough
from markdown_it.rules_inline.state_inline import StateInline

# Where the healing asks the parser to note emphasis left open (see app.render.heal).
UNCLOSED = "dify_bridge_unclosed"


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _cjk_friendly(
    rule: Callable[[StateInline, bool], bool],
) -> Callable[[StateInline, bool], bool]:
    """Wrap a delimiter tokenizer so runs touching CJK text ignore the punctuation rule."""

    def tokenize(state: StateInline, silent: bool) -> bool:
        before = len(state.delimiters)
        start = state.pos
        if not rule(state, silent):
            return False
        prev = state.src[start - 1] if start > 0 else " "
        nxt = state.src[state.pos] if state.pos < state.posMax else " "
        # `_` keeps CommonMark's intraword rule: identifiers like 設定_値_ stay literal.
        if state.src[start] != "_" and (_is_wide(prev) or _is_wide(nxt)):
            for d in state.delimiters[before:]:
                d.open = d.open or not nxt.isspace()
                d.close = d.close or not prev.isspace()
        return True

    return tokenize


def _record_unclosed(state: StateInline) -> None:
    """Note emphasis/strike openers left without a closer (only when healing asks for it)."""
    sink = state.env.get(UNCLOSED)
    if sink is None:
        return
    for d in state.delimiters:
        # Intraword single `*` (5*3) may never close: heal only clear openers and `**`/`~~` runs.
        if d.open and d.end < 0 and (not d.close or d.length >= 2 or d.marker == 0x7E):
            sink.append("~~" if d.marker == 0x7E else chr(d.marker))


def _build_parser() -> MarkdownIt:
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    md.inline.ruler.at("emphasis", _cjk_friendly(emphasis.tokenize))
    md.inline.ruler.at("strikethrough", _cjk_friendly(strikethrough.tokenize))
    md.inline.ruler2.after("balance_pairs", "record_unclosed", _record_unclosed)
    return md


_MD = _build_parser()
# Structure only (no inline pass): half the cost, enough for splitting and finding tables.
_BLOCKS = _build_parser().disable("inline")


def _normalize(md: str) -> str:
    if not isinstance(md, str):
        raise TypeError(f"expected Markdown text (str), got {type(md).__name__}")
    return md.replace("\r\n", "\n").replace("\r", "\n")
