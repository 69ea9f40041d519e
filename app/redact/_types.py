"""Entity types and findings (the words people read for each type are in app/texts.py)."""

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


@dataclass(frozen=True, slots=True)
class Finding:
    """One recognized entity: its type and offsets into the original text. Never the value."""

    type: str
    start: int
    end: int
