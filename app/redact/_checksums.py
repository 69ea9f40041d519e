"""Check digits and structural rules for numeric identifiers.

Each function takes the identifier's digits (and letters, for IBAN/CN ids) with separators
already removed and answers whether it is well formed. They are pure and cheap: the recognizers
call them only on candidates a regex already found.
"""

from __future__ import annotations

import datetime as _dt


def luhn_ok(digits: str) -> bool:
    """Payment card check digit (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_prefix_ok(digits: str) -> bool:
    """Issuer prefix and length of the major schemes (Visa, Mastercard, Amex, JCB, ...)."""
    n = len(digits)
    p2 = int(digits[:2])
    p4 = int(digits[:4])
    if digits[0] == "4":
        return n in (16, 19)  # Visa (13-digit cards are no longer issued)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # Amex
    # Lengths as issued in practice: the longer ranges the standards allow would swallow
    # 18-digit ids with a wrong check digit.
    if p2 == 35:
        return n == 16  # JCB (3528-3589 assigned; test generators use all of 35xx)
    if digits.startswith(("2131", "1800")):
        return n == 15  # JCB, old 15-digit ranges
    if p2 in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return n in (14, 16)  # Diners
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return n in (16, 19)  # Discover
    if p2 == 62:
        return n in (16, 19)  # UnionPay
    if p2 == 50 or 56 <= p2 <= 69:
        return n in (16, 19)  # Maestro
    return False


# ISO 13616 IBAN lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """Length for the country and the ISO 7064 mod 97-10 check."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """US SSN ranges never issued: area 000/666/9xx, group 00, serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def my_number_ok(digits: str) -> bool:
    """Japan individual number (マイナンバー): 12 digits, the last one a mod-11 check digit."""
    if len(digits) != 12:
        return False
    base = digits[:11]
    total = 0
    for n in range(1, 12):
        p = ord(base[11 - n]) - 48
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    r = total % 11
    check = 0 if r <= 1 else 11 - r
    return check == ord(digits[11]) - 48


def corporate_number_ok(digits: str) -> bool:
    """Japan corporate number (法人番号): 13 digits, the *first* one a mod-9 check digit."""
    if len(digits) != 13 or digits[0] == "0":
        return False
    base = digits[1:]
    total = 0
    for n in range(1, 13):
        p = ord(base[12 - n]) - 48
        total += p * (1 if n % 2 else 2)
    return 9 - total % 9 == ord(digits[0]) - 48


_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_CHECK = "10X98765432"
_CN_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
    ]
)


def cn_resident_id_ok(value: str) -> bool:
    """China resident id: province code, a real birth date, ISO 7064 mod 11-2 check."""
    if len(value) != 18 or not value[:17].isdigit() or value[:2] not in _CN_PROVINCES:
        return False
    try:
        born = _dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > _dt.date.today():
        return False
    total = sum(int(value[i]) * _CN_WEIGHTS[i] for i in range(17))
    return _CN_CHECK[total % 11] == value[17].upper()


def th_national_id_ok(digits: str) -> bool:
    """Thailand national id: 13 digits, first 1-8, mod-11 check digit."""
    if len(digits) != 13 or digits[0] in "09":
        return False
    total = sum((ord(digits[i]) - 48) * (13 - i) for i in range(12))
    return (11 - total % 11) % 10 == ord(digits[12]) - 48
