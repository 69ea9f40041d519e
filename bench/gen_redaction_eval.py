# ruff: noqa: E501, S311  (sentence templates read best on one line; seeded test data, not crypto)
"""Generate the labeled redaction evaluation set: ``tests/data/redaction_eval.jsonl``.

Positives: values from Faker (en_US, en_GB, de_DE, ja_JP, zh_CN, th_TH and more for IBANs) or
built with a correct check digit, written into English, Japanese, Chinese, Thai and mixed
Japanese/English sentences, some with full-width digits. Phone numbers are kept only when
``phonenumbers`` says they are valid for the locale (Faker also invents numbers in unassigned
ranges). Hard negatives: order numbers, timestamps, dates, versions, Slack ids, Git SHAs, UUIDs,
code, prices, and near misses (wrong check digit, wrong length, look-alike prefixes).

One JSON object per line: ``{"id", "lang", "kind", "text", "entities": [{"type", "start", "end"}]}``.
The gold span is the value itself (for ``password=...`` assignments: the value; for links with
credentials: ``user:password``). Deterministic (fixed seeds); run from the repository root::

    .venv/bin/python bench/gen_redaction_eval.py [--out tests/data/redaction_eval.jsonl]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

import phonenumbers
from faker import Faker

SEED = 20261123
rng = random.Random(SEED)
F = {loc: Faker(loc) for loc in ("en_US", "en_GB", "de_DE", "ja_JP", "zh_CN", "th_TH")}


def reseed(seed: int) -> None:
    rng.seed(seed)
    Faker.seed(seed)
    for f in F.values():
        f.seed_instance(seed)


FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {" ": "\u3000"})


def full_width(s: str) -> str:
    return s.translate(FULLWIDTH)


# --------------------------------------------------------------------------- values


def my_number() -> str:
    base = "".join(rng.choice(string.digits) for _ in range(11))
    total = sum(int(base[11 - n]) * (n + 1 if n <= 6 else n - 5) for n in range(1, 12))
    r = total % 11
    return base + str(0 if r <= 1 else 11 - r)


def corporate_number() -> str:
    # Registry office code, kind of entity (01-05), serial: the shape of real numbers.
    base = f"{rng.randint(100, 4999):04d}{rng.randint(1, 5):02d}{rng.randint(0, 999999):06d}"
    total = sum(int(base[12 - n]) * (1 if n % 2 else 2) for n in range(1, 13))
    return str(9 - total % 9) + base


def th_id() -> str:
    # The first digit is the person's category: 1 and 3 cover most people.
    first = rng.choices("12345678", weights=[55, 4, 30, 4, 2, 2, 2, 1])[0]
    # Then the province code (10-96) and the rest.
    d = first + str(rng.randint(10, 96)) + "".join(rng.choice(string.digits) for _ in range(9))
    total = sum(int(d[i]) * (13 - i) for i in range(12))
    return d + str((11 - total % 11) % 10)


def corporate_ok(d: str) -> bool:
    total = sum(int(d[1:][12 - n]) * (1 if n % 2 else 2) for n in range(1, 13))
    return d[0] != "0" and 9 - total % 9 == int(d[0])


def th_ok(d: str) -> bool:
    total = sum(int(d[i]) * (13 - i) for i in range(12))
    return d[0] not in "09" and (11 - total % 11) % 10 == int(d[12])


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
UPPER_NUM = string.ascii_uppercase + string.digits
B64URL = ALNUM + "-_"


def jwt() -> str:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    head = seg({"alg": "HS256", "typ": "JWT"})
    body = seg(
        {"sub": str(rng.randint(1, 10**9)), "iat": rng.randint(1_600_000_000, 1_800_000_000)}
    )
    return f"{head}.{body}.{rand(B64URL, 43)}"


def private_key() -> str:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    lines = [rand(ALNUM + "+/", 64) for _ in range(rng.randint(3, 6))]
    return (
        f"-----BEGIN {kind}PRIVATE KEY-----\n"
        + "\n".join(lines)
        + f"\n-----END {kind}PRIVATE KEY-----"
    )


TOKENS: list[Callable[[], str]] = [
    lambda: f"xoxb-{rng.randint(10**10, 10**11)}-{rng.randint(10**12, 10**13)}-{rand(ALNUM, 24)}",
    lambda: f"xoxp-{rng.randint(10**10, 10**11)}-{rng.randint(10**10, 10**11)}-{rand(ALNUM, 32)}",
    lambda: (
        f"xapp-1-A{rand(UPPER_NUM, 10)}-{rng.randint(10**12, 10**13)}-{rand('0123456789abcdef', 64)}"
    ),
    lambda: "AKIA" + rand(UPPER_NUM, 16),
    lambda: "ghp_" + rand(ALNUM, 36),
    lambda: "github_pat_" + rand(ALNUM, 22) + "_" + rand(ALNUM, 59),
    lambda: "sk-proj-" + rand(B64URL, 48) + "T3BlbkFJ" + rand(B64URL, 20),
    lambda: "sk-" + rand(ALNUM, 48),
    lambda: "sk-ant-api03-" + rand(B64URL, 93) + "AA",
    lambda: "app-" + rand(ALNUM, 24),
    jwt,
]

URL_HOSTS = [
    "db.internal.example.com",
    "10.0.3.7:5432",
    "redis.example.net:6379",
    "ftp.example.org",
]


def phone(loc: str) -> str:
    region = {
        "en_US": "US",
        "en_GB": "GB",
        "de_DE": "DE",
        "ja_JP": "JP",
        "zh_CN": "CN",
        "th_TH": "TH",
    }[loc]
    for _ in range(200):
        p = F[loc].phone_number()
        main = p.split("x")[0]
        if loc == "ja_JP" and not p.startswith("0"):
            continue  # "50-8506-7663": nobody in Japan drops the leading 0
        try:
            ok = phonenumbers.is_valid_number(phonenumbers.parse(main, region))
        except phonenumbers.NumberParseException:
            ok = False
        if ok:
            return p
    raise RuntimeError(loc)


def card() -> str:
    kind = rng.choice(["visa16", "mastercard", "amex", "jcb16", "discover", "diners", "visa16"])
    n = F["en_US"].credit_card_number(card_type=kind)
    style = rng.random()
    if style < 0.35 and len(n) == 16:
        sep = rng.choice([" ", "-"])
        return sep.join(n[i : i + 4] for i in range(0, 16, 4))
    if style < 0.45 and len(n) == 15:
        return f"{n[:4]} {n[4:10]} {n[10:]}"
    return n


def iban() -> str:
    loc = rng.choice(["de_DE", "en_GB", "fr_FR", "nl_NL", "es_ES", "it_IT"])
    if loc not in F:
        F[loc] = Faker(loc)
        F[loc].seed_instance(rng.randint(0, 2**31))
    v = F[loc].iban()
    if rng.random() < 0.4:
        v = " ".join(v[i : i + 4] for i in range(0, len(v), 4))
    return v


# --------------------------------------------------------------------------- templates

T = dict[str, list[str]]
GENERIC: T = {
    "en": [
        "Here it is: {v}",
        "{v} (see above)",
        "FYI {v}",
        "copied from the ticket, {v} - can you check?",
    ],
    "ja": ["こちらです：{v}", "{v}を確認してください。", "念のため{v}も共有します"],
    "zh": ["请查看：{v}", "{v}，谢谢。"],
    "th": ["ข้อมูลคือ {v} ครับ", "{v} ค่ะ"],
    "mixed": ["この件、{v} でお願いします (urgent)", "Slackで共有: {v}"],
}
BY_TYPE: dict[str, T] = {
    "EMAIL": {
        "en": ["Please email {v} about the refund.", "Contact: {v}", "cc {v}, thanks"],
        "ja": ["連絡先は{v}です。", "{v}までメールをお願いします。"],
        "zh": ["我的邮箱是{v}，请联系。"],
        "th": ["อีเมลของฉันคือ {v} นะครับ"],
        "mixed": ["メールは{v}に送ってください (cc me)"],
    },
    "PHONE": {
        "en": [
            "Call me at {v} after 6pm.",
            "My cell is {v}.",
            "Phone: {v}",
            "reach him on {v} tomorrow",
        ],
        "ja": ["電話番号は{v}です。", "携帯：{v}", "{v}までお電話ください。"],
        "zh": ["我的电话是{v}。", "手机：{v}"],
        "th": ["โทร {v} ได้เลยครับ", "เบอร์โทรศัพท์ {v}"],
        "mixed": ["お客様のphoneは{v}です", "TEL: {v} (平日のみ)"],
    },
    "CREDIT_CARD": {
        "en": ["Card number {v}, exp 12/27.", "Charge it to {v} please"],
        "ja": ["カード番号は{v}です。", "クレジットカード：{v}"],
        "zh": ["信用卡号{v}"],
        "th": ["หมายเลขบัตรเครดิต {v}"],
        "mixed": ["card {v} で決済お願いします"],
    },
    "IBAN": {
        "en": ["Wire it to IBAN {v} by Friday.", "Account: {v}"],
        "ja": ["振込先IBANは{v}です。"],
        "zh": ["账户IBAN：{v}"],
        "th": ["โอนไปที่ IBAN {v}"],
        "mixed": ["IBAN {v} に送金してください"],
    },
    "US_SSN": {
        "en": ["SSN: {v}", "His social security number is {v}.", "ssn {v} on file"],
        "ja": ["米国SSNは{v}です"],
        "zh": ["社会安全号码{v}"],
        "th": ["SSN ของเขาคือ {v}"],
        "mixed": ["SSN {v} を登録済み"],
    },
    "JP_MY_NUMBER": {
        "en": ["My Number: {v}", "her individual number is {v}"],
        "ja": ["マイナンバーは{v}です。", "個人番号：{v}", "{v}（マイナンバー）"],
        "zh": ["日本个人编号{v}"],
        "th": ["หมายเลข My Number {v}"],
        "mixed": ["My Numberは{v}です"],
    },
    "JP_CORPORATE_NUMBER": {
        "en": ["Corporate number {v}", "vendor corporate no. {v}"],
        "ja": ["法人番号は{v}です。", "登録番号：{v}"],
        "zh": ["日本法人编号{v}"],
        "th": ["หมายเลขนิติบุคคลญี่ปุ่น {v}"],
        "mixed": ["取引先のcorporate numberは{v}"],
    },
    "CN_RESIDENT_ID": {
        "en": ["Chinese ID: {v}", "resident id {v}"],
        "ja": ["中国の身分証番号は{v}です"],
        "zh": ["身份证号码{v}，请核对。", "身份证：{v}"],
        "th": ["บัตรประชาชนจีน {v}"],
        "mixed": ["身份证 {v} を確認"],
    },
    "TH_NATIONAL_ID": {
        "en": ["Thai national ID {v}", "citizen id: {v}"],
        "ja": ["タイの国民IDは{v}です"],
        "zh": ["泰国身份证{v}"],
        "th": ["เลขบัตรประชาชน {v} ครับ", "เลขประจำตัวประชาชน: {v}"],
        "mixed": ["Thai ID {v} を登録"],
    },
    "IP_ADDRESS": {
        "en": ["The server at {v} is down.", "ssh into {v} and restart", "blocked IP {v}"],
        "ja": ["サーバー{v}に接続できません。"],
        "zh": ["服务器{v}无法访问"],
        "th": ["เซิร์ฟเวอร์ {v} ล่ม"],
        "mixed": ["IP {v} からのアクセスです"],
    },
    "URL_CREDENTIALS": {
        "en": ["Connect with {v}", "DATABASE_URL={v}"],
        "ja": ["接続先は{v}です"],
        "zh": ["连接串{v}"],
        "th": ["เชื่อมต่อที่ {v}"],
        "mixed": ["DB接続: {v}"],
    },
    "SECRET": {
        "en": ["here's the token {v}", "export KEY={v}", "use {v} for the API"],
        "ja": ["APIキーは{v}です。", "トークン：{v}"],
        "zh": ["密钥是{v}"],
        "th": ["คีย์คือ {v}"],
        "mixed": ["このkey {v} を使ってください"],
    },
}
LANGS = ["en", "ja", "zh", "th", "mixed"]


def value_for(entity: str, lang: str) -> tuple[str, int, int]:
    """A value and the (start, end) of the gold span inside it."""
    if entity == "EMAIL":
        v = F[rng.choice(list(F))].email() if rng.random() < 0.5 else F["en_US"].free_email()
        if lang == "ja" and rng.random() < 0.15:
            v = F["ja_JP"].user_name() + "@" + F["ja_JP"].domain_name()
        return v, 0, len(v)
    if entity == "PHONE":
        loc = {"en": rng.choice(["en_US", "en_GB", "de_DE"]), "ja": "ja_JP", "zh": "zh_CN", "th": "th_TH",
               "mixed": rng.choice(["ja_JP", "en_US"])}[lang]  # fmt: skip
        v = phone(loc)
        if loc == "ja_JP" and rng.random() < 0.3:
            v = full_width(v)
        if rng.random() < 0.15:
            region = {
                "en_US": "US",
                "en_GB": "GB",
                "de_DE": "DE",
                "ja_JP": "JP",
                "zh_CN": "CN",
                "th_TH": "TH",
            }[loc]
            num = phonenumbers.parse(v.split("x")[0], region)
            v = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        return v, 0, len(v)
    if entity == "CREDIT_CARD":
        v = card()
        return v, 0, len(v)
    if entity == "IBAN":
        v = iban()
        return v, 0, len(v)
    if entity == "US_SSN":
        v = F["en_US"].ssn()
        return v, 0, len(v)
    if entity == "JP_MY_NUMBER":
        v = my_number()
        r = rng.random()
        if r < 0.3:
            v = f"{v[:4]} {v[4:8]} {v[8:]}"
        elif r < 0.45:
            v = f"{v[:4]}-{v[4:8]}-{v[8:]}"
        if lang in ("ja", "mixed") and rng.random() < 0.3:
            v = full_width(v)
        return v, 0, len(v)
    if entity == "JP_CORPORATE_NUMBER":
        v = corporate_number()
        if rng.random() < 0.3:
            v = "T" + v
        if lang == "ja" and rng.random() < 0.2:
            v = full_width(v)
        return v, 0, len(v)
    if entity == "CN_RESIDENT_ID":
        v = F["zh_CN"].ssn()
        return v, 0, len(v)
    if entity == "TH_NATIONAL_ID":
        v = th_id()
        if rng.random() < 0.5:
            v = f"{v[0]}-{v[1:5]}-{v[5:10]}-{v[10:12]}-{v[12]}"
        if rng.random() < 0.4:
            v = v.replace("-", "")
        return v, 0, len(v)
    if entity == "IP_ADDRESS":
        r = rng.random()
        v = (
            F["en_US"].ipv4()
            if r < 0.4
            else F["en_US"].ipv4_private()
            if r < 0.7
            else F["en_US"].ipv6()
        )
        return v, 0, len(v)
    if entity == "URL_CREDENTIALS":
        scheme = rng.choice(["postgres", "mysql", "redis", "https", "amqp", "mongodb+srv"])
        user = F["en_US"].user_name()
        pw = F["en_US"].password(length=rng.randint(8, 20), special_chars=False)
        host = rng.choice(URL_HOSTS)
        prefix = f"{scheme}://"
        v = f"{prefix}{user}:{pw}@{host}/{rng.choice(['app', 'prod', 'queue', ''])}"
        return v, len(prefix), len(prefix) + len(user) + 1 + len(pw)
    if entity == "SECRET":
        r = rng.random()
        if r < 0.1:
            v = private_key()
            return v, 0, len(v)
        if r < 0.3:
            pw = F["en_US"].password(length=rng.randint(8, 16), special_chars=rng.random() < 0.5)
            pw = pw.replace('"', "x").replace("'", "x").replace(",", "x").replace(";", "x")
            pw = pw.replace("&", "x").replace("<", "x").replace(">", "x").replace("(", "x")
            pw = (
                pw.replace(")", "x")
                .replace("[", "x")
                .replace("]", "x")
                .replace("{", "x")
                .replace("}", "x")
            )
            key = rng.choice(["password=", "password: ", "PASSWORD=", "db_password = ", "secret: ",
                              "client_secret=", "パスワード：", "pwd=", '"password": "'])  # fmt: skip
            tail = '"' if key.endswith('"') else ""
            return key + pw + tail, len(key), len(key) + len(pw)
        v = rng.choice(TOKENS)()
        return v, 0, len(v)
    raise ValueError(entity)


def positive(entity: str, lang: str) -> dict[str, object]:
    pool = BY_TYPE[entity][lang] + (GENERIC[lang] if entity not in ("PHONE",) else [])
    if entity == "PHONE" and rng.random() < 0.2:
        pool = GENERIC[lang]
    template = rng.choice(pool)
    v, a, b = value_for(entity, lang)
    pre = template.split("{v}")[0]
    text = template.replace("{v}", v)
    ents = [{"type": entity, "start": len(pre) + a, "end": len(pre) + b}]
    host = re.match(r"(?:\d{1,3}\.){3}\d{1,3}", v[b + 1 :]) if entity == "URL_CREDENTIALS" else None
    if host is not None:  # an IP address as the host is an entity of its own
        ents.append(
            {"type": "IP_ADDRESS", "start": len(pre) + b + 1, "end": len(pre) + b + 1 + host.end()}
        )
    return {"lang": lang, "kind": "positive", "text": text, "entities": ents}


def multi() -> dict[str, object]:
    """Two or three entities in one message, as people paste them."""
    lang = rng.choice(LANGS)
    types = rng.sample([t for t in BY_TYPE if t != "URL_CREDENTIALS"], rng.randint(2, 3))
    joiners = {"en": [" and ", ", also ", "; "], "ja": ["、", "。また", " / "], "zh": ["，", "；"],
               "th": [" และ ", " "], "mixed": [" and ", "、"]}[lang]  # fmt: skip
    text, ents = "", []
    for i, t in enumerate(types):
        v, a, b = value_for(t, lang)
        if i:
            text += rng.choice(joiners)
        label = {
            "en": f"{t.lower().replace('_', ' ')}: ",
            "ja": "",
            "zh": "",
            "th": "",
            "mixed": "",
        }[lang]
        if t == "PHONE":
            label = {"en": "phone ", "ja": "電話", "zh": "电话", "th": "โทร ", "mixed": "TEL "}[
                lang
            ]
        text += label
        ents.append({"type": t, "start": len(text) + a, "end": len(text) + b})
        text += v
    return {"lang": lang, "kind": "positive", "text": text, "entities": ents}


# --------------------------------------------------------------------------- negatives


def negatives() -> list[dict[str, object]]:
    out: list[str] = []
    d = string.digits
    hexd = "0123456789abcdef"
    for _ in range(60):
        n = rand(d, rng.randint(8, 16))
        out += [
            f"Order #{n} has shipped.",
            f"注文番号：{rand(d, rng.randint(10, 14))}の件です",
            f"ORD-2026-{rand(d, 6)} is delayed",
            f"Invoice INV-{rand(d, 8)} paid",
            f"订单号{rand(d, 12)}已发货",
            f'{{"user_id": {rand(d, 12)}, "item_count": {rng.randint(1, 99)}}}',
            f"tracking number: {rand(d, 12)}",
        ]
    for _ in range(60):
        ts = rng.randint(1_600_000_000, 1_800_000_000)
        out += [
            f"at {F['en_US'].iso8601()}Z the job failed",
            f"[{F['en_US'].date()} {F['en_US'].time()},{rand(d, 3)}] INFO started",
            f"2026年{rng.randint(1, 12)}月{rng.randint(1, 28)}日 {rng.randint(0, 23)}:{rng.randint(10, 59)}に開始",
            f'{{"ts": {ts}{rand(d, 3)}, "level": "info"}}',
            f"created_at={ts}",
            f"thread ts {ts}.{rand(d, 6)}",
            f"deadline {rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2026",
            f"epoch {ts}",
        ]
    for _ in range(40):
        a, b, c = rng.randint(0, 20), rng.randint(0, 30), rng.randint(0, 300)
        out += [
            f"upgrade to v{a}.{b}.{c}",
            f"version {a}.{b}.{c}.{rng.randint(0, 9)}",
            f"python {a}.{b}.{c} and node {b}.{c}.{a}",
            f"pip install botbuilder-core=={a}.{b}.{c}",
            f"Windows 10.0.{rng.randint(10000, 22631)}.{rng.randint(1, 3000)}",
        ]
    for _ in range(40):
        out += [
            f"ping <@U{rand(UPPER_NUM, 8)}> in <#C{rand(UPPER_NUM, 10)}>",
            f"team T{rand(UPPER_NUM, 8)} user W{rand(UPPER_NUM, 8)}",
            f"fixed in commit {rand(hexd, 40)}",
            f"see {rand(hexd, 7)} and {rand(hexd, 12)}",
            f"request id {F['en_US'].uuid4()}",
            f"trace {F['en_US'].uuid4().replace('-', '')}",
            f"sha256:{rand(hexd, 64)}",
        ]
    code = [
        "for i in range(1000000): total += i",
        "x = arr[::2]; y = arr[1::3]",
        "std::vector<int> v; std::map<std::string, int> m;",
        "SELECT * FROM users WHERE id = 123456789;",
        "const token = getToken(); const password = form.password;",
        "password = input('Password: ')",
        "pwd = os.getcwd()",
        "def login(username: str, password: str) -> bool:",
        "max_tokens: 1500, temperature: 0.7",
        "if (a::b == c) { return 0x7fffffff; }",
        "let secret = process.env.SECRET_KEY;",
        "curl -H 'Authorization: Bearer $TOKEN' https://api.example.com",
        "docker run -p 8080:80 -e PASSWORD=${DB_PASSWORD} app",
        "The password is required for this step.",
        "パスワードを忘れました",
        "reset your password: go to settings",
        "timeout=30000 retries=3 backoff=1.5",
        "pi = 3.14159265358979",
        "threshold 0.123456789",
        "matrix[1024][2048] = 0;",
        "MAC 00:1A:2B:3C:4D:5E",
        "at 10:15:30 the build broke",
        "sk-learn-is-not-a-real-key-name",
        "install app-configuration-service-v2",
        "ghp_short",
        "AKIA is the prefix of AWS access keys",
        "xoxb- tokens start like that",
        "the app-AbCdEf token is too short",
        "email me @channel",
        "user@localhost",
        "foo@bar",
        "Price: ¥1,234,567 (税込)",
        "$12,345.67 total",
        "1,000,000円です",
        "〒100-0001 東京都千代田区",
        "ZIP 94105",
        "Room 0312, floor 3",
        "phone extension 1234",
        "chapter 10.2.3",
        "ISBN 978-4-06-519981-3",
        "call +1 later",
        "1.2.3.4.5.6",
        "version: 1.2.3.4",
        "v1.2.3.4",
        "image nginx:1.25.3-alpine",
        "redis://localhost:6379/0",
        "https://example.com/path?page=2&limit=100",
        "https://user@example.com/repo.git",
    ]
    out += code
    # Near misses: right shape, wrong check digit or range.
    for _ in range(60):
        mn = my_number()
        out.append(f"マイナンバーは{mn[:11]}{(int(mn[11]) + 1) % 10}です")
        cn = F["zh_CN"].ssn()
        bad = cn[:17] + ("0" if cn[17] != "0" else "1")
        out.append(f"身份证号码{bad}")
        th = th_id()
        bad_th = f"{th[:12]}{(int(th[12]) + 1) % 10}"
        if not corporate_ok(bad_th):  # valid under another scheme: not a negative
            out.append(f"เลขบัตรประชาชน {bad_th}")
        card = F["en_US"].credit_card_number(card_type="visa16")  # a wrong check digit below
        out.append(f"card {card[:15]}{(int(card[15]) + 1) % 10}")
        ib = F["de_DE"].iban()
        out.append(f"IBAN {ib[:2]}{(int(ib[2:4]) + 1) % 100:02d}{ib[4:]}")
        out.append(f"SSN {rng.choice(['000', '666', '900'])}-{rand(d, 2)}-{rand(d, 4)}")
        out.append(f"IP 256.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}")
        corp = corporate_number()
        bad_corp = f"{int(corp[0]) % 9 + 1}{corp[1:]}"
        if not th_ok(bad_corp):
            out.append(f"法人番号{bad_corp}")
    return [{"lang": "neg", "kind": "negative", "text": t, "entities": []} for t in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/redaction_eval.jsonl")
    ap.add_argument("--per-type", type=int, default=200)
    ap.add_argument("--seed", type=int, default=SEED, help="another seed gives a held-out set")
    args = ap.parse_args()
    reseed(args.seed)
    rows: list[dict[str, object]] = []
    for entity in BY_TYPE:
        for i in range(args.per_type):
            rows.append(positive(entity, LANGS[i % len(LANGS)]))
    rows += [multi() for _ in range(300)]
    rows += negatives()
    with Path(args.out).open("w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            fh.write(json.dumps({"id": i, **row}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
