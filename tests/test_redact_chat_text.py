"""Values the way people paste them into chat (issue 21): inside full-width brackets, after a
phone word in their own language, in link credentials and command lines, as a UK National
Insurance number. Each story has the value found, an invalid one left alone, and a hard
negative next to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config.settings import RedactionConfig, load_bridge_file
from app.errors import ConfigError
from app.redact import get_redactor


def kinds(text: str, phone_regions: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    found = get_redactor(("ALL",), phone_regions).find(text)
    return [(f.type, text[f.start : f.end]) for f in found]


# --------------------------------------------------------------------------- full-width punctuation

# (type, valid value, the same value with a wrong check digit or range, words around it)
NUMERIC = [
    ("CREDIT_CARD", "4111111111111111", "4111111111111112", "カード番号"),
    ("CREDIT_CARD", "5555 5555 5555 4444", "5555 5555 5555 4445", "カード"),
    ("JP_MY_NUMBER", "123456789018", "123456789019", "マイナンバー"),
    ("JP_CORPORATE_NUMBER", "7000012050002", "8000012050002", "法人番号"),
    ("CN_RESIDENT_ID", "11010519491231002X", "110105194912310021", "身份证号"),
    ("TH_NATIONAL_ID", "1101700203425", "1101700203427", "เลขบัตรประชาชน"),
    ("US_SSN", "123-45-6789", "666-45-6789", "SSN"),
    ("IBAN", "DE89370400440532013000", "DE89370400440532013001", "IBAN"),
    ("UK_NINO", "AB123456C", "QQ123456C", "NI番号"),
    ("PHONE", "090-1234-5678", "000-1234-5678", "電話"),
    ("IP_ADDRESS", "192.168.1.10", "192.168.1.300", "サーバー"),
]
BRACKETS = [
    ("（", "）"), ("「", "」"), ("『", "』"), ("【", "】"), ("〔", "〕"), ("［", "］"),
    ("《", "》"), ("〈", "〉"), ("“", "”"), ("：", "。"), ("、", "、"), ("，", "，"),
    ("：", "）"), ("(", ")"), ("／", "／"),
]  # fmt: skip


@pytest.mark.parametrize(("open_", "close"), BRACKETS)
@pytest.mark.parametrize(("kind", "valid", "invalid", "words"), NUMERIC)
def test_every_numeric_type_is_found_inside_full_width_punctuation(
    kind: str, valid: str, invalid: str, words: str, open_: str, close: str
) -> None:
    text = f"{words}{open_}{valid}{close}です"
    assert (kind, valid) in kinds(text)
    assert kinds(f"{words}{open_}{invalid}{close}です") == []


def test_a_card_number_in_full_width_parentheses_keeps_the_parentheses_out_of_the_finding() -> None:
    text = "支払いはカード（４１１１　１１１１　１１１１　１１１１）でした"
    assert kinds(text) == [("CREDIT_CARD", "４１１１　１１１１　１１１１　１１１１")]


def test_a_us_area_code_in_parentheses_still_belongs_to_the_phone_number() -> None:
    assert kinds("call (415) 555-2671 today") == [("PHONE", "(415) 555-2671")]


def test_full_width_slash_between_an_address_and_a_phone_number_separates_them() -> None:
    text = "担当：山田（yamada@example.jp／090-1234-5678）"
    assert kinds(text) == [("EMAIL", "yamada@example.jp"), ("PHONE", "090-1234-5678")]


# --------------------------------------------------------------------------- phones

PHONES_WITH_A_CUE = [
    ("Mon numéro : 06 12 34 56 78", "06 12 34 56 78"),
    ("Vous pouvez me joindre au 01 42 68 53 00 demain.", "01 42 68 53 00"),
    ("Telefon: 0171 1234567", "0171 1234567"),
    ("Mi teléfono es 612 34 56 78", "612 34 56 78"),
    ("Mi número: 612345678, llámame", "612345678"),
    ("Meu celular: (11) 91234-5678", "(11) 91234-5678"),
    ("Il mio numero è 347 123 4567", "347 123 4567"),
    ("전화번호: 010-1234-5678", "010-1234-5678"),
    ("Call 98765 43210 after lunch", "98765 43210"),
    ("Text Dana at 2125550147 after 5pm", "2125550147"),
    ("2125550147 is my cell, not the office", "2125550147"),
    ("my colleague in Spain: 612 34 56 78", "612 34 56 78"),
    ("Mobile: +44 7700 900123", "+44 7700 900123"),
    ("Mon numéro est le 06 12 34 56 78", "06 12 34 56 78"),
    ("โทร 081 234 5678 ได้เลย", "081 234 5678"),
]


@pytest.mark.parametrize(("text", "phone"), PHONES_WITH_A_CUE)
def test_a_phone_number_of_any_country_is_found_when_the_message_says_it_is_one(
    text: str, phone: str
) -> None:
    assert ("PHONE", phone) in kinds(text)


NOT_PHONES = [
    "Order 612345678 shipped today",
    "invoice 0612345678 is overdue",
    "ticket number: 4155552671",
    "Mi pedido 612 34 56 78 llegó tarde",  # "pedido" (order) is no phone word
    "the total was 1234567890 yen",
    "tell them 612345678 items are left",
    "call (123) 456-7890 now",  # written the US way, and no US number
    "my colleague in Spain: 612345678",  # no separator and no phone word: as likely an id
    "Mobile: +44 12",
    # order, invoice and customer numbers labelled in the languages whose phone words are known
    "Numéro de commande : 06 12 34 56 78",
    "Bestellnummer: 0171 1234567",
    "Meine Kundennummer ist 0171 1234567",
    "Mi número de pedido es 612 34 56 78",
    "Número do pedido: 11 91234-5678",
    "주문번호: 010-1234-5678",
    "Rechnung Nr. 0301234567",
]


@pytest.mark.parametrize("text", NOT_PHONES)
def test_ids_and_order_numbers_are_not_phones_even_near_phone_words(text: str) -> None:
    assert [k for k, _ in kinds(text)] == []


def test_a_routes_phone_regions_make_separated_national_numbers_phones_without_a_word() -> None:
    text = "Kunde: 612 34 56 78"
    assert kinds(text) == []
    assert kinds(text, ("ES",)) == [("PHONE", "612 34 56 78")]
    # Digits with no separator still need a phone word: they are as likely an id.
    assert kinds("Kunde: 612345678", ("ES",)) == []


def test_an_unknown_phone_region_in_the_config_file_is_refused_naming_the_key(
    tmp_path: Path,
) -> None:
    p = tmp_path / "bridge.yaml"
    p.write_text("routes:\n  - name: a\n    redaction: {phone_regions: [FR, ZZ]}\n")
    with pytest.raises(ConfigError, match=r"routes\.0\.redaction\.phone_regions.*ZZ"):
        load_bridge_file(p)
    p.write_text("routes:\n  - name: a\n    redaction: {phone_regions: [fr, es]}\n")
    assert load_bridge_file(p).routes[0].redaction.phone_regions == ("FR", "ES")


def test_the_tail_of_an_unknown_international_number_is_not_taken_for_another_countrys() -> None:
    assert kinds("ref +99 7700 900123 call") == []


def test_phone_regions_are_validated_in_the_route_config() -> None:
    cfg = RedactionConfig(phone_regions=("fr", "ES", "FR"))
    assert cfg.phone_regions == ("FR", "ES")
    with pytest.raises(ValueError, match="unknown phone region"):
        RedactionConfig(phone_regions=("XX",))
    with pytest.raises(ConfigError, match="phone region"):
        get_redactor(("ALL",), ("France",))


# --------------------------------------------------------------------------- UK NINO

NINOS = [
    ("NINO: AB 12 34 56 C", "AB 12 34 56 C"),
    ("my NI number is JG103759A thanks", "JG103759A"),
    ("National Insurance no. ce 12 34 56 d", "ce 12 34 56 d"),
    ("Payslip shows TW 123456 B", "TW 123456 B"),
]


@pytest.mark.parametrize(("text", "nino"), NINOS)
def test_uk_national_insurance_numbers_are_found(text: str, nino: str) -> None:
    assert kinds(text) == [("UK_NINO", nino)]


@pytest.mark.parametrize(
    "text",
    [
        "QQ 12 34 56 C is the example on the form",  # Q is never a first letter
        "prefix GB123456A is never allocated",
        "DA123456A has D first",
        "AO123456A has O second",
        "AB123456E has a suffix after D",
        "serial XAB123456C",  # part of a longer code
        "AB12345678C",  # too many digits
        "ab123456c without a label",  # lower case only after a label
    ],
)
def test_strings_that_break_hmrc_rules_are_not_national_insurance_numbers(text: str) -> None:
    assert [k for k, _ in kinds(text) if k == "UK_NINO"] == []


# --------------------------------------------------------------------------- passwords

PASSWORDS = [
    ("Passwort für den Share: Xy7!kLm2", "Xy7!kLm2"),
    ("Das Passwort lautet Sommer2024!", "Sommer2024!"),
    ("Kennwort: Gehe1m#", "Gehe1m#"),
    ("mot de passe : Azerty123!", "Azerty123!"),
    ("Le mot de passe du serveur de recette : Recette_2025", "Recette_2025"),
    ("contraseña: Hola1234", "Hola1234"),
    ("La contraseña es Perro#2023", "Perro#2023"),
    ("senha: Brasil@123", "Brasil@123"),
    ("A senha do wifi é casa1234", "casa1234"),
    ("パスワード「Tokyo2024!」です", "Tokyo2024!"),
    ("パスワード：abc123xyz", "abc123xyz"),
    ("密码：Abc12345", "Abc12345"),
    ("WiFi密码：guest@8866，谢谢", "guest@8866"),
    ("비밀번호: qwer1234!", "qwer1234!"),
    ("비밀번호는 qwer1234! 입니다", "qwer1234!"),
    ("รหัสผ่าน: Sawasdee99", "Sawasdee99"),
    ("รหัสผ่านคือ Sawasdee99 ครับ", "Sawasdee99"),
    ("รหัสผ่าน Krungthep#42 เข้าไม่ได้", "Krungthep#42"),
    ("Zugang: Benutzer admin, Passwort Adm1n_Berlin.", "Adm1n_Berlin"),
    ("Code Wi-Fi invités : Soleil2025", "Soleil2025"),
    ("WLAN-Schlüssel: Fr1tzBox!", "Fr1tzBox!"),
    ("Wachtwoord: Geheim123", "Geheim123"),
    ("export PGPASSWORD='Zz9!long-pass'", "Zz9!long-pass"),
    ("APPSECRET=Qw3rty-9uiop", "Qw3rty-9uiop"),
]


@pytest.mark.parametrize(("text", "value"), PASSWORDS)
def test_passwords_given_in_other_languages_are_secrets(text: str, value: str) -> None:
    assert ("SECRET", value) in kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "Passwort: bitte beim Admin erfragen",
        "mot de passe : voir avec l'équipe",
        "password reset instructions: see the wiki",
        "The password policy for admins: 12 characters minimum",
        "the password for the wifi is on the fridge",
        "パスワード：********",
        "contraseña: ${DB_PASSWORD}",
        "Passwort vergessen? Hier klicken",
        '-v "$PWD/config:/app/config:ro"',
        "senha forte",
        "PASS src/v2/app.test.js (3.1 s)",
        "pass test_case12 and move on",
        "Passwort /etc/secrets/db2.txt liegt dort",
        "COMPASS=north",
        "BYPASS = enabled",
    ],
)
def test_sentences_about_passwords_are_not_secrets(text: str) -> None:
    assert [k for k, _ in kinds(text) if k == "SECRET"] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("redis-cli -h cache -a Qx7pL2mN9 ping", "Qx7pL2mN9"),
        ("mysql -u root -pS3cret! -h db", "S3cret!"),
        ("sshpass -p 'hunter22' ssh deploy@host", "hunter22"),
        ("curl -u admin:Passw0rd https://api.example.com", "Passw0rd"),
        ("./tool --password hunter22 --verbose", "hunter22"),
    ],
)
def test_password_options_on_a_pasted_command_line_are_secrets(text: str, value: str) -> None:
    assert ("SECRET", value) in kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "mysql -u root -p -h db",
        "mysql -uroot -p$MYSQL_PWD",
        "redis-cli -a <password>",
        "see mongodb://db.example.com/app, then ssh -p 2222 bastion",  # not the mongo shell
    ],
)
def test_prompted_or_variable_passwords_on_a_command_line_are_left_alone(text: str) -> None:
    assert [k for k, _ in kinds(text) if k == "SECRET"] == []


@pytest.mark.parametrize(
    "token",
    [
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
        "whsec_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed",
        "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    ],
)
def test_tokens_with_a_vendor_prefix_are_secrets(token: str) -> None:
    assert kinds(f"token ของ bot {token} หลุด") == [("SECRET", token)]


@pytest.mark.parametrize(
    "text",
    ["use sk_live_XXXXXXXXXXXXXXXX here", "hf_model_name_for_the_demo", "whsec_xxxxxxxxxxxxxxxx"],
)
def test_placeholder_tokens_in_documentation_are_not_secrets(text: str) -> None:
    assert kinds(text) == []


def test_an_aws_secret_key_pasted_after_its_key_id_is_a_secret() -> None:
    key_id, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = f"found in the wiki: {key_id} / {secret} – how do I revoke it?"
    assert kinds(text) == [("SECRET", key_id), ("SECRET", secret)]
    # a Git SHA-1 is 40 characters too, but hex in one case
    text = f"{key_id} was committed in 3f2a9c1e4b5d4f7a8b9c0d1e2f3a4b5c6d7e8f90"
    assert kinds(text) == [("SECRET", key_id)]


# --------------------------------------------------------------------------- links and hosts


@pytest.mark.parametrize(
    ("text", "creds", "host"),
    [
        ("postgres://user:secret@10.2.12.157:5432/db", "user:secret", "10.2.12.157"),
        ("REDIS_URL=redis://:Kx7#pQ2@10.8.1.23:6379/2", ":Kx7#pQ2", "10.8.1.23"),
        ("postgres://fin:Cafe@Rio!9@10.70.1.5:5432/erp", "fin:Cafe@Rio!9", "10.70.1.5"),
        ("mongodb://bi:Bj#2024@[2001:db8::5]:27017/r", "bi:Bj#2024", "2001:db8::5"),
    ],
)
def test_the_host_of_a_link_with_credentials_is_an_ip_address_finding(
    text: str, creds: str, host: str
) -> None:
    assert kinds(text) == [("URL_CREDENTIALS", creds), ("IP_ADDRESS", host)]


def test_a_token_used_as_the_password_of_a_link_is_covered_with_the_user_name() -> None:
    text = "git remote is https://ci-bot:glpat-AbCdEfGhIjKlMnOpQrSt@gitlab.example.com/app.git"
    assert kinds(text) == [("URL_CREDENTIALS", "ci-bot:glpat-AbCdEfGhIjKlMnOpQrSt")]


def test_ssh_targets_name_their_host_address() -> None:
    assert kinds("ssh root@192.168.1.10 -p 22") == [("IP_ADDRESS", "192.168.1.10")]


def test_a_version_pinned_with_double_equals_is_not_an_address() -> None:
    assert kinds("pip install foo==1.2.3.4") == []


# --------------------------------------------------------------------------- ids and e-mail


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("His Chinese ID is 11010519491231002X, please verify.", "11010519491231002X"),
        ("Resident ID 110105 19491231 002X on file", "110105 19491231 002X"),
        ("ID card: 440306199003070010 (Shenzhen)", "440306199003070010"),
        ('{"national_id": "310115198502141233"}', "310115198502141233"),
    ],
)
def test_a_chinese_resident_id_in_an_english_sentence_is_found(text: str, value: str) -> None:
    assert kinds(text) == [("CN_RESIDENT_ID", value)]


@pytest.mark.parametrize(
    "text",
    [
        "ID 990105194912310023 (no province 99 in GB/T 2260)",
        "ID 110105209912310029 (born in 2099)",
        "ID 110105194902300028 (30 February)",
    ],
)
def test_resident_ids_with_an_impossible_region_or_birth_date_are_not_found(text: str) -> None:
    assert [k for k, _ in kinds(text) if k == "CN_RESIDENT_ID"] == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"card_no": "4111111111111111"}', "CREDIT_CARD"),
        ("phone_no=090-1234-5678", "PHONE"),
        ("citizen_id: 1101700203425", "TH_NATIONAL_ID"),
    ],
)
def test_a_key_that_names_personal_data_does_not_hide_its_value(text: str, kind: str) -> None:
    assert [k for k, _ in kinds(text)] == [kind]


def test_record_keys_still_hide_ids_that_happen_to_pass_a_check_digit() -> None:
    assert kinds('{"user_id": 4111111111111111, "order_no": 123456789018}') == []


def test_a_product_barcode_is_not_a_national_id() -> None:
    assert kinds("商品コード 4901234567894 のJANコード") == []
    assert kinds("barcode 4901234567894") == []
    assert kinds("JANコード: 4901234567894") == []
    assert kinds("EAN-13 4901234567894") == []


def test_a_13_digit_visa_number_counts_only_where_a_card_is_mentioned() -> None:
    assert kinds("mi tarjeta 4222 2222 2222 2 por teléfono") == [
        ("CREDIT_CARD", "4222 2222 2222 2")
    ]
    assert kinds("lot 4222222222222 received") == []
    # a Thai id card is a card too, but the number on it is an id
    assert [k for k, _ in kinds("บัตรประชาชน 4222222222222")] == []


@pytest.mark.parametrize(
    "text",
    [
        "see icon@2x.png and logo@3x.webp",
        "git clone git@github.com:org/repo.git",
        "npm i @types/node@20.1.0",
        "export from report@final.pdf",
    ],
)
def test_file_names_and_ssh_remotes_are_not_email_addresses(text: str) -> None:
    assert [k for k, _ in kinds(text) if k == "EMAIL"] == []


def test_an_email_next_to_an_image_file_name_is_still_found() -> None:
    text = "icon@2x.png from design@example.com"
    assert kinds(text) == [("EMAIL", "design@example.com")]
