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
# Dashes people type between digit groups, including the katakana prolonged sound mark that
# Japanese IMEs produce for "-" in phone numbers.
for _cp in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212, 0xFE63):
    _FOLD[_cp] = 0x2D
# Thai digits ๐..๙.
for _cp in range(0x0E50, 0x0E5A):
    _FOLD[_cp] = _cp - 0x0E50 + 0x30
# Ideographic full stop/comma used as separators in CJK text.
_FOLD[0x3002] = 0x2E  # 。
_FOLD[0x3001] = 0x2C  # 、
_FOLD[0xFF61] = 0x2E  # ｡

_NEEDS_FOLD = re.compile(
    "[\uff01-\uff5e\u3000\u00a0\u202f\u205f\u2000-\u200a\u2010-\u2015\u2212\u30fc\uff70\ufe63"
    "\u0e50-\u0e59\u3001\u3002\uff61]"
)


# The prolonged sound mark is a dash only between digits: elsewhere it is part of a word
# (パスワード must stay a word the secret recognizer knows).
_CHOON_DASH = re.compile("(?<=[0-9])[\u30fc\uff70](?=[0-9])")


def fold(text: str) -> str:
    """Return ``text`` with full-width/look-alike characters mapped to ASCII, same length."""
    if text.isascii() or _NEEDS_FOLD.search(text) is None:
        return text
    folded = text.translate(_FOLD)
    if "\u30fc" in folded or "\uff70" in folded:
        folded = _CHOON_DASH.sub("-", folded)
    return folded
