"""The :class:`Redactor`: run the recognizers for a set of entity types, resolve overlaps."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache, partial

from app.errors import ConfigError
from app.redact import _recognizers as rec
from app.redact._normalize import fold
from app.redact._phone_cues import supported_region
from app.redact._types import ENTITY_TYPES, Finding

_Recognizer = Callable[[str], Iterator[rec.Raw]]

# Each recognizer and the types it can produce; a recognizer runs if any of its types is on.
_RECOGNIZERS: tuple[tuple[_Recognizer, frozenset[str]], ...] = (
    (rec.secrets, frozenset({"SECRET"})),
    (rec.url_credentials, frozenset({"URL_CREDENTIALS"})),
    (rec.emails, frozenset({"EMAIL"})),
    (rec.ibans, frozenset({"IBAN"})),
    (rec.ipv6_addresses, frozenset({"IP_ADDRESS"})),
    (rec.ninos, frozenset({"UK_NINO"})),
    (
        rec.numbers,
        frozenset(
            {
                "PHONE",
                "CREDIT_CARD",
                "US_SSN",
                "JP_MY_NUMBER",
                "JP_CORPORATE_NUMBER",
                "CN_RESIDENT_ID",
                "TH_NATIONAL_ID",
                "IP_ADDRESS",
            }
        ),
    ),
)


def parse_entities(entities: Iterable[str]) -> frozenset[str]:
    """Validate entity names (case-insensitive; ``ALL`` means every type)."""
    if isinstance(entities, str):
        entities = (entities,)
    wanted: set[str] = set()
    for raw in entities:
        name = str(raw).strip().upper()
        if name == "ALL":
            wanted.update(ENTITY_TYPES)
        elif name in ENTITY_TYPES:
            wanted.add(name)
        else:
            raise ConfigError(
                f"unknown redaction entity type {raw!r}; "
                f"use ALL or any of: {', '.join(ENTITY_TYPES)}",
                key="redaction.entities",
            )
    return frozenset(wanted)


def parse_regions(regions: Iterable[str]) -> tuple[str, ...]:
    """Validate ``phone_regions`` (ISO 3166 alpha-2 codes with a numbering plan), upper-cased."""
    if isinstance(regions, str):
        regions = (regions,)
    out: list[str] = []
    for raw in regions:
        code = str(raw).strip().upper()
        if not supported_region(code):
            raise ConfigError(
                f"unknown phone region {raw!r}; use ISO 3166 two-letter country codes "
                "such as FR, ES, BR, KR",
                key="redaction.phone_regions",
            )
        if code not in out:
            out.append(code)
    return tuple(out)


def marker(entity_type: str) -> str:
    """The typed marker that replaces a value in ``redact`` mode."""
    return f"[{entity_type}]"


class Redactor:
    """Finds and replaces sensitive values for a fixed set of entity types.

    Build it once (see :func:`get_redactor`); :meth:`find` and :meth:`redact` are pure and
    thread-safe. Offsets always refer to the text the caller passed in.
    """

    __slots__ = ("_recognizers", "entities", "phone_regions")

    def __init__(
        self, entities: Iterable[str] = ("ALL",), phone_regions: Iterable[str] = ()
    ) -> None:
        self.entities: frozenset[str] = parse_entities(entities)
        self.phone_regions: tuple[str, ...] = parse_regions(phone_regions)
        self._recognizers = tuple(
            partial(rec.numbers, regions=self.phone_regions)
            if fn is rec.numbers and self.phone_regions
            else fn
            for fn, types in _RECOGNIZERS
            if types & self.entities
        )

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings sorted by start; offsets into ``text``."""
        if not text or not self._recognizers:
            return []
        folded = fold(text)
        raws: list[rec.Raw] = []
        for fn in self._recognizers:
            raws.extend(fn(folded))
        if not raws:
            return []
        # All types compete for a span (a Luhn-valid card is not also a phone); only then are
        # the types this route does not redact dropped.
        raws.sort(key=lambda r: (-r[3], r[1] - r[2], r[1]))
        # Accepted spans never overlap, so sorted starts and ends stay in the same order and
        # one bisect finds the neighbours: no quadratic blow-up on a message full of matches.
        starts: list[int] = []
        ends: list[int] = []
        out: list[Finding] = []
        for typ, start, end, _prio in raws:
            k = bisect_right(starts, start)
            if (k > 0 and ends[k - 1] > start) or (k < len(starts) and starts[k] < end):
                continue
            starts.insert(k, start)
            ends.insert(k, end)
            if typ in self.entities:
                out.append(Finding(typ, start, end))
        out.sort(key=lambda f: f.start)
        return out

    def redact(self, text: str) -> tuple[str, list[Finding]]:
        """Replace every finding with its typed marker (``[EMAIL]``)."""
        findings = self.find(text)
        return replace(text, findings, lambda f: marker(f.type)), findings


def replace(text: str, findings: list[Finding], sub: Callable[[Finding], str]) -> str:
    """Rebuild ``text`` with each (sorted, non-overlapping) finding replaced by ``sub(f)``."""
    if not findings:
        return text
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(sub(f))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


@lru_cache(maxsize=64)
def _cached(entities: frozenset[str], phone_regions: tuple[str, ...]) -> Redactor:
    return Redactor(entities, phone_regions)


def get_redactor(entities: Iterable[str] = ("ALL",), phone_regions: Iterable[str] = ()) -> Redactor:
    """A shared :class:`Redactor` for this set of entity types and phone regions (built once)."""
    return _cached(parse_entities(entities), parse_regions(phone_regions))
