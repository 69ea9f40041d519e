"""UK National Insurance numbers: ``AB 12 34 56 C``.

Two prefix letters, six digits, a suffix A-D. No check digit, so the prefix rules HMRC
publishes (National Insurance Manual NIM39110) carry the weight: the first letter is not D, F,
I, Q, U or V, the second not D, F, I, O, Q, U or V, and BG, GB, KN, NK, NT, TN and ZZ are never
allocated (so the "QQ 12 34 56 C" of forms and examples is not a number). Upper case as printed
on letters and payslips; lower or mixed case only after a label ("NI number", "NINO").
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from app.redact._scan import P_ID, Raw, first_digit
from app.redact._scan import is_word as _is_word

# Digits first (cheap for ``re`` to find), letters checked around them; each separator may be a
# space or a hyphen, and the six digits come in pairs or as one block.
_DIGITS = re.compile(r"\d\d(?:(?P<s>[ \-]?)\d\d(?P=s)\d\d|\d{4})[ \-]?(?P<suffix>[A-Da-d])")
_FIRST = frozenset("ABCEGHJKLMNOPRSTWXYZ")
_SECOND = frozenset("ABCEGHJKLMNPRSTWXYZ")
_NEVER = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_LABEL = re.compile(
    r"(?i)\b(?:ni|nino|nin|national insurance)(?:\s*(?:no\.?|number|#))?\s*[:=]?\s*$"
)


def prefix_ok(prefix: str) -> bool:
    """HMRC's allocation rules for the two prefix letters (upper case)."""
    return prefix[0] in _FIRST and prefix[1] in _SECOND and prefix not in _NEVER


def ninos(t: str) -> Iterator[Raw]:
    """National Insurance numbers in ``t`` (the folded text)."""
    start = first_digit(t)
    if start == -1:
        return
    for m in _DIGITS.finditer(t, max(0, start)):
        a, b = m.start(), m.end()
        if a >= 1 and t[a - 1] in " -":
            a -= 1  # "AB 123456 C"
        if a < 2 or (b < len(t) and _is_word(t[b])):
            continue
        prefix = t[a - 2 : a]
        if not (prefix.isascii() and prefix.isalpha()) or (a > 2 and _is_word(t[a - 3])):
            continue
        upper = prefix.isupper() and m.group("suffix").isupper()
        if not upper and not _LABEL.search(t[max(0, a - 40) : a - 2]):
            continue
        if prefix_ok(prefix.upper()):
            yield ("UK_NINO", a - 2, b, P_ID)
