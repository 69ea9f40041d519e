"""The pipeline's redaction seam: apply a route's mode to everything that leaves for Dify."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from app import texts
from app.errors import ConfigError
from app.redact._normalize import fold
from app.redact._redactor import get_redactor, marker, replace
from app.redact._restore import Restorer
from app.redact._types import NEVER_STORED, Finding
from app.redact._vault import PseudonymVault
from app.redact.config import RedactionConfig, RedactionMode

if TYPE_CHECKING:
    import redis.asyncio

    from app.pipeline.model import ThreadKey

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class Prepared:
    """What may be sent to Dify, and what to tell the asker.

    ``query`` and ``extra`` are safe to send unless ``blocked`` (then nothing is sent; they hold
    the redacted text only as a second line of defence). ``found`` counts entities per type.
    ``restorer`` is set in pseudonymize mode when the thread has placeholders to restore.
    """

    query: str
    extra: dict[str, str]
    found: dict[str, int]
    blocked: bool
    restorer: Restorer | None
    mode: RedactionMode = RedactionMode.REDACT
    notify: bool = True


def canonical(entity_type: str, value: str) -> str:
    """The form under which two spellings of one value share a placeholder."""
    v = fold(value)
    if entity_type in ("EMAIL", "IP_ADDRESS"):
        return v.lower()
    if entity_type in ("IBAN", "UK_NINO"):
        return v.replace(" ", "").replace("-", "").upper()
    if entity_type in ("PHONE", "CREDIT_CARD", "US_SSN", "JP_MY_NUMBER", "JP_CORPORATE_NUMBER",
                       "CN_RESIDENT_ID", "TH_NATIONAL_ID"):  # fmt: skip
        return "".join(c for c in v if c.isdigit() or c in "+Xx").upper()
    return v


class RedactionService:
    """Applies each route's redaction mode to the query and every extra value sent to Dify."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        secret: str | None,
        ttl_seconds: int,
        prefix: str = "db",
    ) -> None:
        self._vault = (
            PseudonymVault(redis, secret=secret, ttl_seconds=ttl_seconds, prefix=prefix)
            if secret
            else None
        )

    def check(self, cfg: RedactionConfig, *, route: str = "") -> None:
        """Raise :class:`ConfigError` if ``cfg`` cannot work (startup check for every route)."""
        get_redactor(cfg.entities, cfg.phone_regions)
        if cfg.mode is RedactionMode.PSEUDONYMIZE and self._vault is None:
            where = f"route {route!r} " if route else "a route "
            raise ConfigError(
                f"{where}uses redaction mode pseudonymize, which keeps an encrypted map of "
                "placeholders: set REDACTION_KEY to a long random string (for example the output "
                "of `openssl rand -base64 32`), or choose mode redact",
                key="REDACTION_KEY",
            )

    async def prepare(
        self,
        cfg: RedactionConfig,
        query: str,
        thread: ThreadKey,
        *,
        extra: Mapping[str, str] = _EMPTY,
    ) -> Prepared:
        """Redact, pseudonymize or block ``query`` and every value of ``extra`` for one message."""
        if cfg.mode is RedactionMode.OFF:
            return Prepared(query, dict(extra), {}, False, None, cfg.mode, cfg.notify)
        self.check(cfg)
        redactor = get_redactor(cfg.entities, cfg.phone_regions)
        texts: dict[str | None, str] = {None: query, **{k: str(v) for k, v in extra.items()}}
        findings = {k: redactor.find(v) for k, v in texts.items()}
        found: Counter[str] = Counter(f.type for fs in findings.values() for f in fs)

        if cfg.mode is not RedactionMode.PSEUDONYMIZE:
            out = {k: replace(texts[k], fs, lambda f: marker(f.type)) for k, fs in findings.items()}
            blocked = cfg.mode is RedactionMode.BLOCK and bool(found)
            return self._result(out, found, blocked, None, cfg)

        assert self._vault is not None  # check() raised otherwise
        items: list[tuple[str, str, str]] = []
        for k, fs in findings.items():
            for f in fs:
                if f.type not in NEVER_STORED:
                    value = texts[k][f.start : f.end]
                    items.append((f.type, canonical(f.type, value), value))
        if items:
            pmap, names = await self._vault.assign(thread, items)
        else:
            pmap, names = await self._vault.load(thread), []
        queue = iter(names)

        def sub(f: Finding) -> str:
            if f.type in NEVER_STORED:
                return marker(f.type)
            return next(queue) or marker(f.type)

        # Same iteration order as when ``items`` was built, so ``queue`` lines up.
        out = {k: replace(texts[k], fs, sub) for k, fs in findings.items()}
        restorer = Restorer(pmap.values) if pmap.values else None
        return self._result(out, found, False, restorer, cfg)

    @staticmethod
    def _result(
        out: dict[str | None, str],
        found: Counter[str],
        blocked: bool,
        restorer: Restorer | None,
        cfg: RedactionConfig,
    ) -> Prepared:
        query = out.pop(None)
        extra = {str(k): v for k, v in out.items()}
        counts = {t: found[t] for t in sorted(found, key=lambda t: (-found[t], t))}
        return Prepared(query, extra, counts, blocked, restorer, cfg.mode, cfg.notify)

    def notice(self, prepared: Prepared) -> str | None:
        """A one-line note for the asker when something was taken out, else ``None``."""
        if prepared.blocked or not prepared.found or not prepared.notify:
            return None
        what = texts.data_found(prepared.found)
        if prepared.mode is RedactionMode.PSEUDONYMIZE:
            return texts.PSEUDONYMIZED.format(what=what)
        return texts.REDACTED.format(what=what)

    def block_message(self, prepared: Prepared) -> str:
        """Why the message was not sent: the kinds of data found, never the values."""
        what = texts.data_found(prepared.found) or texts.SENSITIVE_DATA
        return texts.BLOCKED.format(what=what)
