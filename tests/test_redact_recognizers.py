"""Each recognizer: a valid value is found, a wrong check digit or a near miss is not."""

from __future__ import annotations

from itertools import pairwise

import pytest

from app.errors import ConfigError
from app.redact import ENTITY_TYPES, Finding, Redactor, get_redactor


def kinds(text: str, entities: tuple[str, ...] = ("ALL",)) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in get_redactor(entities).find(text)]


FOUND = [
    # email
    ("Please email taro.yamada@example.co.jp about it", "EMAIL", "taro.yamada@example.co.jp"),
    ("連絡先はhanako+test@mail.example.comまで", "EMAIL", "hanako+test@mail.example.com"),
    # phone numbers: JP, US, GB, DE, CN, TH, international, full-width
    ("電話番号は090-1234-5678です。", "PHONE", "090-1234-5678"),
    ("電話は０３－１２３４－５６７８です", "PHONE", "０３－１２３４－５６７８"),
    ("携帯０９０ー１２３４ー５６７８まで", "PHONE", "０９０ー１２３４ー５６７８"),
    ("Call me at (415) 555-2671 tomorrow", "PHONE", "(415) 555-2671"),
    ("office 415.555.2671x123 ok", "PHONE", "415.555.2671x123"),
    ("my cell is 4155552671", "PHONE", "4155552671"),
    ("London office: 020 7946 0958", "PHONE", "020 7946 0958"),
    ("UK +44 (0)20 7946 0958", "PHONE", "+44 (0)20 7946 0958"),
    ("Berlin: 030 12345678", "PHONE", "030 12345678"),
    ("ruf an: +49 30 12345678", "PHONE", "+49 30 12345678"),
    ("我的手机13812345678，谢谢", "PHONE", "13812345678"),
    ("โทร 081 234 5678 ได้เลย", "PHONE", "081 234 5678"),
    ("โทร ๐๘๑๒๓๔๕๖๗๘ ครับ", "PHONE", "๐๘๑๒๓๔๕๖๗๘"),
    # payment cards (Luhn)
    ("card 4111 1111 1111 1111 exp 12/27", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("Amex 3782 822463 10005 please", "CREDIT_CARD", "3782 822463 10005"),
    ("カード番号は5555555555554444です", "CREDIT_CARD", "5555555555554444"),
    # IBAN (mod 97)
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("Konto DE89370400440532013000.", "IBAN", "DE89370400440532013000"),
    # US SSN
    ("SSN: 123-45-6789", "US_SSN", "123-45-6789"),
    # Japan My Number (check digit) and corporate number
    ("マイナンバーは123456789018です", "JP_MY_NUMBER", "123456789018"),
    ("個人番号：１２３４　５６７８　９０１８", "JP_MY_NUMBER", "１２３４　５６７８　９０１８"),
    ("法人番号は7000012050002です", "JP_CORPORATE_NUMBER", "7000012050002"),
    ("登録番号T7000012050002", "JP_CORPORATE_NUMBER", "T7000012050002"),
    # China resident id (checksum, birth date)
    ("身份证号码11010519491231002X，请核对", "CN_RESIDENT_ID", "11010519491231002X"),
    # Thailand national id (checksum)
    ("เลขบัตรประชาชน 1-1017-00203-42-5 ครับ", "TH_NATIONAL_ID", "1-1017-00203-42-5"),
    ("Thai ID 1101700203425", "TH_NATIONAL_ID", "1101700203425"),
    # IP addresses
    ("server 192.168.1.10 is down", "IP_ADDRESS", "192.168.1.10"),
    ("サーバー10.0.3.7に接続できません", "IP_ADDRESS", "10.0.3.7"),
    ("v6 at fe80::1ff:fe23:4567:890a now", "IP_ADDRESS", "fe80::1ff:fe23:4567:890a"),
    ("ID：2001:db8::8a2e:370:7334", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    # links with credentials
    ("DATABASE_URL=postgres://admin:s3cr3t@db.example.com/app", "URL_CREDENTIALS", "admin:s3cr3t"),
    ("redis://:hunter2@cache:6379/0", "URL_CREDENTIALS", ":hunter2"),
]

SECRETS = [
    "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xapp-1-A0123ABCDEF-1234567890123-0123456789abcdef0123456789abcdef",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "github_pat_11ABCDEFG0123456789_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQr",
    "sk-proj-Abc123DEF456ghi789JKL012mno345PQR678stu901",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-AbCdEfGhIjKlMnOp-AA",
    "app-AbCdEfGh12345678IjKlMnOp",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


@pytest.mark.parametrize(("text", "kind", "value"), FOUND)
def test_sensitive_value_is_found_with_its_type(text: str, kind: str, value: str) -> None:
    assert (kind, value) in kinds(text)


@pytest.mark.parametrize("token", SECRETS)
def test_api_keys_and_tokens_pasted_in_japanese_text_are_secrets(token: str) -> None:
    text = f"このキー{token}を使ってください"
    assert kinds(text) == [("SECRET", token)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("password=hunter2", "hunter2"),
        ('{"password": "correct horse battery"}', "correct horse battery"),
        ("DB_PASSWORD: Xy9$kLm2", "Xy9$kLm2"),
        ("パスワード：abc123xyz", "abc123xyz"),
        ("パスワードはabc123です", "abc123"),
        ("client_secret=Zq8Lr2Vx9Tn4", "Zq8Lr2Vx9Tn4"),
        ("Authorization: Bearer abcdefghijklmnop1234567890", "abcdefghijklmnop1234567890"),
        ("api_key = 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706"),
        ("his password is Tr0ub4dor&3.", "Tr0ub4dor&3"),
        ("https://x.example.com/?password=abc123&user=bob", "abc123"),
    ],
)
def test_password_and_key_assignments_hide_only_the_value(text: str, value: str) -> None:
    assert kinds(text) == [("SECRET", value)]


def test_private_key_block_is_hidden_whole() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----"
    text = f"key:\n{block}\nthanks"
    assert kinds(text) == [("SECRET", block)]


NOT_FOUND = [
    # wrong check digits
    "マイナンバーは123456789012です",
    "card 4111 1111 1111 1112",
    "IBAN GB83 WEST 1234 5698 7654 32",
    "身份证号码110105194912310021",
    "เลขบัตรประชาชน 1-1017-00203-42-1",
    "法人番号8000012050002",
    "SSN 000-12-3456 and 666-12-3456",
    # numbers that are not in any numbering plan, addresses that are not addresses
    "call (123) 456-7890 now",
    "電話は090-0000-0000です",
    "IP 256.1.1.1 and 2001:db8:::1",
    "redis://localhost:6379/0 and https://example.com:8443/path",
    # near misses: ids, timestamps, versions, hashes, code
    "Order #123456789012 has shipped",
    "注文番号：4111111111111111の件",
    "ORD-2026-000123 is late",
    '{"user_id": 123456789018, "item_count": 3}',
    '{"ts": 1732345678901, "level": "info"}',
    "thread ts 1732345678.123456",
    "at 2026-11-23T10:15:30Z the job failed",
    "2026/11/23 10:15 に開始",
    "deadline 01/02/2026",
    "upgrade to v1.2.3.4 then version 10.0.19041.1",
    "pip install botbuilder-core==4.17.1",
    "ping <@U0123ABCD> in <#C07ABCDEF12>",
    "fixed in commit 3f2a9c1e4b5d6f7a8b9c0d1e2f3a4b5c6d7e8f90",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "x = arr[::2]; y = arr[1::3]; std::vector<int> v;",
    "password = input('Password: ')",
    "pwd = os.getcwd()",
    "max_tokens: 1500, temperature: 0.7",
    "The password is required for this step.",
    "The password is required. The secret is safe.",
    "docker run -e PASSWORD=${DB_PASSWORD} app",
    "pi = 3.14159265358979 and 0.123456789",
    "MAC 00:1A:2B:3C:4D:5E at 10:15:30",
    "Price: ¥1,234,567 (税込)",
    "〒100-0001 東京都千代田区",
    "sk-learn-is-not-a-real-key-name",
    "email me @channel or user@localhost",
    "https://user@example.com/repo.git",
]


@pytest.mark.parametrize("text", NOT_FOUND)
def test_look_alikes_and_wrong_check_digits_are_left_alone(text: str) -> None:
    assert kinds(text) == []


def test_text_with_slack_and_markdown_link_markup_is_covered() -> None:
    text = (
        "ping <mailto:bob@example.com|bob@example.com> or <tel:09012345678|090-1234-5678>, "
        "[carol@example.com](mailto:carol@example.com) <https://admin:pw12345@db.example.com/x|db>"
    )
    assert kinds(text) == [
        ("EMAIL", "bob@example.com"),
        ("EMAIL", "bob@example.com"),
        ("PHONE", "09012345678"),
        ("PHONE", "090-1234-5678"),
        ("EMAIL", "carol@example.com"),
        ("EMAIL", "carol@example.com"),
        ("URL_CREDENTIALS", "admin:pw12345"),
    ]


def test_offsets_point_into_the_original_full_width_text() -> None:
    text = "お客様の電話は０９０－１２３４－５６７８、メールはｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍです"
    found = get_redactor().find(text)
    assert [text[f.start : f.end] for f in found] == [
        "０９０－１２３４－５６７８",
        "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    ]


def test_redact_replaces_each_value_with_a_typed_marker() -> None:
    text = "Mail bob@example.com or call 090-1234-5678; card 4111111111111111."
    out, found = get_redactor().redact(text)
    assert out == "Mail [EMAIL] or call [PHONE]; card [CREDIT_CARD]."
    assert [f.type for f in found] == ["EMAIL", "PHONE", "CREDIT_CARD"]


def test_findings_are_sorted_non_overlapping_and_never_hold_the_value() -> None:
    text = "postgres://bob:pw123456@db.example.com and bob@example.com at 10.0.0.1"
    found = get_redactor().find(text)
    assert all(a.end <= b.start for a, b in pairwise(found))
    assert set(Finding.__slots__) == {"type", "start", "end"}


def test_route_entity_list_limits_what_is_redacted() -> None:
    text = "bob@example.com 090-1234-5678"
    assert kinds(text, ("EMAIL",)) == [("EMAIL", "bob@example.com")]
    assert kinds(text, ("phone",)) == [("PHONE", "090-1234-5678")]


def test_a_card_number_is_not_reported_as_a_phone_when_only_phones_are_redacted() -> None:
    assert kinds("4111 1111 1111 1111", ("PHONE",)) == []


def test_unknown_entity_type_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"EMAILS.*ALL or any of: EMAIL, PHONE"):
        Redactor(("EMAILS",))


def test_get_redactor_builds_each_entity_set_once() -> None:
    assert get_redactor(("ALL",)) is get_redactor(list(ENTITY_TYPES))
    assert get_redactor(("EMAIL", "PHONE")) is get_redactor(("phone", "email"))


def test_empty_and_huge_inputs_do_not_crash_or_hang() -> None:
    r = get_redactor()
    assert r.find("") == []
    big = ("1-2-3-4-5-6-7-8-9 " * 3000) + ("a" * 100_000) + ("@" * 5000) + (":" * 5000)
    assert isinstance(r.find(big), list)
