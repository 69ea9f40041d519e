"""Fold full-width and look-alike characters to ASCII without moving any offset.

Japanese input methods produce full-width digits and separators (``０９０－１２３４－５６７８``);
Thai text may use Thai digits. Recognizers run on a folded copy of the text. Every mapping here is
one character to one character, so an offset into the folded copy is the same offset into the
original: findings point at the user's own characters and redaction replaces exactly them.
"""

from __future__ import annotations

import re

_FOLD: dict[int, int] = {}
# Full-width ASCII block (！..～) maps onto ASCII (!..~).
for _cp in range(0xFF01, 0xFF5F):
    _FOLD[_cp] = _cp - 0xFEE0
# Spaces: ideographic, no-break and the typographic ones.
for _cp in (0x3000, 0x00A0, 0x202F, 0x205F, *range(0x2000, 0x200B)):
    _FOLD[_cp] = 0x20
# Dashes people type between digit groups (the katakana prolonged sound mark, which IMEs also
# produce for "-", is handled in fold(): it is a dash only between digits).
for _cp in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212, 0xFE63):
    _FOLD[_cp] = 0x2D
# Thai digits ๐..๙.
for _cp in range(0x0E50, 0x0E5A):
    _FOLD[_cp] = _cp - 0x0E50 + 0x30
_FOLD[0xFF61] = 0x2E  # ｡ half-width ideographic full stop
# The full-width slash separates items in CJK text ("sato@example.jp／080-4421-9087"); as "/"
# it would glue the number to the address before it like a path.
_FOLD[0xFF0F] = 0x20

# Runs of characters to fold; Japanese prose has few (full-width punctuation), so folding only
# the runs is much cheaper than translating the whole text.
_FOLD_RUN = re.compile(
    "[\uff01-\uff5e\u3000\u00a0\u202f\u205f\u2000-\u200a\u2010-\u2015\u2212\ufe63"
    "\u0e50-\u0e59\uff61]+"
)
_CHOON = ("\u30fc", "\uff70")


def _fold_run(m: re.Match[str]) -> str:
    return m.group().translate(_FOLD)


def fold(text: str) -> str:
    """Return ``text`` with full-width/look-alike characters mapped to ASCII, same length."""
    if text.isascii():
        return text
    folded = _FOLD_RUN.sub(_fold_run, text)
    # The prolonged sound mark is a dash only between digits ("０９０ー１２３４"): elsewhere it
    # is part of a word (パスワード must stay a word the secret recognizer knows).
    dashes: list[int] = []
    for mark in _CHOON:
        i = folded.find(mark)
        while i != -1:
            if 0 < i < len(folded) - 1 and folded[i - 1].isdigit() and folded[i + 1].isdigit():
                dashes.append(i)
            i = folded.find(mark, i + 1)
    if dashes:
        chars = list(folded)
        for i in dashes:
            chars[i] = "-"
        folded = "".join(chars)
    return folded
