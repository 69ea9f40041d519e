"""What a platform package hands the core through the ``dify_bridge.adapters`` entry point.

A new platform is one package exposing a :class:`Platform` and one entry point naming it; the core
discovers it (:func:`discover`) and never imports the package by name. Only ``name`` and
``create`` are required; a platform with settings of its own, a manifest command or doctor checks
adds them through ``settings`` and ``admin``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    import httpx

    from app.admin.doctor import Check
    from app.config.settings import PlatformSettings, Route, Settings
    from app.pipeline.model import Adapter
    from app.seams.context import AdapterContext

log = structlog.get_logger(__name__)

GROUP = "dify_bridge.adapters"

#: ``dify-bridge manifest``'s sub-commands, to which a platform adds its own.
Subcommands = argparse._SubParsersAction  # argparse names no public type for it


@dataclass(frozen=True, slots=True)
class DoctorContext:
    """What a platform's doctor checks get: the doctor's HTTP client (its timeouts bound every
    call), the validated settings, the routes as the service resolves them, the environment."""

    client: httpx.AsyncClient
    settings: Settings
    routes: list[Route]
    env: Mapping[str, str]


class PlatformAdmin(Protocol):
    """A platform's part in the admin CLI: ``dify-bridge manifest <name>`` and its doctor lines."""

    def add_manifest_command(self, platforms: Subcommands[Any]) -> None:
        """Add the ``<name>`` parser under ``dify-bridge manifest``; it sets ``func`` (the
        parsed arguments -> exit code, or a coroutine of it)."""

    async def doctor(self, ctx: DoctorContext) -> list[Check]:
        """This platform's checks, in a stable order; never raises, never prints a secret."""


@dataclass(frozen=True)
class Platform:
    """One platform: its name, the factory of its adapter (None when not configured) and,
    optionally, its settings sub-model, its admin hooks and the title its docs section shows."""

    name: str
    create: Callable[[AdapterContext], Adapter | None]
    settings: type[PlatformSettings] | None = None
    admin: PlatformAdmin | None = None
    title: str = ""
    # Adds ``dify-bridge`` subcommands of the platform's own (the console's ``chat``); each sets
    # ``func`` as the manifest commands do.
    commands: Callable[[Subcommands[Any]], None] | None = None

    @property
    def display_name(self) -> str:
        return self.title or self.name.capitalize()


def discover() -> list[Platform]:
    """Every installed platform, by entry point name; one that cannot be loaded is logged and
    left out (the others still work)."""
    found: list[Platform] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            platform = ep.load()
        except Exception as e:  # a broken plugin must not take the others down
            log.error("adapter.import_failed", adapter=ep.name, error=repr(e))
            continue
        if not isinstance(platform, Platform):
            log.error(
                "adapter.not_a_platform",
                adapter=ep.name,
                entry_point=ep.value,
                hint="the entry point must name an app.seams.plugin.Platform",
            )
            continue
        found.append(platform)
    return found
