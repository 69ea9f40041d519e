"""What the platforms' manifest tools share: a :class:`Problem` names the field (a JSON pointer,
as the platforms' own manifest errors do) and the fix; manifests are read from YAML or JSON and
dumped as YAML; icons are measured without an image library.

Each platform package renders, checks and publishes its own manifest or app package (its
``manifest`` module) and registers the ``dify-bridge manifest <platform>`` command.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from app.errors import ConfigError

PLACEHOLDER_HOSTS = ("example.com", "bridge.example.com")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest: where (JSON pointer), what, and how to fix it."""

    pointer: str
    message: str
    fix: str = ""
    severity: Literal["error", "warning"] = "error"

    def line(self, source: str) -> str:
        tag = "ERROR" if self.severity == "error" else "WARNING"
        tail = f" -> {self.fix}" if self.fix else ""
        return f"{tag} {source}: {self.pointer or '/'}: {self.message}{tail}"


def errors_in(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def load_manifest_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON manifest; unreadable or malformed files raise :class:`ConfigError`."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from e
    try:
        data = yaml.safe_load(raw)  # JSON is YAML too
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError(f"not valid YAML/JSON{where}: {problem}", file=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError("the manifest must be a mapping at the top level", file=str(path))
    return data


def child(
    parent: dict[str, Any], key: str, default: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``parent[key]``, created if absent; a non-mapping stays as it is (the check reports it)."""
    value = parent.setdefault(key, default if default is not None else {})
    return value if isinstance(value, dict) else {}


def dump_manifest_yaml(m: dict[str, Any]) -> str:
    return yaml.safe_dump(m, sort_keys=False, allow_unicode=True, width=100)


def get_in(m: Any, *path: str) -> Any:
    """The value at ``path`` in nested mappings, or None where the path breaks off."""
    for key in path:
        if not isinstance(m, dict):
            return None
        m = m.get(key)
    return m


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; ``ValueError`` if it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)
