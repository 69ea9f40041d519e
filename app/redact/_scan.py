"""Shared pieces of the recognizers: the raw finding tuple, priorities, cheap scans."""

from __future__ import annotations

import string

Raw = tuple[str, int, int, int]
"""``(type, start, end, priority)``; the redactor resolves overlaps by priority."""

# Credentials in a link outrank a token inside them ("https://bot:glpat-…@host"): the
# finding covers the whole user:password part.
P_SECRET, P_URLCRED, P_EMAIL, P_IBAN, P_ID, P_IP, P_PHONE = 100, 102, 80, 70, 60, 55, 50


def is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


_last_digit_scan: tuple[str, int] = ("", -1)


def first_digit(t: str) -> int:
    """Index of the first ASCII digit, or -1. Ten ``str.find`` calls beat one regex scan."""
    global _last_digit_scan
    # Several recognizers ask about the same text in a row: remember the last answer.
    last_text, last_index = _last_digit_scan
    if last_text is t:
        return last_index
    end = len(t)
    best = -1
    for d in "0123456789":
        i = t.find(d, 0, end)
        if i != -1:
            best = end = i
    _last_digit_scan = (t, best)
    return best


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def lower_same_length(t: str) -> str:
    """Lower case with the same length (``str.lower`` may grow some non-ASCII characters)."""
    low = t.lower()
    return low if len(low) == len(t) else t.translate(_ASCII_LOWER)
