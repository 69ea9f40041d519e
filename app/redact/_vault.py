"""Per-thread pseudonym maps in Redis, encrypted at rest.

One key per thread, ``{prefix}:{{{thread.hashed}}}:pseudo``: the ``{...}`` hash tag puts it in
the same Redis Cluster slot as the thread's conversation. The value is AES-256-GCM over a small
JSON document; the key is derived from ``REDACTION_KEY`` with HKDF, and the Redis key is bound
in as associated data so a map copied to another thread's key does not decrypt. Updates use
WATCH/MULTI, so two messages of one thread racing each other never lose a placeholder.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.exceptions import WatchError

from app.errors import BridgeError
from app.redact._restore import placeholder

if TYPE_CHECKING:
    import redis.asyncio

    from app.pipeline.model import ThreadKey

log = structlog.get_logger(__name__)

_VERSION = "v1."
# A thread that collects more distinct values than this gets typed markers for the rest: the
# map is read on every message and must stay small.
MAX_ENTRIES = 500
# Optimistic retries when messages of one thread race; each round one writer wins.
_WATCH_RETRIES = 50


@dataclass(slots=True)
class PseudoMap:
    """Placeholders of one thread. ``values``: ``"EMAIL_1"`` -> original text."""

    counters: dict[str, int] = field(default_factory=dict)
    by_canonical: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"PseudoMap({len(self.values)} entries)"

    def assign(self, entity_type: str, canonical: str, original: str) -> str | None:
        """The placeholder for this value, new or existing; ``None`` when the map is full."""
        ident = f"{entity_type}\x00{canonical}"
        key = self.by_canonical.get(ident)
        if key is None:
            if len(self.values) >= MAX_ENTRIES:
                return None
            n = self.counters.get(entity_type, 0) + 1
            self.counters[entity_type] = n
            key = f"{entity_type}_{n}"
            self.by_canonical[ident] = key
            self.values[key] = original
        entity, num = key.rsplit("_", 1)
        return placeholder(entity, int(num))

    def to_json(self) -> bytes:
        entries = [[ident, key] for ident, key in self.by_canonical.items()]
        doc = {"c": self.counters, "e": entries, "v": self.values}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PseudoMap:
        doc: Any = json.loads(raw)
        counters = {str(k): int(v) for k, v in doc["c"].items()}
        by_canonical = {str(i): str(k) for i, k in doc["e"]}
        values = {str(k): str(v) for k, v in doc["v"].items()}
        return cls(counters, by_canonical, values)


class PseudonymVault:
    """Loads and updates :class:`PseudoMap` objects in Redis."""

    def __init__(
        self, redis: redis.asyncio.Redis, *, secret: str, ttl_seconds: int, prefix: str = "db"
    ) -> None:
        self._redis = redis
        self._ttl = max(1, int(ttl_seconds))
        self._prefix = prefix
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"dify-bridge/redact",
            info=b"pseudonym-map v1",
        )
        self._aead = AESGCM(hkdf.derive(secret.encode()))

    def key(self, thread: ThreadKey) -> str:
        return f"{self._prefix}:{{{thread.hashed}}}:pseudo"

    def _seal(self, key: str, m: PseudoMap) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, m.to_json(), key.encode())
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def _open(self, key: str, stored: bytes | str | None) -> PseudoMap:
        if stored is None:
            return PseudoMap()
        text = stored.decode() if isinstance(stored, bytes) else stored
        try:
            if not text.startswith(_VERSION):
                raise ValueError("unknown format")
            blob = base64.urlsafe_b64decode(text[len(_VERSION) :])
            return PseudoMap.from_json(self._aead.decrypt(blob[:12], blob[12:], key.encode()))
        except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
            # Rotated REDACTION_KEY or a damaged value: start a fresh map rather than fail every
            # message of the thread. Old placeholders in Dify's history stay unrestored.
            log.warning("redact.pseudo_map_unreadable", redis_key=key)
            return PseudoMap()

    async def load(self, thread: ThreadKey) -> PseudoMap:
        """The thread's map (empty if none); refreshes its TTL."""
        key = self.key(thread)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.expire(key, self._ttl)
            stored, _ = await pipe.execute()
        return self._open(key, stored)

    async def assign(
        self, thread: ThreadKey, items: list[tuple[str, str, str]]
    ) -> tuple[PseudoMap, list[str | None]]:
        """Placeholders for ``(type, canonical, original)`` items, stored atomically."""
        key = self.key(thread)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_RETRIES):
                try:
                    await pipe.watch(key)
                    m = self._open(key, await pipe.get(key))
                    before = len(m.values)
                    result = [m.assign(t, c, o) for t, c, o in items]
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if len(m.values) != before:
                        pipe.set(key, self._seal(key, m), ex=self._ttl)
                    else:
                        pipe.expire(key, self._ttl)
                    await pipe.execute()
                    return m, result
                except WatchError:
                    # Spread the retries so racing writers do not collide again at once.
                    await asyncio.sleep(random.uniform(0, 0.002))  # noqa: S311
                    continue
        raise BridgeError("pseudonym map kept changing under concurrent updates; try again")
