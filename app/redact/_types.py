"""Entity types, findings and the labels people read."""

from __future__ import annotations

from dataclasses import dataclass

ENTITY_TYPES: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "JP_MY_NUMBER",
    "JP_CORPORATE_NUMBER",
    "CN_RESIDENT_ID",
    "TH_NATIONAL_ID",
    "UK_NINO",
    "IP_ADDRESS",
    "URL_CREDENTIALS",
    "SECRET",
)
"""Every type the recognizers know. ``"ALL"`` in a route's ``entities`` means all of them."""

# Types whose values are never stored, not even encrypted: pseudonymize mode redacts them.
NEVER_STORED: frozenset[str] = frozenset({"SECRET", "URL_CREDENTIALS"})

# (singular, plural) as the asker reads them in notices.
LABELS: dict[str, tuple[str, str]] = {
    "EMAIL": ("email address", "email addresses"),
    "PHONE": ("phone number", "phone numbers"),
    "CREDIT_CARD": ("payment card number", "payment card numbers"),
    "IBAN": ("IBAN", "IBANs"),
    "US_SSN": ("US Social Security number", "US Social Security numbers"),
    "JP_MY_NUMBER": ("My Number (個人番号)", "My Numbers (個人番号)"),
    "JP_CORPORATE_NUMBER": ("corporate number (法人番号)", "corporate numbers (法人番号)"),
    "CN_RESIDENT_ID": ("Chinese resident ID number", "Chinese resident ID numbers"),
    "TH_NATIONAL_ID": ("Thai national ID number", "Thai national ID numbers"),
    "UK_NINO": ("UK National Insurance number", "UK National Insurance numbers"),
    "IP_ADDRESS": ("IP address", "IP addresses"),
    "URL_CREDENTIALS": ("password in a link", "passwords in links"),
    "SECRET": ("secret (password, token or API key)", "secrets (passwords, tokens or API keys)"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One recognized entity: its type and offsets into the original text. Never the value."""

    type: str
    start: int
    end: int
