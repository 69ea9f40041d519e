"""Healing the unfinished end of an answer that is still streaming.

The edit scheduler renders the answer-so-far on every edit, so by default the end of the input
is treated as *still streaming*: an open code fence is closed, ``**bol`` is shown bold,
``[foo](htt`` shows ``foo``, a lone ``-`` or ``##`` line waits for its text, and a table header
waits for its delimiter row. Nothing appears that would jump to different formatting on the next
edit.
"""

from __future__ import annotations

import re

from markdown_it.token import Token

from app.render.parse import _BLOCKS, _MD, UNCLOSED, _normalize
from app.render.split import _lines, _regions

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
        # ~170 us per edit of a 2 KB paragraph; see docs/performance.md).
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
    _MD.inline.parse(s, _MD, {UNCLOSED: sink}, [])
    if not sink or len(sink) > _MAX_HEAL:
        return s
    closed = s + "".join(reversed(sink))
    check: list[str] = []
    _MD.inline.parse(closed, _MD, {UNCLOSED: check}, [])
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


def heal_source(md: str) -> str:
    """The streaming-safe version of ``md`` as Markdown, for renderers we do not control.

    The same repairs as the token-level healing, written back into the text: a platform
    that renders CommonMark itself needs the repaired source.
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
