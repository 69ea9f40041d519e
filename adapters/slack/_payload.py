"""Reading Slack's request payloads: nested fields checked, not trusted, and a replay digest."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def text_at(d: Any, *path: str) -> str:
    """The string under ``path`` in nested dicts, or ``""`` (payloads are checked, not trusted)."""
    cur = d
    for p in path:
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    return cur if isinstance(cur, str) else ""


def digest(body: dict[str, Any]) -> str:
    """Names one request's payload, so a replay of it is recognized."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
