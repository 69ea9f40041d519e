"""Which countries' numbering plans a phone candidate's context points at.

A national number without ``+`` is ambiguous: ``612 34 56 78`` is a Spanish mobile and also any
of a hundred order numbers. The recognizer tries a country's plan only when something says a
phone number is meant and where: a phone word in the language people wrote ("Mon numéro :",
"Telefon", "전화"), a country named nearby ("in Spain", "ブラジル"), or the route's
``phone_regions`` setting. Lookups are substring checks on a short lower-cased window, run only
for the few digit runs the cheaper rules did not settle.
"""

from __future__ import annotations

import re

import phonenumbers

# Phone words and the regions whose plans their language suggests. English words are listed
# for the English-speaking countries whose plans differ from the six tried by default.
_EN = ("US", "CA", "GB", "IE", "AU", "NZ", "IN", "SG", "ZA", "PH", "HK", "MY", "NG", "KE")
_FR = ("FR", "BE", "CH", "LU", "CA", "MA", "SN", "CI", "TN", "DZ")
_DE = ("DE", "AT", "CH", "LU")
_ES = ("ES", "MX", "AR", "CO", "CL", "PE", "VE", "EC", "UY", "GT", "CR")
_PT = ("BR", "PT")
_IT = ("IT", "CH")
_NL = ("NL", "BE")
_KO = ("KR",)
_JA = ("JP",)
_ZH = ("CN", "TW", "HK", "SG")
_TH = ("TH",)
_ANY = _EN + _FR + _DE + _ES + _PT + _IT + _NL + _KO + _JA + _ZH + _TH

PHONE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # English (also written in other languages' text: "WhatsApp", "tel")
    ("phone", _EN), ("call", _EN), ("mobile", _EN), ("cell", _EN), ("tel", _ANY),
    ("fax", _ANY), ("contact", _EN), ("reach", _EN), ("text me", _EN), ("text ", _EN),
    ("sms", _ANY), ("whatsapp", _ANY), ("signal", _EN), ("telegram", _ANY), ("viber", _ANY),
    ("ring ", _EN), ("dial", _EN), ("hotline", _ANY), ("landline", _EN), ("number", _EN),
    # French
    ("numéro", _FR), ("numero", _FR + _IT + _ES + _PT), ("portable", _FR), ("joindre", _FR),
    ("appel", _FR), ("téléphone", _FR), ("télephone", _FR), ("tél", _FR), ("n°", _FR),
    # German
    ("telefon", _DE), ("handy", _DE), ("mobil", _DE), ("rufnummer", _DE), ("ruf ", _DE),
    ("anrufen", _DE), ("erreichbar", _DE), ("durchwahl", _DE), ("nummer", _DE + _NL),
    # Spanish
    ("teléfono", _ES), ("telefono", _ES + _IT), ("móvil", _ES), ("movil", _ES),
    ("celular", _ES + _PT), ("número", _ES + _PT), ("llamar", _ES), ("llámame", _ES),
    ("contacto", _ES + _PT),
    # Portuguese
    ("telefone", _PT), ("telemóvel", _PT), ("ligar", _PT), ("liga ", _PT), ("contato", _PT),
    # Italian, Dutch
    ("cellulare", _IT), ("chiamami", _IT), ("telefoon", _NL), ("bel ", _NL),
    # Korean
    ("전화", _KO), ("휴대폰", _KO), ("핸드폰", _KO), ("연락처", _KO), ("번호", _KO),
    ("카톡", _KO),
    # Japanese
    ("電話", _JA), ("携帯", _JA), ("連絡先", _JA), ("番号", _JA + _ZH),
    # Chinese
    ("电话", _ZH), ("手机", _ZH), ("联系", _ZH), ("號碼", _ZH), ("号码", _ZH), ("電話", _ZH),
    ("手機", _ZH), ("微信", _ZH),
    # Thai
    ("โทร", _TH), ("เบอร์", _TH), ("ติดต่อ", _TH), ("มือถือ", _TH),
)  # fmt: skip

# Countries named in the message (English and the country's own languages).
COUNTRY_WORDS: tuple[tuple[str, str], ...] = (
    ("france", "FR"), ("french", "FR"), ("paris", "FR"), ("français", "FR"), ("belgi", "BE"),
    ("switzerland", "CH"), ("suisse", "CH"), ("schweiz", "CH"), ("swiss", "CH"),
    ("germany", "DE"), ("german", "DE"), ("deutschland", "DE"), ("austria", "AT"),
    ("österreich", "AT"), ("spain", "ES"), ("españa", "ES"), ("spanish", "ES"),
    ("madrid", "ES"), ("mexico", "MX"), ("méxico", "MX"), ("argentin", "AR"),
    ("colombia", "CO"), ("chile", "CL"), ("peru", "PE"), ("perú", "PE"), ("brazil", "BR"),
    ("brasil", "BR"), ("portugal", "PT"), ("italy", "IT"), ("italia", "IT"),
    ("netherlands", "NL"), ("dutch", "NL"), ("nederland", "NL"), ("korea", "KR"),
    ("한국", "KR"), ("서울", "KR"), ("india", "IN"), ("australia", "AU"), ("ireland", "IE"),
    ("new zealand", "NZ"), ("singapore", "SG"), ("hong kong", "HK"), ("香港", "HK"),
    ("taiwan", "TW"), ("台湾", "TW"), ("台灣", "TW"), ("philippines", "PH"),
    ("malaysia", "MY"), ("indonesia", "ID"), ("vietnam", "VN"), ("viet nam", "VN"),
    ("poland", "PL"), ("polska", "PL"), ("sweden", "SE"), ("sverige", "SE"),
    ("norway", "NO"), ("norge", "NO"), ("denmark", "DK"), ("danmark", "DK"),
    ("finland", "FI"), ("suomi", "FI"), ("turkey", "TR"), ("türkiye", "TR"),
    ("south africa", "ZA"), ("nigeria", "NG"), ("kenya", "KE"), ("egypt", "EG"),
    ("israel", "IL"), ("uae", "AE"), ("dubai", "AE"), ("saudi", "SA"), ("russia", "RU"),
    ("ukrain", "UA"), ("canada", "CA"), ("japan", "JP"), ("日本", "JP"), ("china", "CN"),
    ("中国", "CN"), ("thailand", "TH"), ("ประเทศไทย", "TH"), ("uk", "GB"),
    ("united kingdom", "GB"), ("england", "GB"), ("london", "GB"), ("usa", "US"),
    ("united states", "US"), ("ブラジル", "BR"), ("フランス", "FR"), ("ドイツ", "DE"),
    ("韓国", "KR"), ("スペイン", "ES"), ("法国", "FR"), ("德国", "DE"), ("韩国", "KR"),
    ("西班牙", "ES"), ("巴西", "BR"),
)  # fmt: skip

_HANGUL = re.compile("[\uac00-\ud7a3]")
_SUPPORTED = frozenset(phonenumbers.SUPPORTED_REGIONS)


def supported_region(code: str) -> bool:
    """``code`` is an ISO 3166 alpha-2 region ``phonenumbers`` has a numbering plan for."""
    return code.upper() in _SUPPORTED


def _word_at(low: str, i: int, word: str) -> bool:
    """An ASCII word found at ``i`` does not continue a longer word ("recall", "hotel"); a
    short one ("tel", "call") does not start one either ("tell", "callback")."""
    if not word[0].isascii():
        return True
    if i > 0 and low[i - 1].isascii() and low[i - 1].isalpha():
        return False
    end = i + len(word)
    return len(word) > 4 or end >= len(low) or not low[end].isalpha()


def phone_word_regions(window: str) -> tuple[str, ...] | None:
    """Regions suggested by the phone words in ``window``; ``None`` when it has none."""
    low = window.lower()
    found: list[str] = []
    hit = False
    for word, regions in PHONE_WORDS:
        i = low.find(word)
        while i != -1:
            if _word_at(low, i, word):
                hit = True
                found.extend(regions)
                break
            i = low.find(word, i + 1)
    if not hit:
        return None
    if _HANGUL.search(window):
        found.extend(_KO)
    return tuple(dict.fromkeys(found))


def country_regions(text: str) -> tuple[str, ...]:
    """Regions of the countries named in ``text`` (whole ASCII words only)."""
    low = text.lower()
    found: list[str] = []
    for word, region in COUNTRY_WORDS:
        i = low.find(word)
        while i != -1:
            # Short names ("uk", "usa") must be words of their own (see _word_at).
            if _word_at(low, i, word):
                found.append(region)
                break
            i = low.find(word, i + 1)
    if _HANGUL.search(text):
        found.append("KR")
    return tuple(dict.fromkeys(found))
