"""Secrets: API keys and tokens with a known shape, private key blocks, ``password=`` values,
and credentials inside links."""

from __future__ import annotations

import re
from collections.abc import Iterator

from app.redact._scan import P_SECRET, P_URLCRED, Raw, first_digit
from app.redact._scan import is_word as _is_word
from app.redact._scan import lower_same_length as _lower

# --------------------------------------------------------------------------- secrets

# Shapes of tokens with a known prefix. Python's ``re`` has no fast multi-literal scan, so each
# prefix is found with ``str.find`` (which is) and the shape is matched only there.
_TOKEN = re.compile(
    r"""(?:
      xox[abposrce]-[A-Za-z0-9\-]{10,250}
    | xapp-\d-[A-Za-z0-9\-]{10,250}
    | (?:AKIA|ASIA)[A-Z0-9]{16}
    | gh[pousr]_[A-Za-z0-9]{36,255}
    | github_pat_[A-Za-z0-9_]{22,255}
    | sk-ant-[a-z]{3,6}\d{0,3}-[A-Za-z0-9_\-]{20,300}
    | (?P<sk>sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,300})
    | (?P<dify>(?:app|dataset)-[A-Za-z0-9]{24})
    | eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}
    | AIza[0-9A-Za-z_\-]{35}
    | [sr]k_(?:live|test)_[0-9A-Za-z]{16,247}
    | glpat-[0-9A-Za-z_\-]{20}
    | (?P<rnd>(?:hf|npm)_[A-Za-z0-9]{30,64}|whsec_[A-Za-z0-9+/]{24,88})
    | pypi-AgE[A-Za-z0-9_\-]{50,300}
    | shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}
    | dop_v1_[a-f0-9]{64}
    | SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}
    | ya29\.[0-9A-Za-z_\-]{30,300}
    | hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]{20,300}
    )(?![A-Za-z0-9_\-])""",
    re.X,
)
# (marker, characters of the token before the marker), grouped by a character every token of
# the group contains, so a message without "-" or "_" skips the group.
_MARKERS_ANY: tuple[tuple[str, int], ...] = (
    ("AKIA", 0), ("ASIA", 0), ("eyJ", 0), ("AIza", 0), ("hooks.slack.com/", 0), ("SG.", 0),
    ("ya29.", 0),
)  # fmt: skip
_MARKERS_DASH: tuple[tuple[str, int], ...] = (
    ("xox", 0), ("xapp-", 0), ("sk-", 0), ("app-", 0), ("dataset-", 0), ("glpat-", 0),
    ("pypi-", 0),
)  # fmt: skip
# Tokens with an underscore are found from the underscores (texts have few): the text before
# it tells which kind, and where the token starts.
_BEFORE_UNDERSCORE: tuple[tuple[str, int], ...] = (
    ("ghp", 3), ("gho", 3), ("ghu", 3), ("ghs", 3), ("ghr", 3), ("github", 6), ("sk", 2),
    ("rk", 2), ("hf", 2), ("npm", 3), ("whsec", 5), ("shpat", 5), ("shpca", 5), ("shppa", 5),
    ("shpss", 5), ("dop", 3),
)  # fmt: skip
# An AWS secret access key (40 characters of base64) pasted near its access key id.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# "sk_live_XXXXXXXXXXXXXXXX", "ghp_xxxxxxxx…": a placeholder in documentation, not a key.
_PLACEHOLDER_RUN = re.compile(r"([A-Za-z0-9*.])\1{5,}")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,20} PRIVATE KEY(?: BLOCK)?-----"
    r".*?(?:-----END[A-Z0-9 ]{0,20} PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.S,
)
_AUTH_VALUE = re.compile(r"\s+([A-Za-z0-9\-._~+/]{16,2048}=*)")
_AUTH_WORDS = ("bearer", "basic", "token")
# Words that, before ":" or "=", announce a secret value. Weak ones also name ordinary things
# ("max_tokens: 1500"), so their values must look random to count. Each is found by a root
# (one regex scan of the lower-cased text), then the whole word is matched there.
# The word for "password" in the languages our users write: German, French, Spanish,
# Portuguese, Dutch, Japanese, Chinese, Korean, Thai.
_KEY_ROOTS = ("pass", "pwd", "secret", "token", "api", "access", "private", "auth", "credential",
              "session", "cookie", "kennwort", "mot de passe", "mot-de-passe", "contrase",
              "clave", "senha", "palavra", "wachtwoord", "wifi", "wi-fi", "code wi", "wlan",
              "wpa", "psk")  # fmt: skip
_KEY_ROOTS_CJK = ("パスワード", "暗証番号", "密码", "密碼", "口令", "비밀번호", "암호", "รหัสผ่าน")
# One scan for all roots: with this many, ``re``'s alternation beats a ``str.find`` per root.
# Longest first, so "mot de passe" is found whole and not as its "pass".
_ROOTS_ASCII = re.compile("|".join(re.escape(r) for r in sorted(_KEY_ROOTS, key=len)[::-1]))
_ROOTS_ANY = re.compile(
    "|".join(re.escape(r) for r in sorted(_KEY_ROOTS + _KEY_ROOTS_CJK, key=len)[::-1])
)
_KEY_WORD = re.compile(
    r"(?P<strong>password|passwort|passwd|passphrase|passcode|secret(?![_\-]?key)|pwd|pass|"
    r"kennwort|mot[ \-]de[ \-]passe|contraseña|contrasena|clave|senha|palavra[ \-]passe|"
    r"wachtwoord|パスワード|暗証番号|密码|密碼|口令|비밀번호|암호|รหัสผ่าน"
    # Wi-Fi keys: "code Wi-Fi", "WLAN-Schlüssel", "wifi key", "WPA2 passphrase", "PSK".
    r"|wi-?fi[ \-]?(?:key|code|pass(?:word)?)|code[ \-]wi-?fi|wlan[ \-]?(?:schlüssel|key|code)"
    r"|wpa2?[ \-]?(?:key|psk|passphrase)|psk)"
    r"|token|api[_\-]?key|apikey|access[_\-]?key|secret[_\-]?key|private[_\-]?key|auth|"
    r"credentials?|session[_\-]?id|cookie"
)
# "is" in prose, in the same languages; after these only values that do not read as words count.
_PROSE_OPS = frozenset(["is", "was", "IS", "ist", "lautet", "war", "est", "es", "era", "é", "è",
                        "är", "는", "은", "为", "為"])  # fmt: skip
_AFTER_KEY = re.compile(
    r"[\"']?\s*(?P<op>[:=]|=>|->|\s(?:is|was|IS|ist|lautet|war|est|es|era|é|è|är)\s|は|是|为|為"
    r"|คือ|는|은|(?=[「『]))\s*"
    r"(?:\"(?P<v1>[^\"\r\n]{1,256})\"|'(?P<v2>[^'\r\n]{1,256})'"
    r"|「(?P<v4>[^」\r\n]{1,256})」|『(?P<v5>[^』\r\n]{1,256})』|“(?P<v6>[^”\r\n]{1,256})”"
    r"|(?P<v3>[^\s\"'`,;&<>()\[\]{}\u0080-\U0010ffff]{1,256}))"
)
# "Passwort für den Share: …", "password for the VPN: …": a few words between the word and
# the colon (no digits, no punctuation: a sentence that merely mentions passwords has them).
_FILLER = re.compile(
    r"[ \t][^\d\r\n:=.,;!?\"'`()\[\]{}/\\「『“]{0,39}?"
    r"(?=[ \t]*:|[ \t]+(?:is|ist|lautet|est|es|é|è|är)[ \t]|คือ|は|是|为|為|는|은)"
)
# "Passwort T3stSyst3m_de", "รหัสผ่าน Chang2024#bkk": the value right after the word, no colon.
# Only a value that cannot be a word counts (letters and digits, at least six characters).
_BARE = re.compile(r"[ \t]+(?P<v3>[^\s\"'`,;<>()\[\]{}\u0080-\U0010ffff]{6,256})")
_PROSE_AFTER = re.compile(r"[ \t]+[^\W\d_]")
# Words that also mean something else with a token after them ("PASS src/v2/app.test.js" in a
# test run, "secret santa2024"): their value needs a colon or "is".
_NOT_BARE = frozenset(["pass", "pwd", "secret", "psk", "clave"])
_NOT_A_VALUE = frozenset(
    [
        "password",
        "passwd",
        "secret",
        "token",
        "pwd",
        "null",
        "none",
        "nil",
        "true",
        "false",
        "required",
        "optional",
        "string",
        "str",
        "int",
        "number",
        "empty",
        "undefined",
        "yes",
        "no",
        "n/a",
        "na",
        "xxx",
        "***",
        "********",
        "changeme",
    ]
)
# "${DB_PASSWORD}", "$TOKEN", "%PASSWORD%", "<your-password>", "{{secret}}", "=>": not values.
_PLACEHOLDER_VALUE = re.compile(
    r"\$\{?(?:[A-Z_][A-Z0-9_]*|[a-z_][a-z0-9_]*)\}?|%[A-Za-z_]+%|<[^>]*>?|\{\{?[^}]*\}?\}?|[=>:]+.*"
)
_VALUE_AFTER_AMP = re.compile(r"[^\s\"'`,;<>()\[\]{}\u0080-\U0010ffff]{1,256}")
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _looks_random(v: str) -> bool:
    has_digit = any(c.isdigit() for c in v)
    has_alpha = any(c.isalpha() for c in v)
    return len(v) >= 12 and has_digit and has_alpha


def _tokens(t: str) -> Iterator[Raw]:
    seen: set[int] = set()
    starts: list[int] = []
    markers = _MARKERS_ANY + _MARKERS_DASH if "-" in t else _MARKERS_ANY
    for marker, back in markers:
        i = t.find(marker)
        while i != -1:
            starts.append(i - back)
            i = t.find(marker, i + 1)
    i = t.find("_")
    while i != -1:
        for before, back in _BEFORE_UNDERSCORE:
            if t.endswith(before, max(0, i - back), i):
                starts.append(i - back)
                break
        i = t.find("_", i + 1)
    for a in starts:
        if a >= 0 and a not in seen and not (a > 0 and (_is_word(t[a - 1]) or t[a - 1] == "-")):
            m = _TOKEN.match(t, a)
            if m is not None and _token_ok(m):
                seen.add(a)
                yield ("SECRET", a, m.end(), P_SECRET)
                if t.startswith(("AKIA", "ASIA"), a):
                    yield from _aws_secret(t, m.end())


def _aws_secret(t: str, after: int) -> Iterator[Raw]:
    """The secret access key that people paste right after the key id ("AKIA… / wJalr…")."""
    m = _AWS_SECRET.search(t, after, after + 160)
    if m is None or _PLACEHOLDER_RUN.search(m.group()):
        return
    v = m.group()
    # Mixed case: base64, not the hex of a Git SHA-1 that happens to be 40 characters too.
    if _looks_random(v) and any(c.isupper() for c in v) and any(c.islower() for c in v):
        yield ("SECRET", m.start(), m.end(), P_SECRET)


def _token_ok(m: re.Match[str]) -> bool:
    if _PLACEHOLDER_RUN.search(m.group()):
        return False
    body = m.group("sk") or m.group("dify") or m.group("rnd")
    if body is None:
        return True
    tail = body.split("-", 1)[1] if "-" in body else body.split("_", 1)[1]
    # Random keys mix cases and digits; kebab-case identifiers do not.
    mixed_case = any(c.isupper() for c in tail) and any(c.islower() for c in tail)
    has_digit = any(c.isdigit() for c in tail)
    return mixed_case and (has_digit or m.group("sk") is None)


def secrets(t: str) -> Iterator[Raw]:
    """API keys and tokens with a known shape, private key blocks, ``password=`` values."""
    if "-----BEGIN" in t:
        for m in _PRIVATE_KEY.finditer(t):
            yield ("SECRET", m.start(), m.end(), P_SECRET + 5)
    yield from _tokens(t)
    if " -" in t:
        yield from command_line_passwords(t)
    ascii_only = t.isascii()
    # After "is"/"was" only random-looking values count, and those contain a digit.
    # A value with no operator in front ("Passwort T3stSyst3m") must contain a digit.
    has_op = ":" in t or "=" in t or first_digit(t) != -1
    if not ascii_only:
        has_op = has_op or any(w in t for w in _CJK_GATE)
    if not has_op and "earer" not in t and "asic" not in t and "oken" not in t:
        return
    low = _lower(t)
    for word in _AUTH_WORDS:
        i = low.find(word)
        while i != -1:
            av = _AUTH_VALUE.match(t, i + len(word))
            if av is not None and (i == 0 or not _is_word(t[i - 1])):
                v = av.group(1)
                if _looks_random(v) or len(v) >= 24:
                    yield ("SECRET", av.start(1), av.end(1), P_SECRET)
            i = low.find(word, i + 1)
    if not has_op:
        return
    for m in (_ROOTS_ASCII if ascii_only else _ROOTS_ANY).finditer(low):
        yield from _assignment(t, low, m.start())


_GLUED_WORDS = frozenset(["password", "passwd", "passphrase", "secret"])
_CJK_GATE = ("は", "是", "为", "為", "คือ", "는", "은", "「", "『", "“")


def _assignment(t: str, low: str, i: int) -> Iterator[Raw]:
    kw = _KEY_WORD.match(low, i)
    if kw is None:
        return
    word, strong = kw.group(), kw.group("strong") is not None
    if i > 0 and word.isascii():
        prev = t[i - 1]
        # "bypass = 3" is not a key; "db_password", "dbPassword", "mysql.password" are.
        # ("WiFi密码" is: a CJK word after a Latin one is a new word.)
        camel = prev.islower() and t[i].isupper()
        # "PGPASSWORD", "APPSECRET": upper-case environment variables glue a prefix on.
        shouting = prev.isupper() and word in _GLUED_WORDS and t[i : i + len(word)].isupper()
        if prev.isascii() and prev.isalpha() and not (camel or shouting):
            return
    j = i + len(word)
    m = _AFTER_KEY.match(t, j)
    mode = "key"
    if m is None and strong:
        # A sentence, not a key: the value must not read as a word.
        f = _FILLER.match(t, j)
        m = _AFTER_KEY.match(t, f.end()) if f is not None else None
        mode = "prose"
        if m is None and word not in _NOT_BARE:
            m = _BARE.match(t, j)
            mode = "bare"
    if m is None:
        return
    groups = m.groupdict()
    name = next(g for g in ("v1", "v2", "v4", "v5", "v6", "v3") if groups.get(g) is not None)
    start, end = m.start(name), m.end(name)
    op = m.group("op").strip() if mode == "key" else "is"
    if name == "v3":
        if op != "=" and end < len(t) and t[end] == "&":
            # "&" ends a value only in a query string (a=1&b=2); "Tr0ub4dor&3" is one password.
            tail = _VALUE_AFTER_AMP.match(t, end)
            end = tail.end() if tail else end
        if op in _PROSE_OPS:
            while end > start + 1 and t[end - 1] in ".,?":
                end -= 1  # the end of the sentence, not of the password
    v = t[start:end]
    if mode == "bare" and (
        not (any(c.isdigit() for c in v) and any(c.isalpha() for c in v)) or "/" in v
    ):
        return  # a path or a plain word after the word is not its value
    # "Passwort: bitte beim Admin erfragen": a plain word that a sentence goes on from.
    if name == "v3" and v.isalpha() and _PROSE_AFTER.match(t, end):
        return
    if _is_value(v, name, t[end : end + 8], op, strong):
        yield ("SECRET", start, end, P_SECRET - 1)


def _is_value(v: str, name: str, after: str, op: str, strong: bool) -> bool:
    if v.lower() in _NOT_A_VALUE or _PLACEHOLDER_VALUE.fullmatch(v) or len(set(v)) == 1:
        return False
    # Code, not a value: ``password = input()``, ``pwd = os.getcwd()``, ``secret: str``.
    if name == "v3" and (after[:1] in ("(", "[") or _DOTTED_NAME.fullmatch(v) or v[-1] in ":="):
        return False
    # The "value" is the next key: "secret: db_password = ...".
    if after.lstrip()[:1] in ("=", ":"):
        return False
    if not strong:
        # Weak words name ordinary things too ("max_tokens: 1500"): the value must look random.
        return _looks_random(v)
    if op in _PROSE_OPS:
        # "the password is required" is prose; "the password is Tr0ub4dor" is not.
        return len(v) >= 6 and any(not c.isalpha() for c in v)
    return len(v) >= 3


# --------------------------------------------------------------------------- command lines

# Password options of the command-line clients people paste: "redis-cli -a PW",
# "mysql -uroot -pPW", "sshpass -p PW", "mongosh -p PW", "curl -u user:PW", "--password PW".
_CLI_TOOLS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("redis-cli", re.compile(r"(?:^|\s)(?:-a|--pass)[ \t]+(\S+)")),
    ("mysql", re.compile(r"(?:^|\s)-p(\S+)")),
    ("mariadb", re.compile(r"(?:^|\s)-p(\S+)")),
    ("sshpass", re.compile(r"(?:^|\s)-p[ \t]+(\S+)")),
    ("mongo", re.compile(r"(?:^|\s)-p[ \t]+(\S+)")),
    ("curl", re.compile(r"(?:^|\s)(?:-u|--user)[ \t]+[^\s:]+:(\S+)")),
    ("--pass", re.compile(r"(?:^|\s)--pass(?:word|wd)?[ \t]+(\S+)")),
)
_COMMAND_END = re.compile(r"[\r\n|;&`]")
# The tool as a command: "mysql", "mysqldump", "mongosh", "/usr/bin/mysql", not "mongodb://".
_TOOL_END = re.compile(r"[a-z]*[ \t]")


def command_line_passwords(t: str) -> Iterator[Raw]:
    """Values of the password options of well-known clients, on the same command line."""
    for tool, option in _CLI_TOOLS:
        i = t.find(tool)
        while i != -1:
            stop = _COMMAND_END.search(t, i)
            end_of_command = stop.start() if stop else len(t)
            if tool[0] != "-" and (
                _TOOL_END.match(t, i + len(tool)) is None or (i > 0 and _is_word(t[i - 1]))
            ):
                i = t.find(tool, i + 1)
                continue
            for m in option.finditer(t, i + len(tool) if tool[0] != "-" else max(0, i - 1),
                                     end_of_command):  # fmt: skip
                v, a = m.group(1).rstrip(".,"), m.start(1)
                if len(v) > 2 and v[0] == v[-1] and v[0] in "'\"":
                    v, a = v[1:-1], a + 1
                if len(v) >= 3 and v[0] not in "-$%<{" and v.lower() not in _NOT_A_VALUE:
                    yield ("SECRET", a, a + len(v), P_SECRET - 1)
            i = t.find(tool, end_of_command)


# --------------------------------------------------------------------------- links, email

# People paste passwords unencoded: "#" and "@" inside the password are taken as its part, up to
# the last "@" before the host ("postgres://u:Cafe@Rio!9@10.0.0.5/db").
_URL_CRED = re.compile(r"://([^\s/?#@:\"'<>]{0,128}):([^\s/?\"'<>]{1,256})@(?=[A-Za-z0-9\[])")


def url_credentials(t: str) -> Iterator[Raw]:
    """``scheme://user:password@host``: the ``user:password`` part (``:password`` with no user)."""
    if "://" not in t:
        return
    for m in _URL_CRED.finditer(t):
        yield ("URL_CREDENTIALS", m.start(1) if m.end(1) > m.start(1) else m.start(2) - 1,
               m.end(2), P_URLCRED)  # fmt: skip
