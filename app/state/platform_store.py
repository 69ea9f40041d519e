"""Redis for adapters: each platform's own keys under a namespace it names, nothing of the core's.

``<prefix>:<namespace>:<name>`` for keys of the platform (installations, what a person is
viewing) and ``<prefix>:{<thread hash>}:<namespace>:<name>`` for keys of one thread (which Dify
message an activity showed), so a thread's keys stay in one Cluster slot with the core's.
Commands are SET/GET/DEL with EX (Redis 2.6.12+).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from app.state.budgets import SharedBudgets

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from app.pipeline.model import ThreadKey
    from app.state.store import RedisStore


class PlatformStore:
    """Key-value data with a time to live, owned by one platform adapter."""

    def __init__(self, store: RedisStore, namespace: str) -> None:
        if not namespace or ":" in namespace or "{" in namespace:
            raise ValueError(f"a platform namespace is a plain word, got {namespace!r}")
        self._store = store
        self.namespace = namespace

    @property
    def key_prefix(self) -> str:
        """``<prefix>:<namespace>``: what every platform-wide key of this adapter starts with."""
        return self._store.global_key(self.namespace)

    @property
    def redis(self) -> Redis:
        """The connection, for adapter-owned structures beyond key-value (an OAuth
        installation store), kept under :attr:`key_prefix`."""
        return self._store.redis

    def key(self, name: str, *, thread: ThreadKey | None = None) -> str:
        if thread is None:
            return f"{self.key_prefix}:{name}"
        return self._store.k(thread, f"{self.namespace}:{name}")

    async def claim(self, *names: str) -> bool:
        """First delivery of an event (its id and any other names for it, most specific
        first)? False when one of them was claimed before, by this or another replica.

        The pipeline claims each submitted message as ``<platform>:<event_id>`` in the same
        space, so claiming a message's event id here marks it handled (a message refused before
        it reaches the core); claim other names for anything else."""
        return await self._store.claim(*(f"{self.namespace}:{n}" for n in names))

    async def get(self, name: str, *, thread: ThreadKey | None = None) -> str | None:
        raw = await self._store.redis.get(self.key(name, thread=thread))
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def set(
        self, name: str, value: str, *, ttl: float, thread: ThreadKey | None = None
    ) -> None:
        """Set ``name`` to ``value`` for ``ttl`` seconds."""
        await self._store.redis.set(self.key(name, thread=thread), value, ex=max(1, int(ttl)))

    async def set_many(
        self, values: Mapping[str, str], *, ttl: float, thread: ThreadKey | None = None
    ) -> None:
        """Set every ``name: value`` with the same time to live (seconds), in one round trip."""
        ex = max(1, int(ttl))
        async with self._store.redis.pipeline(transaction=False) as pipe:
            for name, value in values.items():
                pipe.set(self.key(name, thread=thread), value, ex=ex)
            await pipe.execute()

    async def delete(self, name: str, *, thread: ThreadKey | None = None) -> None:
        await self._store.redis.delete(self.key(name, thread=thread))


class AdapterStore:
    """What an adapter gets of Redis (``AdapterContext.store``)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def for_platform(self, namespace: str) -> PlatformStore:
        """The adapter's own keys; ``namespace`` is its platform's name."""
        return PlatformStore(self._store, namespace)

    def shared_budgets(self) -> SharedBudgets:
        """Rate budgets shared by every replica (see app/state/budgets.py)."""
        return SharedBudgets(self._store)
