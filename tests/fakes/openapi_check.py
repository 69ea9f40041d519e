"""Check a request against Dify's own OpenAPI (``shared/specs/openapi_service.json``).

The referee for what our Dify client sends: required body fields and their JSON types, required
query parameters, path parameters of ``format: uuid``. Only what the spec states is checked
(nested ``properties`` one level deep, ``type``, ``required``, ``enum``).
"""

from __future__ import annotations

import json
import os
import uuid
from functools import cache
from pathlib import Path
from typing import Any

_SPEC = Path(
    os.environ.get("DIFY_OPENAPI_SPEC", "/work/shared/specs/openapi_service.json")
)
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


@cache
def _spec() -> dict[str, Any] | None:
    try:
        data = json.loads(_SPEC.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def available() -> bool:
    return _spec() is not None


def _operation(method: str, template: str) -> dict[str, Any] | None:
    spec = _spec()
    if spec is None:
        return None
    op = spec.get("paths", {}).get(template, {}).get(method.lower())
    return op if isinstance(op, dict) else None


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    want = schema.get("type")
    if value is None:
        return bool(schema.get("nullable"))
    if want == "integer" and isinstance(value, bool):
        return False
    return want not in _TYPES or isinstance(value, _TYPES[want])


def check(
    method: str, template: str, *, path: dict[str, str], query: dict[str, str], body: Any
) -> list[str]:
    """Problems of one request (empty when it matches the spec, or the spec is absent)."""
    op = _operation(method, template)
    if op is None:
        return []
    problems: list[str] = []
    for p in op.get("parameters", []):
        if not isinstance(p, dict):
            continue
        name, where = p.get("name"), p.get("in")
        schema = p.get("schema") if isinstance(p.get("schema"), dict) else {}
        if where == "query" and p.get("required") and name not in query:
            problems.append(f"query parameter {name!r} is required")
        if where == "query" and name in query and schema.get("type") == "boolean" and \
                query[name] not in ("true", "false"):
            problems.append(f"query parameter {name!r} must be true or false")
        if where == "path" and schema.get("format") == "uuid":
            try:
                uuid.UUID(path.get(str(name), ""))
            except ValueError:
                problems.append(f"path parameter {name!r} must be a UUID")
    rb = op.get("requestBody")
    if isinstance(rb, dict):
        schema = rb.get("content", {}).get("application/json", {}).get("schema", {})
        if rb.get("required") and body is None:
            problems.append("a JSON body is required")
        elif isinstance(schema, dict) and body is not None:
            if not _type_ok(body, schema):
                problems.append(f"body must be {schema.get('type')}")
            elif isinstance(body, dict):
                for name in schema.get("required", []):
                    if name not in body:
                        problems.append(f"body field {name!r} is required")
                for name, sub in (schema.get("properties") or {}).items():
                    if name in body and isinstance(sub, dict):
                        if not _type_ok(body[name], sub):
                            problems.append(f"body field {name!r} must be {sub.get('type')}")
                        elif "enum" in sub and body[name] not in sub["enum"]:
                            problems.append(f"body field {name!r} must be one of {sub['enum']}")
    return problems
