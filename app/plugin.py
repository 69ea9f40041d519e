"""What a platform package hands the core through the ``dify_bridge.adapters`` entry point.

A new platform is one package exposing a :class:`Platform` and one entry point naming it; the core
discovers it and never imports the package by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.context import AdapterContext
    from app.model import Adapter


@dataclass(frozen=True)
class Platform:
    """One platform: its name and the factory of its adapter (None when not configured)."""

    name: str
    create: Callable[[AdapterContext], Adapter | None]
