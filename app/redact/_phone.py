"""Phone number validation with ``phonenumbers``, without its slow text parser on the hot path.

``phonenumbers.parse`` costs ~35 us and ``PhoneNumberMatcher`` ~150 us per KB of text, so the
recognizer finds digit runs itself and this module only checks a candidate's *digits* against the
library's metadata: it builds a ``PhoneNumber`` directly and asks ``is_valid_number_for_region``
(~10 us). National formats are tried for the regions our users write (JP, US, GB, DE, CN, TH),
in an order that follows the script around the number.
"""

from __future__ import annotations

from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    PhoneNumber,
    is_valid_number,
    is_valid_number_for_region,
)

# Regions with a "0" trunk prefix, and their country codes.
_TRUNK_ZERO: dict[str, int] = {"JP": 81, "GB": 44, "DE": 49, "TH": 66, "CN": 86}
DEFAULT_ORDER: tuple[str, ...] = ("JP", "GB", "DE", "TH", "CN")
# National number lengths (without the trunk 0) worth asking the library about.
_NATIONAL_LEN: dict[str, tuple[int, int]] = {
    "JP": (9, 10),
    "GB": (9, 10),
    "DE": (5, 13),
    "TH": (8, 9),
    "CN": (9, 11),
}


def _valid(cc: int, national: str, region: str) -> bool:
    if not national or len(national) > 15:
        return False
    num = PhoneNumber(country_code=cc, national_number=int(national))
    return bool(is_valid_number_for_region(num, region))


def valid_international(digits: str) -> bool:
    """``digits`` follow a ``+`` or ``00``: country code then national number."""
    for size in (1, 2, 3):
        if len(digits) <= size:
            return False
        cc = int(digits[:size])
        regions = COUNTRY_CODE_TO_REGION_CODE.get(cc)
        if not regions:
            continue
        national = digits[size:]
        # "+81 090-..." keeps the trunk 0 by mistake; "+44 (0)20 ..." writes it in parentheses.
        if national.startswith("0") and cc != 39:
            national = national[1:]
        main = regions[0]
        if cc == 1:
            return valid_nanp(national)
        if _valid(cc, national, main):
            return True
        # Shared country codes (e.g. +7, +44 with GG/JE/IM) have more than one region.
        return any(_valid(cc, national, r) for r in regions[1:4])
    return False


def valid_national_zero(digits: str, order: tuple[str, ...] = DEFAULT_ORDER) -> bool:
    """A national number starting with the trunk prefix 0, in any of our regions."""
    national = digits[1:]
    n = len(national)
    for region in order:
        lo, hi = _NATIONAL_LEN[region]
        if lo <= n <= hi and _valid(_TRUNK_ZERO[region], national, region):
            return True
    return False


def valid_nanp(digits: str) -> bool:
    """US/Canada: 10 digits, or 11 with the leading 1."""
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) != 10 or digits[0] in "01":
        return False
    # Any NANP country (US, CA, JM, DO, ...): the library checks the area code's region.
    return bool(is_valid_number(PhoneNumber(country_code=1, national_number=int(digits))))


def valid_cn_mobile(digits: str) -> bool:
    """China mobile numbers are written without a trunk prefix: 1[3-9] and 11 digits."""
    return len(digits) == 11 and _valid(86, digits, "CN")
