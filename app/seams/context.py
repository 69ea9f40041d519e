"""What an adapter gets from the core when it is created."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.server.health import Health

if TYPE_CHECKING:
    import aiohttp

    from app.config.settings import Settings
    from app.seams.bridge_api import BridgeApi
    from app.server.metrics import Metrics
    from app.state.platform_store import AdapterStore


@dataclass
class AdapterContext:
    """Handed to each adapter factory ``create(ctx) -> Adapter | None``."""

    settings: Settings
    # The narrow API to the pipeline, and Redis for the adapter's own keys: adapters never get
    # the concrete Bridge or RedisStore.
    bridge: BridgeApi
    store: AdapterStore
    metrics: Metrics
    http: aiohttp.ClientSession | None = None
    # Where the adapter says it cannot work (wrong token, unreachable): /readyz reads it.
    health: Health = field(default_factory=Health)
