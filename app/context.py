"""What an adapter gets from the core when it is created."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.health import Health

if TYPE_CHECKING:
    import aiohttp

    from app.metrics import Metrics
    from app.pipeline import Bridge
    from app.settings import Settings
    from app.store import RedisStore


@dataclass
class AdapterContext:
    """Handed to each adapter factory ``create(ctx) -> Adapter | None``."""

    settings: Settings
    bridge: Bridge
    store: RedisStore
    metrics: Metrics
    http: aiohttp.ClientSession | None = None
    # Where the adapter says it cannot work (wrong token, unreachable): /readyz reads it.
    health: Health = field(default_factory=Health)
