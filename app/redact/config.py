"""A route's ``redaction:`` block, checked against the entity types and regions redaction knows.

Its own module (not the routing schema's) so redaction and the routing config import it without
importing each other.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from app.redact._phone_cues import supported_region as supported_phone_region
from app.redact._types import ENTITY_TYPES

ENTITY_ALL = "ALL"


class RedactionMode(StrEnum):
    REDACT = "redact"
    PSEUDONYMIZE = "pseudonymize"
    BLOCK = "block"
    OFF = "off"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedactionConfig(_Strict):
    """Per-route redaction. Absent means ``redact`` every entity type: safe by default."""

    mode: RedactionMode = RedactionMode.REDACT
    entities: tuple[str, ...] = (ENTITY_ALL,)
    # Tell the asker briefly that something was redacted.
    notify: bool = True
    # Countries whose national phone numbers this route's users write (ISO 3166 alpha-2, e.g.
    # [FR, ES]): such numbers count as phones with separators ("06 12 34 56 78") or after a
    # phone word, without a "+". JP, US/CA, GB, DE, CN and TH are always known.
    phone_regions: tuple[str, ...] = ()

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = set(ENTITY_TYPES) | {ENTITY_ALL}
        unknown = [e for e in v if e.upper() not in known]
        if unknown:
            raise ValueError(f"unknown entity type(s) {unknown}; known: {', '.join(sorted(known))}")
        return tuple(e.upper() for e in v)

    @field_validator("phone_regions", mode="before")
    @classmethod
    def _known_regions(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)):
            return v
        unknown = [r for r in v if not (isinstance(r, str) and supported_phone_region(r))]
        if unknown:
            raise ValueError(
                f"unknown phone region(s) {unknown}; use ISO 3166 two-letter country codes "
                "such as FR, ES, BR, KR"
            )
        return tuple(dict.fromkeys(r.strip().upper() for r in v))
