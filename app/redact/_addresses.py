"""Addresses: email, IPv6 (IPv4 is found with the digit runs) and IBAN."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from app.redact import _checksums as ck
from app.redact._scan import P_EMAIL, P_IBAN, P_IP, Raw, first_digit
from app.redact._scan import is_word as _is_word

# RFC 5322 also allows ` { | } in the local part; nobody uses them, and chat link markup
# uses "|" in <mailto:a@b.c|a@b.c>.
_LOCAL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.!#$%&'*+/=?^_~-"
)
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)


# File name extensions that are no top-level domain (IANA root zone): "icon@2x.png",
# "logo@3x.webp" and "report@final.pdf" are file names. (.zip, .mov, .app, .py, .md are real
# TLDs, so they stay addresses.)
_EXTENSIONS = (
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "heic", "avif",
    "psd", "pdf", "txt", "json", "yaml", "yml", "xml", "html", "htm", "css", "scss", "less", "js",
    "mjs", "cjs", "jsx", "tsx", "ts", "map", "lock", "log", "csv", "tsv", "xls", "xlsx", "doc",
    "docx", "ppt", "pptx", "odt", "ods", "wav", "ogg", "webm", "avi", "mkv", "flac", "woff",
    "woff2", "ttf", "otf", "eot", "gz", "tgz", "bz2", "xz", "rar", "tar", "jar", "war", "exe",
    "dll", "dylib", "bin", "dmg", "deb", "rpm", "apk", "ipa", "iso", "img", "bak", "tmp", "swp",
    "ini", "cfg", "conf", "toml", "env", "lottie", "sketch", "kt", "java", "class", "swift", "go",
    "rb", "php", "cpp", "hpp", "vue", "svelte", "sql", "sqlite", "db", "parquet", "proto", "wasm",
)  # fmt: skip
_FILE_EXTENSIONS = frozenset(_EXTENSIONS)


def emails(t: str) -> Iterator[Raw]:
    """Addresses around each ``@``: a left scan for the local part, a regex for the domain."""
    i = t.find("@")
    last_end = 0
    while i != -1:
        j = i
        while j > last_end and i - j < 64 and t[j - 1] in _LOCAL_CHARS:
            j -= 1
        while j < i and t[j] in "./'":
            j += 1
        # "https://user@host" names an account on a host, not a mailbox.
        if j < i and not t.endswith("//", 0, j):
            m = _DOMAIN.match(t, i + 1)
            if m is not None and _mailbox(t, m):
                yield ("EMAIL", j, m.end(), P_EMAIL)
                last_end = m.end()
                i = t.find("@", last_end)
                continue
        i = t.find("@", i + 1)


def _mailbox(t: str, m: re.Match[str]) -> bool:
    """The domain after an ``@`` names a mail host: not a file name, not an scp target."""
    domain = m.group()
    if domain[domain.rfind(".") + 1 :].lower() in _FILE_EXTENSIONS:
        return False
    # "git@github.com:org/repo.git" is an SSH remote (a colon right before a path).
    end = m.end()
    return not (t.startswith(":", end) and end + 1 < len(t) and _is_word(t[end + 1]))


# --------------------------------------------------------------------------- IP addresses

_IPV6_HIT = re.compile(r"::|:[0-9A-Fa-f]{1,4}:")
_HEXCOLON = frozenset("0123456789abcdefABCDEF:.")


def ipv6_addresses(t: str) -> Iterator[Raw]:
    """IPv6 addresses validated by ``ipaddress`` (IPv4 is found with the digit runs)."""
    if ":" not in t:
        return
    last_end = -1
    for m in _IPV6_HIT.finditer(t):
        if m.start() < last_end:
            continue
        a = m.start()
        while a > 0 and t[a - 1] in _HEXCOLON:
            a -= 1
        b = m.end()
        n = len(t)
        while b < n and t[b] in _HEXCOLON:
            b += 1
        last_end = b
        while b > a and t[b - 1] in ".:" and not t[a:b].endswith("::"):
            b -= 1
        if b < n and _is_word(t[b]):
            continue
        # "ID：fe80::1" folds to "ID:fe80::1", and "D" is a hex digit: drop leading groups that
        # belong to the sentence until what is left is an address.
        for _ in range(3):
            while a < b and t[a] in ".:" and not t.startswith("::", a):
                a += 1
            if _ipv6_ok(t[a:b]) and not (a > 0 and _is_word(t[a - 1])):
                yield ("IP_ADDRESS", a, b, P_IP)
                break
            k = t.find(":", a, b)
            if k == -1:
                break
            a = k if t.startswith("::", k) else k + 1


def _ipv6_ok(cand: str) -> bool:
    groups = [g for g in cand.split(":") if g]
    # "fe80::1" is an address; "arr[1::3]" is a slice.
    if len(groups) < 2 or not any(c.isdigit() for c in cand):
        return False
    if len(groups) == 2 and len(groups[0]) + len(groups[1]) < 5:
        return False
    try:
        ipaddress.IPv6Address(cand)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- IBAN

_IBAN = re.compile(r"[A-Z][A-Z]\d\d(?:[ ]?[A-Z0-9]){10,32}")  # no {2}: keeps re's fast skip


def ibans(t: str) -> Iterator[Raw]:
    """IBANs (upper case, optionally in groups of four): country length and mod 97."""
    start = first_digit(t)
    if start == -1:
        return
    for m in _IBAN.finditer(t, max(0, start - 2)):
        if m.start() > 0 and _is_word(t[m.start() - 1]):
            continue
        s = m.group()
        want = ck.IBAN_LENGTHS.get(s[:2])
        if want is None:
            continue
        got, end = 0, m.start()
        compact = []
        for k, ch in enumerate(s):
            if ch != " ":
                compact.append(ch)
                got += 1
                if got == want:
                    end = m.start() + k + 1
                    break
        if got != want or (end < len(t) and _is_word(t[end])):
            continue
        if ck.iban_ok("".join(compact)):
            yield ("IBAN", m.start(), end, P_IBAN)
