"""Digit runs: payment cards, national ids, SSNs, phone numbers and IPv4 addresses.

One loose scan finds stretches of digits and separators; a precise pattern splits them into
candidates; cheap context rules (what label stands before the number, which script is around
it) and check digits decide. Boundaries are ASCII-only: ``\\b`` would treat Japanese, Chinese
or Thai characters as word characters and miss ``電話090-1234-5678です``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from app.redact import _checksums as ck
from app.redact import _phone, _phone_cues
from app.redact._scan import P_ID, P_IP, P_PHONE, Raw, first_digit
from app.redact._scan import is_word as _is_word

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}(?:/\d{{1,3}})?")

# --------------------------------------------------------------------------- digit runs

# Starts with a digit so ``re`` can skip ahead to digits; a "+" or "(" in front is added after.
# At least 7 characters ("8.8.8.8"), so the many short numbers in text never reach Python.
# Dates (with a time) are consumed whole by the first branch and skipped cheaply: log lines
# are full of them.
_NUM = re.compile(
    r"(?P<date>(?:19|20)\d\d(?P<dsep>[-/.])(?:0?[1-9]|1[0-2])(?P=dsep)(?:0?[1-9]|[12]\d|3[01])(?![\d])"
    r"(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?)?)"
    r"|\d(?:[\d)]|[ \-./(]{1,2}(?=\d)){6,}"
)
_GROUP = re.compile(r"\d+")
_NOT_SEPARATORS = frozenset("0123456789+")
_SEPS = str.maketrans("", "", " -./()+")
_DATE = re.compile(r"(?:19|20)\d\d[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:19|20)\d\d")
# Context rules look at the few characters before a number. Python's ``re`` cannot search
# backwards cheaply, so these are suffix checks on the stripped text in front.
_LABEL_TAIL = " \t\"'#:：=."
_REF_WORDS = (
    "order", "invoice", "ticket", "tracking", "shipment", "parcel", "booking", "reservation",
    "reference", "ref", "case", "incident", "build", "issue", "job", "run", "po", "sku", "item",
    "product", "serial", "model", "part", "account no", "注文", "受注", "発注", "伝票",
    "問い合わせ", "予約", "請求書", "お問合せ", "订单", "单号", "工单", "快递", "เลขที่คำสั่งซื้อ",
    # product and barcode numbers: a JAN/EAN code may pass a national id's check digit
    "商品コード", "janコード", "jan", "ean", "ean-13", "ean13", "gtin", "upc", "barcode",
    "バーコード", "品番", "型番", "条码",
    "商品编码", "货号", "บาร์โค้ด", "รหัสสินค้า",
    # the same records in the other languages whose phone words are known
    "commande", "facture", "dossier", "référence", "série", "colis", "bestellung",
    "bestellnummer", "rechnung", "rechnungsnummer", "auftrag", "auftragsnummer", "kundennummer",
    "vorgang", "vorgangsnummer", "sendungsnummer", "seriennummer", "pedido", "factura",
    "referencia", "encomenda", "fatura", "referência", "ordine", "fattura", "주문", "송장",
    "운송장", "예약",
)  # fmt: skip
_REF_SUFFIXES = ("no", "number", "num", "id", "code", "番号", "号", "nr", "nº", "n°", "numéro",
                 "numero", "número", "nummer", "번호")  # fmt: skip
# "order number is", "le numéro de commande est": the verb between a label and its value.
_LABEL_VERBS = (" is", " es", " est", " ist", " é", " è", " lautet", "は", "是", "คือ", "는", "은")
# Identifier-style keys in code and JSON: user_id, orderId, item_count, "size": ...
_ID_KEYS = ("_id", "Id", "_no", "_num", "_count", "Count", "_size", "Size", "_bytes", "_seq",
            "_offset", "_nonce")  # fmt: skip
_TIME_WORDS = ("ts", "time", "timestamp", "epoch", "created", "updated", "modified", "date",
               "_at", "millis", "ms", "seconds")  # fmt: skip
_VERSION_WORDS = ("version", "ver", "ver.", "release", "firmware", "build", "rev", "v")
_PHONE_WORDS = ("call", "phone", "tel", "mobile", "cell", "fax", "contact", "reach", "text me",
                "sms", "whatsapp", "line", "number", "dial", "電話", "携帯", "連絡", "番号",
                "电话", "手机", "联系", "โทร", "เบอร์", "ติดต่อ")  # fmt: skip
_SSN_WORDS = ("ssn", "social security", "社会保障")
_CARD_WORDS = ("card", "visa", "カード", "クレジット", "卡", "karte", "carte", "tarjeta", "cartão",
               "cartao", "carta", "บัตร", "카드")  # fmt: skip
_ID_CARD_WORDS = ("id card", "identity card", "บัตรประชาชน", "บัตรประจำตัว", "マイナンバーカード",
                  "個人番号カード", "身份证", "carte d'identité", "tarjeta de identidad",
                  "personalausweis", "주민등록")  # fmt: skip
# Key names for a person's own numbers, which no "_id"/"_no" suffix makes a record number.
_PERSONAL_KEYS = ("card", "phone", "tel", "mobile", "cell", "fax", "national", "resident",
                  "citizen", "ssn", "nino", "insurance", "passport", "tax", "mynumber",
                  "my_number", "kojin", "personal", "iban", "sfz", "shenfen", "identity",
                  "contact")  # fmt: skip


def _ends_with_word(low: str, words: tuple[str, ...]) -> bool:
    """``low`` ends with one of ``words``, not as the tail of a longer ASCII word."""
    if not low.endswith(words):
        return False
    for w in words:
        if low.endswith(w):
            i = len(low) - len(w)
            if i == 0 or not (w[0].isascii() and w[0].isalpha()):
                return True
            if not (low[i - 1].isascii() and low[i - 1].isalpha()):
                return True
    return False


def _reference_label(before: str) -> bool:
    """``before`` ends with a label for a reference number: "Order #", "注文番号：", "user_id":"""
    s = before.rstrip(_LABEL_TAIL)
    if s.endswith(_ID_KEYS) and any(c in before[len(s) :] for c in ":="):
        key = next(k for k in _ID_KEYS if s.endswith(k))
        if len(s) > len(key) and s[-len(key) - 1].isascii() and s[-len(key) - 1].isalnum():
            # "national_id", "card_no", "phoneNo" name the person's own numbers, not records.
            stem = s[max(0, len(s) - len(key) - 24) : len(s) - len(key)].lower()
            return not any(w in stem for w in _PERSONAL_KEYS)
    low = s.lower()
    if low.endswith(_LABEL_VERBS):
        low = low[: low.rfind(next(v for v in _LABEL_VERBS if low.endswith(v)))].rstrip(_LABEL_TAIL)
    if _ends_with_word(low, _REF_WORDS):
        return True
    if not low.endswith(_REF_SUFFIXES):
        return False
    for suffix in _REF_SUFFIXES:
        if _ends_with_word(low, (suffix,)):
            head = low[: -len(suffix)].rstrip(_LABEL_TAIL)
            # "numéro de commande", "número do pedido": the record word after the number word
            return _ends_with_word(head, _REF_WORDS)
    return _mentions_record_after_number(low)


_OF = re.compile(r"(?:numéro|numero|número|nummer|number|n°|nº|no\.?)\s+(?:de|do|da|del|of|der)\s+")


def _mentions_record_after_number(low: str) -> bool:
    """``numéro de commande``, ``número do pedido``, ``number of the order``: a record."""
    for m in _OF.finditer(low, max(0, len(low) - 40)):
        tail = low[m.end() :].split()
        if tail and tail[-1] in _REF_WORDS and len(tail) <= 2:
            return True
    return False


def _time_label(before: str) -> bool:
    """``before`` ends with a time key: ``"ts": ``, ``created_at=``."""
    s = before.rstrip(" \t\"'")
    if not s.endswith((":", "=")):
        return False
    return _ends_with_word(s[:-1].rstrip(" \t\"'").lower(), _TIME_WORDS)


def _version_label(before: str) -> bool:
    if before.endswith(("==", ">=", "<=", "~=")):
        return True
    s = before.rstrip(" \t:=")
    # No "@": "user@10.0.0.5" and "postgres://u:p@10.0.0.5" name hosts; a package pinned to a
    # four-part version is rare enough to redact.
    return s.endswith(("==", ">=", "<=", "~=")) or _ends_with_word(s.lower(), _VERSION_WORDS)


def _mentions(window: str, words: tuple[str, ...]) -> bool:
    low = window.lower()
    return any(w in low for w in words)


_TH_WORDS = re.compile(
    r"(?i)thai|thailand|タイの|タイ国|泰国|บัตรประชาชน|เลขประจำตัว|ประชาชน|national id|citizen id"
)
_JP_CORP_WORDS = re.compile(r"(?i)法人|corporate|登録番号|invoice registration|適格|นิติบุคคล")
_EXTENSION = re.compile(r"\s?(?:x|ext\.?|extension|内線)\s?\d{1,6}")
_NANP_SHAPE = re.compile(r"(?:1[ \-.])?(?:\(\d{3}\)\s?|\d{3}[ \-.])\d{3}[ \-.]\d{4}")
_KANA = re.compile("[\u3040-\u30ff]")
_THAI = re.compile("[\u0e00-\u0e7f]")
_HAN = re.compile("[\u4e00-\u9fff]")


class _Ctx:
    """Per-message facts that several candidates need; computed lazily, once."""

    __slots__ = ("_order", "regions", "t")

    def __init__(self, t: str, regions: tuple[str, ...] = ()) -> None:
        self.t = t
        self.regions = regions
        self._order: tuple[str, ...] | None = None

    def before(self, pos: int, width: int = 40) -> str:
        return self.t[max(0, pos - width) : pos]

    def region_order(self) -> tuple[str, ...]:
        if self._order is None:
            t = self.t
            # National formats are ambiguous across countries (DE accepts almost any length):
            # in Japanese or Thai text only that country's numbering plan is tried.
            if _KANA.search(t):
                self._order = ("JP",)
            elif _THAI.search(t):
                self._order = ("TH",)
            elif _HAN.search(t):
                self._order = ("CN", "JP")
            else:
                self._order = _phone.DEFAULT_ORDER
        return self._order

    def phone_words(self, a: int, b: int) -> tuple[str, ...] | None:
        """Regions of the phone words just around ``t[a:b]``, ``None`` if there are none."""
        t = self.t
        return _phone_cues.phone_word_regions(t[max(0, a - 48) : a] + " " + t[b : b + 32])

    def cue_regions(self, a: int, b: int, plain: bool) -> tuple[str, ...]:
        """Regions whose national plans ``t[a:b]`` may be tried in, from its context: phone
        words around it, countries named near it, the route's ``phone_regions``. Digits with
        no separator ("0612345678") need a phone word: alone they are as likely an id."""
        words = self.phone_words(a, b)
        if words is None and plain:
            return ()
        countries = _phone_cues.country_regions(self.t[max(0, a - 160) : b + 80])
        return tuple(dict.fromkeys((*countries, *self.regions, *(words or ()))))


def _th_or_corporate(digits: str, near: str, prev: str) -> str:
    """Both check digits pass (about 1 in 9 of either kind): decide by context, then shape."""
    if prev == "T" or _JP_CORP_WORDS.search(near):
        return "JP_CORPORATE_NUMBER"
    if _TH_WORDS.search(near) or _THAI.search(near):
        return "TH_NATIONAL_ID"
    # A corporate number's base is a registry office code (0xxx-4xxx) and a kind 01-05; most
    # Thai ids start with 1 or 3 (the person's category).
    corporate_shape = digits[1] in "01234" and digits[5:7] in ("01", "02", "03", "04", "05")
    if corporate_shape and digits[1] == "0":
        return "JP_CORPORATE_NUMBER"  # Thai province codes (digits 2-3) are 10-96
    if not corporate_shape:
        return "TH_NATIONAL_ID"
    if digits[0] not in "13" or _KANA.search(near):
        return "JP_CORPORATE_NUMBER"
    return "TH_NATIONAL_ID"


def _classify(ctx: _Ctx, a: int, b: int) -> Raw | None:
    """Decide what the digit run ``t[a:b]`` is, or ``None`` for an ordinary number."""
    t = ctx.t
    s = t[a:b]
    if "." in s and _IPV4.fullmatch(s):
        if _version_label(t[max(0, a - 12) : a]) or _glued(t, a):
            return None
        return ("IP_ADDRESS", a, b, P_IP)
    digits = s.translate(_SEPS)
    n = len(digits)
    if n < 8 or n > 19 or _DATE.match(s):
        return None
    groups = [len(g) for g in _GROUP.findall(s)]
    seps = set(s) - _NOT_SEPARATORS
    plain = len(groups) == 1 and s[0] != "+" and s[0] != "("
    nxt = t[b] if b < len(t) else ""

    # China resident id ends with the check character X.
    cn_groups = plain or (groups in ([6, 8, 3], [6, 4, 4, 3]) and seps <= {" ", "-"})
    if n == 17 and cn_groups and nxt in "Xx" and not _is_word(t[b + 1 : b + 2] or " "):
        if ck.cn_resident_id_ok(digits + "X"):
            return ("CN_RESIDENT_ID", a, b + 1, P_ID)
        return None
    if nxt and _is_word(nxt) and not (nxt in "xe" and s[0] in "+(0123456789"):
        return None
    if n == 18 and (plain or groups in ([6, 8, 4], [6, 4, 4, 4])) and ck.cn_resident_id_ok(digits):
        return ("CN_RESIDENT_ID", a, b, P_ID)

    before = ctx.before(a)
    if plain and _time_label(before):
        return None
    prev = t[a - 1] if a > 0 else ""

    if n == 13:
        kinds: list[str] = []
        if (plain or groups == [1, 4, 5, 2, 1]) and ck.th_national_id_ok(digits):
            kinds.append("TH_NATIONAL_ID")
        if plain and ck.corporate_number_ok(digits):
            kinds.append("JP_CORPORATE_NUMBER")
        if len(kinds) == 2:
            near = t[max(0, a - 40) : b + 20]
            kinds = [_th_or_corporate(digits, near, prev)]
        if kinds:
            start = a - 1 if prev == "T" and kinds[0] == "JP_CORPORATE_NUMBER" else a
            return (kinds[0], start, b, P_ID)
    if prev == "T":
        return None

    card_shape = plain or (
        len(seps) == 1 and seps <= {" ", "-"} and groups[0] == 4 and min(groups) >= 3
    )
    if 13 <= n <= 19 and card_shape and ck.card_prefix_ok(digits) and ck.luhn_ok(digits):
        return ("CREDIT_CARD", a, b, P_ID)
    # An old 13-digit Visa, or a number read out in fours ("4148 5253 8885 9"): only where the
    # message speaks of a card, as 13 digits are also ids and barcodes.
    dictated = len(seps) == 1 and seps <= {" ", "-"} and groups[:3] == [4, 4, 4]
    if (
        n == 13
        and digits[0] == "4"
        and (plain or dictated)
        and ck.luhn_ok(digits)
        and _mentions(t[max(0, a - 60) : b + 30], _CARD_WORDS)
        and not _mentions(t[max(0, a - 60) : b + 30], _ID_CARD_WORDS)
    ):
        return ("CREDIT_CARD", a, b, P_ID)
    grouped_444 = groups == [4, 4, 4] and len(seps) == 1 and seps <= {" ", "-"}
    if n == 12 and (plain or grouped_444) and ck.my_number_ok(digits):
        return ("JP_MY_NUMBER", a, b, P_ID)
    if (
        n == 9
        and len(seps) <= 1
        and seps <= {"-", " "}
        and (groups == [3, 2, 4] or (plain and _mentions(before, _SSN_WORDS)))
    ):
        if ck.ssn_ok(digits[:3], digits[3:5], digits[5:]):
            return ("US_SSN", a, b, P_ID)
        return None
    return _phone_at(ctx, a, b, s, digits, groups, plain)


def _phone_at(
    ctx: _Ctx, a: int, b: int, s: str, digits: str, groups: list[int], plain: bool
) -> Raw | None:
    n = len(digits)
    t = ctx.t
    if n > 15:
        return None
    ok = False
    if s[0] == "+":
        ok = n >= 8 and _phone.valid_international(digits)
        if not ok and n >= 8 and ctx.phone_words(a, b) is not None:
            # "Mobile: +44 7700 900123": ranges the metadata does not know as assigned yet (or
            # keeps for drama) are still phone numbers when the message says so.
            ok = _phone.possible_international(s)
    elif digits.startswith("00") and not plain and n >= 10:
        ok = _phone.valid_international(digits[2:])
    elif digits[0] == "0":
        # "0.123456789" is a decimal, not a number in Chitose.
        if (groups[0] == 1 and s[1:2] == ".") or n < 9:
            return None
        ok = _phone.valid_national_zero(digits, ctx.region_order())
    elif n == 11 and digits[0] == "1" and digits[1] in "3456789" and (plain or groups == [3, 4, 4]):
        ok = _phone.valid_cn_mobile(digits)
    elif n in (10, 11) and (
        _NANP_SHAPE.fullmatch(s)
        or (plain and n == 10 and _mentions(ctx.before(a, 48), _PHONE_WORDS))
    ):
        ok = _phone.valid_nanp(digits)
    # "(123) 456-7890" is written the US way: a wrong US number, not some other country's.
    us_way = s[0] == "(" and _NANP_SHAPE.fullmatch(s) is not None
    if not ok and s[0] != "+" and not digits.startswith("00") and not us_way:
        # Not one of the six plans tried everywhere: any country's, when the context says so.
        regions = ctx.cue_regions(a, b, plain)
        ok = bool(regions) and _phone.valid_in_regions(s, regions)
    if not ok:
        return None
    m = _EXTENSION.match(t, b)
    if m is not None and not _is_word(t[m.end() : m.end() + 1] or " "):
        b = m.end()
    elif b < len(t) and _is_word(t[b]):
        return None
    return ("PHONE", a, b, P_PHONE)


def _glued(t: str, a: int) -> bool:
    """``t[a:]`` continues a longer token ("v1.2.3.4", "ORD-2026-...", "build.20261123")."""
    prev = t[a - 1] if a > 0 else ""
    if _is_word(prev) or prev == ".":
        return True
    return (
        prev in "-/:" and a > 1 and _is_word(t[a - 2]) and not (prev == ":" and t[a - 2].isalpha())
    )


# A loose first pass (one character class, which ``re`` runs fast) finds the stretches worth
# the precise pattern; most digits in text are short numbers that never get that far.
_LOOSE = re.compile(r"\d[\d \-./()]{6,}")


def _candidates(t: str, start: int) -> Iterator[re.Match[str]]:
    for loose in _LOOSE.finditer(t, start):
        yield from _NUM.finditer(t, loose.start(), loose.end())


def numbers(t: str, regions: tuple[str, ...] = ()) -> Iterator[Raw]:
    """Digit runs: cards, national ids, SSNs, phone numbers. Validators run only on candidates.

    ``regions``: the route's ``phone_regions``, whose national numbers count as phones when
    written with separators ("612 34 56 78" for ES), or after a phone word."""
    ctx: _Ctx | None = None
    start = first_digit(t)
    if start == -1:
        return
    for m in _candidates(t, start):
        if m.lastgroup == "date":
            continue
        a, b = m.start(), m.end()
        if a > 0 and t[a - 1] in "+(":
            a -= 1
        s = t[a:b]
        # Cheap exit for the ordinary numbers that make up almost every match ("8.8.8.8" is 7).
        if b - a < 7 or (b - a == 7 and "." not in s):
            continue
        while s.endswith(")") and s.count("(") < s.count(")"):
            s, b = s[:-1], b - 1
        if s.startswith("(") and ")" not in s:
            s, a = s[1:], a + 1
        # "（4111111111111111）": brackets around the whole number, not a "(415)" area code.
        if s.startswith("(") and s.endswith(")") and s.count("(") == 1 and s.count(")") == 1:
            s, a, b = s[1:-1], a + 1, b - 1
        prev = t[a - 1] if a > 0 else ""
        glued = (_is_word(prev) and prev != "T") or prev == "#"
        glued = glued or (prev == "T" and a > 1 and _is_word(t[a - 2]))
        # Part of a longer token: "ORD-2026-000123", a UUID's last group, "build.20261123".
        glued = glued or (
            prev in "-./:"
            and a > 1
            and _is_word(t[a - 2])
            and not (prev == ":" and t[a - 2].isalpha())
        )
        if glued:
            # "...key6 230110198906239614": the first group belongs to the token, the rest not.
            space = s.find(" ")
            if space == -1 or b - (a + space + 1) < 8:
                continue
            a, s = a + space + 1, s[space + 1 :]
            prev = " "
        if ctx is None:
            ctx = _Ctx(t, regions)
        if prev != "T" and not s.startswith("+") and _reference_label(ctx.before(a, 32)):
            continue
        found = _classify(ctx, a, b)
        if found is not None:
            yield found
            continue
        # "4111 1111 1111 1111 12 27" or "tel 03 1234 5678 2": try space-separated sub-runs.
        cuts = [a] + [a + k + 1 for k, ch in enumerate(s) if ch == " "] + [b + 1]
        if len(cuts) < 3 or len(cuts) > 12:
            continue
        # A run of four-digit groups that failed as a whole is a mistyped card or id: a part of
        # it passing some check digit by chance is not a finding.
        if all(len(g) == 4 for g in _GROUP.findall(s)):
            continue
        # Digits before each cut, so windows that cannot be anything are never classified.
        ndig = [0]
        for k in range(1, len(cuts)):
            ndig.append(ndig[-1] + len(t[cuts[k - 1] : cuts[k] - 1].translate(_SEPS)))
        i = 0
        while i < len(cuts) - 1:
            if i == 1 and s.startswith(("+", "00")):
                i += 1  # what follows "+44 " is that country's number, not another's
                continue
            for j in range(len(cuts) - 1, i, -1):
                if i == 0 and j == len(cuts) - 1:
                    continue
                sa, sb = cuts[i], cuts[j] - 1
                n = ndig[j] - ndig[i]
                if n > 19 or n < (4 if "." in t[sa:sb] else 8):
                    continue
                found = _classify(ctx, sa, sb)
                if found is not None:
                    yield found
                    i = j
                    break
            else:
                i += 1
