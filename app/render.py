"""Dify's Markdown for Slack and Teams: rendering, table extraction and splitting at limits.

Dify answers in CommonMark plus GFM tables and strikethrough. We parse with markdown-it-py (a
real CommonMark parser) and walk its tokens once, handing each construct to a *dialect*
(:mod:`app.render_slack`, :mod:`app.render_teams`) that knows the platform's syntax.

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

import bisect
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from markdown_it import MarkdownIt
from markdown_it.rules_inline import emphasis, strikethrough
from markdown_it.rules_inline.state_inline import StateInline
from markdown_it.token import Token

from app.render_slack import SlackDialect, slack_sources_block
from app.render_teams import TeamsDialect, display_width, teams_table_card, utf16_len

__all__ = [
    "Table",
    "extract_tables",
    "slack_answer_blocks",
    "slack_sources_block",
    "split_markdown",
    "teams_table_card",
    "to_slack_mrkdwn",
    "to_teams_markdown",
    "utf16_len",
]

SLACK_MARKDOWN_BLOCK_MAX = 12_000
_UNCLOSED = "dify_bridge_unclosed"


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


# --- Parser -------------------------------------------------------------------------------------


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
    sink = state.env.get(_UNCLOSED)
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


# --- Streaming: heal the unfinished end ---------------------------------------------------------

_MARKER_ONLY = frozenset("-=*+_#`~|:> \t")


def _drop_unfinished_line(src: str) -> str:
    """Hide a trailing line that is only block syntax so far ("-", "##", "1.", "```py").

    A half-typed table row waits too: shown, it would re-align its columns on every edit.
    """
    if not src or src.endswith("\n"):
        return src
    cut = src.rfind("\n") + 1
    body = src[cut:].strip().lstrip("> \t")
    if (
        not body
        or set(body) <= _MARKER_ONLY
        or body.startswith(("```", "~~~", "|"))
        or body.rstrip(".)").isdigit()
    ):
        return src[:cut]
    return src


def _backtick_close(s: str, i: int, run: int) -> int:
    n = len(s)
    while True:
        k = s.find("`", i)
        if k < 0:
            return -1
        m = k
        while m < n and s[m] == "`":
            m += 1
        if m - k == run:
            return k
        i = m


def _link_dest_end(s: str, j: int) -> int:
    """Index of the ``)`` closing a link destination/title that starts at ``j``, or -1."""
    depth = 0
    quote = ""
    k = j
    n = len(s)
    while k < n:
        c = s[k]
        if c == "\\":
            k += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'" and k > j and s[k - 1].isspace():
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                return k
            depth -= 1
        k += 1
    return -1


def _without(s: str, cut: list[int]) -> str:
    if not cut:
        return s
    drop = set(cut)
    return "".join(c for i, c in enumerate(s) if i not in drop)


_HEAL_STOPS = re.compile(r"[\\`<\[\]]")


def _heal_syntax(s: str) -> str:
    """Close an open code span, reduce an open link/image to its label, drop a partial ``<tag``."""
    opens: list[tuple[int, int]] = []  # (start incl. "!", "[" index)
    n = len(s)
    i = 0

    def unopened(upto: int) -> list[int]:
        return [p for start, br in opens if br < upto for p in range(start, br + 1)]

    while i < n:
        # Only these characters matter: jump to the next one (a scan per character cost
        # ~170 us per edit of a 2 KB paragraph; see bench/README.md).
        found = _HEAL_STOPS.search(s, i)
        if found is None:
            break
        i = found.start()
        c = s[i]
        if c == "\\":
            i += 2
        elif c == "`":
            j = i
            while j < n and s[j] == "`":
                j += 1
            k = _backtick_close(s, j, j - i)
            if k >= 0:
                i = k + (j - i)
                continue
            body = s[j:]
            head = _without(s[:i], unopened(i))
            if not body.strip():
                return head
            return head + s[i:] + (" " if body.endswith("`") else "") + "`" * (j - i)
        elif c == "<":
            if s.find(">", i) < 0 and (i + 1 == n or s[i + 1].isalpha() or s[i + 1] in "/!?"):
                return _without(s[:i], unopened(i))
            i += 1
        elif c == "[":
            opens.append((i - 1 if i and s[i - 1] == "!" else i, i))
            i += 1
        elif c == "]" and opens:
            start, br = opens.pop()
            label = s[br + 1 : i]
            if i + 1 == n:
                return _without(s[:start], unopened(start)) + label
            if s[i + 1] == "(":
                end = _link_dest_end(s, i + 2)
                if end < 0:
                    return _without(s[:start], unopened(start)) + label
                i = end + 1
                continue
            i += 1
        else:
            i += 1
    return _without(s, unopened(n))


def _strip_dangling_markers(s: str) -> str:
    """Drop a trailing ``**``/``_``/``~~`` run that has no text after it yet."""
    end = len(s)
    while end and s[end - 1] in "*_~":
        end -= 1
    if end < len(s) and (end == 0 or s[end - 1].isspace()):
        return s[:end].rstrip()
    return s


_MAX_HEAL = 8  # more open markers than this is not an answer mid-sentence: leave them be


def _heal_inline(content: str) -> str:
    s = _strip_dangling_markers(_heal_syntax(content).rstrip())
    if not any(c in s for c in "*_~"):
        return s
    sink: list[str] = []
    _MD.inline.parse(s, _MD, {_UNCLOSED: sink}, [])
    if not sink or len(sink) > _MAX_HEAL:
        return s
    closed = s + "".join(reversed(sink))
    check: list[str] = []
    _MD.inline.parse(closed, _MD, {_UNCLOSED: check}, [])
    return s if check else closed


def _heal_tokens(tokens: list[Token], src: str) -> None:
    """Rewrite the last inline run if it reaches the (still streaming) end of the text."""
    n_lines = src.count("\n") + (0 if src.endswith("\n") else 1)
    for idx in range(len(tokens) - 1, -1, -1):
        tok = tokens[idx]
        if tok.nesting == 0:
            break
    else:
        return
    if not tok.map or tok.map[1] < n_lines:
        return
    if tok.type == "fence" and not tok.content.strip():
        tok.meta["hide"] = True  # a code block with nothing in it yet
        return
    if tok.type != "inline":
        return  # an hr, html or indented code block ends the text: nothing to heal
    parent = tokens[idx - 1] if idx else None
    if parent is not None and parent.type == "paragraph_open" and tok.content.startswith("|"):
        parent.meta["hide"] = True  # a table header waiting for its |---| row
        return
    healed = _heal_inline(tok.content)
    if healed != tok.content:
        tok.content = healed
        tok.children = _MD.inline.parse(healed, _MD, {}, [])


def _parse(md: str, *, final: bool) -> list[Token]:
    src = _normalize(md)
    if not final:
        src = _drop_unfinished_line(src)
    tokens = _MD.parse(src)
    if not final:
        _heal_tokens(tokens, src)
    return tokens


def _heal_source(md: str) -> str:
    """The streaming-safe version of ``md`` as Markdown, for renderers we do not control.

    The same repairs as the token-level healing, written back into the text: Slack's
    ``markdown`` block renders CommonMark itself, so it needs the repaired source.
    """
    src = _drop_unfinished_line(_normalize(md))
    tokens = _BLOCKS.parse(src)
    n_lines = src.count("\n") + (0 if src.endswith("\n") else 1)
    for idx in range(len(tokens) - 1, -1, -1):
        tok = tokens[idx]
        if tok.nesting == 0:
            break
    else:
        return src
    if tok.type == "inline" and tok.map and tok.map[1] >= n_lines:
        if idx and tokens[idx - 1].type == "paragraph_open" and tok.content.startswith("|"):
            return "".join(_lines(src)[: tok.map[0]]).rstrip()
        healed = _heal_inline(tok.content)
        common = 0
        for a, b in zip(tok.content, healed, strict=False):
            if a != b:
                break
            common += 1
        gone = tok.content[common:]
        body = src.rstrip()
        # Only when the changed tail reads the same in the source (no quote/list prefixes in it).
        if healed != tok.content and body.endswith(gone):
            return body[: len(body) - len(gone)] + healed[common:]
        return src
    if tok.type == "fence" and tok.map and tok.map[1] >= n_lines:
        lines = _lines(src)
        if not tok.content.strip():
            return "".join(lines[: tok.map[0]]).rstrip()
        region = _regions([tok], lines)[0]
        if region.last >= tok.map[1]:  # still open: close it
            return src.rstrip("\n") + "\n" + region.close
    return src


# --- Walker -------------------------------------------------------------------------------------


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


_SLACK = SlackDialect()
_TEAMS = TeamsDialect()


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


def to_slack_mrkdwn(md: str, *, final: bool = False) -> str:
    """Render Dify Markdown as Slack mrkdwn (``text`` of chat.postMessage/update, section text).

    ``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>``, "•" lists, headings as bold lines,
    code spans and fences (language dropped), ``>`` quotes, tables as an aligned code block,
    images as links, HTML as escaped text. Without ``final`` the end is treated as still
    streaming (see the module docstring).
    """
    return _render(_SLACK, md, "text", final)


def to_teams_markdown(
    md: str, *, tables: Literal["text", "card"] = "text", final: bool = False
) -> str:
    """Render Dify Markdown in the subset Teams text messages support.

    Headings become ``**bold**`` lines. Tables become an aligned code block (``tables="text"``)
    or the marker "(see table below)" when the caller sends :func:`teams_table_card` cards for
    :func:`extract_tables` (``tables="card"``).
    """
    if tables not in ("text", "card"):
        raise ValueError(f'tables must be "text" or "card", got {tables!r}')
    return _render(_TEAMS, md, tables, final)


def extract_tables(md: str) -> list[Table]:
    """Every GFM table in the text, in order, with plain-text cells."""
    tokens = _BLOCKS.parse(_normalize(md))
    pairs = _closers(tokens)
    return [_table_at(tokens, i, pairs[i]) for i, t in enumerate(tokens) if t.type == "table_open"]


# --- Splitting ----------------------------------------------------------------------------------


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


def _tables_as_code(md: str) -> str:
    """Replace top-level tables with aligned code blocks (Slack's markdown block has no tables)."""
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


# Slack syntax that would notify people. A model can be talked into writing it, and Slack's
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
    text = _defuse_mentions(_tables_as_code(_normalize(md) if final else _heal_source(md)).strip())
    if not text:
        return []
    return [{"type": "markdown", "text": part} for part in split_markdown(text, limit)]
