"""Turn placeholders in Dify's answer (``<EMAIL_1>``) back into the asker's values.

Models do not always echo a placeholder byte for byte: Markdown escapes the underscore
(``EMAIL\\_1``), HTML escapes the brackets (``&lt;EMAIL_1&gt;``), Japanese answers use full-width
brackets, and sometimes the brackets are dropped. All of these are restored. While the answer
streams, a placeholder can arrive in pieces (``... <EMA`` then ``IL_1> ...``); :meth:`partial`
hides such an unfinished tail so the asker never sees it flash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from app.redact._types import ENTITY_TYPES

_TYPES = "|".join(t.replace("_", r"\\?_") for t in sorted(ENTITY_TYPES, key=len, reverse=True))
_PLACEHOLDER = re.compile(
    r"(?:<|&lt;|\\<|＜)\s*(?P<t>" + _TYPES + r")\\?_(?P<n>\d{1,5})\s*(?:\\>|>|&gt;|＞)"
    r"|(?<![A-Za-z0-9_\\])(?P<bt>" + _TYPES + r")\\?_(?P<bn>\d{1,5})(?![0-9A-Za-z_])"
)
# An unfinished placeholder at the very end of the text so far.
_TAIL = re.compile(
    r"(?:<|&lt;|&lt|&l|&|\\<|\\|＜)\s*(?P<core>[A-Z_\\]{0,30}\d{0,5})(?:\s*(?:&gt|&g|&|\\))?$"
    r"|(?<![A-Za-z0-9_\\])(?P<bare>[A-Z][A-Z_\\]{0,30}\d{0,5})$"
)


def placeholder(entity_type: str, n: int) -> str:
    """The pseudonym written into the text sent to Dify."""
    return f"<{entity_type}_{n}>"


class Restorer:
    """Restores one thread's placeholders in answer text. Holds values: never log it."""

    __slots__ = ("_prefixes", "_values")

    def __init__(self, values: Mapping[str, str]) -> None:
        """``values`` maps ``"EMAIL_1"`` (placeholder without brackets) to the original text."""
        self._values = dict(values)
        prefixes: set[str] = set()
        for key in self._values:
            prefixes.update(key[:i] for i in range(len(key) + 1))
        self._prefixes = frozenset(prefixes)

    def __repr__(self) -> str:  # never show values, even in a debugger or a traceback
        return f"Restorer({len(self._values)} placeholders)"

    def __len__(self) -> int:
        return len(self._values)

    def _sub(self, m: re.Match[str]) -> str:
        t = m.group("t") or m.group("bt")
        n = m.group("n") or m.group("bn")
        value = self._values.get(f"{t.replace(chr(92), '')}_{n}")
        return m.group() if value is None else value

    def final(self, text: str) -> str:
        """Restore every complete placeholder in the finished answer."""
        if not self._values:
            return text
        return _PLACEHOLDER.sub(self._sub, text)

    def partial(self, text_so_far: str) -> str:
        """Restore complete placeholders; hide a trailing unfinished one (``... <EMA``)."""
        if not self._values:
            return text_so_far
        n = len(text_so_far)
        # The longest tail that could still become a placeholder is held back.
        for p in range(max(0, n - 48), n):
            ch = text_so_far[p]
            if ch not in "<&\\＜" and not ("A" <= ch <= "Z"):
                continue
            m = _TAIL.match(text_so_far, p)
            if m is None or m.end() != n:
                continue
            core = (m.group("core") if m.group("core") is not None else m.group("bare")) or ""
            if core.replace("\\", "") in self._prefixes:
                return self.final(text_so_far[:p])
        return self.final(text_so_far)
