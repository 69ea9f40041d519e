"""Phone number validation with ``phonenumbers``, without its slow text parser on the hot path.

``phonenumbers.parse`` costs ~35 us and ``PhoneNumberMatcher`` ~150 us per KB of text, so the
recognizer finds digit runs itself and this module only checks a candidate's *digits* against the
library's metadata: it builds a ``PhoneNumber`` directly and asks ``is_valid_number_for_region``
(~10 us). National formats are tried for the regions our users write (JP, US, GB, DE, CN, TH),
in an order that follows the script around the number.
"""

from __future__ import annotations

import re

from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    is_possible_number,
    is_valid_number,
    is_valid_number_for_region,
    parse,
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


_Desc = tuple[re.Pattern[str], frozenset[int]]
# Most numbers people paste are mobile or fixed line: check those first.
_TYPES = ("mobile", "fixed_line", "toll_free", "premium_rate", "shared_cost", "voip",
          "personal_number", "pager", "uan", "voicemail")  # fmt: skip


def _compile(region: str) -> tuple[_Desc, tuple[_Desc, ...]]:
    """The library's own validity rule for one region, with its patterns compiled once."""
    md = PhoneMetadata.metadata_for_region(region)
    assert md is not None and md.general_desc is not None

    def desc(d: object) -> _Desc | None:
        pattern = getattr(d, "national_number_pattern", None)
        if pattern is None:
            return None
        return re.compile(pattern), frozenset(getattr(d, "possible_length", ()) or ())

    general = desc(md.general_desc)
    assert general is not None
    types = tuple(x for x in (desc(getattr(md, name)) for name in _TYPES) if x is not None)
    return general, types


# Same answer as ``is_valid_number_for_region`` (a number is valid when it matches the general
# description and any number type), without building objects or looking patterns up per call.
_FAST: dict[str, tuple[_Desc, tuple[_Desc, ...]]] = {
    r: _compile(r) for r in ("JP", "GB", "DE", "TH", "CN", "US", "CA")
}


def _matches(national: str, d: _Desc) -> bool:
    pattern, lengths = d
    return (not lengths or len(national) in lengths) and pattern.fullmatch(national) is not None


def _valid(cc: int, national: str, region: str) -> bool:
    if not national or len(national) > 15:
        return False
    fast = _FAST.get(region)
    if fast is not None:
        general, types = fast
        return _matches(national, general) and any(_matches(national, d) for d in types)
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
    if _valid(1, digits, "US") or _valid(1, digits, "CA"):
        return True
    # Other NANP countries (JM, DO, ...): the library finds the area code's region.
    return bool(is_valid_number(PhoneNumber(country_code=1, national_number=int(digits))))


def valid_cn_mobile(digits: str) -> bool:
    """China mobile numbers are written without a trunk prefix: 1[3-9] and 11 digits."""
    return len(digits) == 11 and _valid(86, digits, "CN")


def valid_in_regions(written: str, regions: tuple[str, ...]) -> bool:
    """``written`` (digits and separators, no ``+``) is a valid national number in one of
    ``regions``. The library's own parser handles each country's trunk prefix; it is slow
    (~17 us a region), so callers ask only when the context names a phone or a country."""
    for region in regions:
        try:
            num = parse(written, region)
        except NumberParseException:
            continue
        if is_valid_number_for_region(num, region):
            return True
    return False


def possible_international(written: str) -> bool:
    """``written`` ("+44 7700 900123") has a known country code and a length that country
    uses, whether or not the range is assigned."""
    try:
        return bool(is_possible_number(parse(written, None)))
    except NumberParseException:
        return False
