"""Generate the settings table (README) and .env.example from the settings model, so neither drifts.

``python -m app.settings_doc markdown`` / ``python -m app.settings_doc env``; a test checks that
README.md and .env.example hold exactly what this prints.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic.fields import FieldInfo

from app.settings import Settings

_GROUPS = {"slack_": "Slack", "microsoft_": "Teams", "teams_": "Teams"}
_REQUIRED = {"dify_api_key"}


def _group(name: str) -> str:
    return next((g for p, g in _GROUPS.items() if name.startswith(p)), "Core")


def _default(field: FieldInfo) -> str:
    d: Any = field.default
    if d is None:
        return ""
    if hasattr(d, "value"):
        d = d.value
    return str(d)


def markdown() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(field)
        shown = f"`{default}`" if default else ("**required**" if name in _REQUIRED else "unset")
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | {shown} | {desc} |")
    return "\n".join(rows) + "\n"


def env_example() -> str:
    out = [
        "# dify-bridge environment. Copy to .env: every dify-bridge command run in this",
        "# directory reads it (variables set in the environment win). Generated from",
        "# app/settings.py by `python -m app.settings_doc env`: edit the model, not this list.",
    ]
    group = ""
    for name, field in Settings.model_fields.items():
        g = _group(name)
        if g != group:
            out += ["", f"# --- {g}"]
            group = g
        out.append(f"# {field.description or ''}")
        default = _default(field)
        line = f"{name.upper()}={default}"
        out.append(line if name in _REQUIRED else f"# {line}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "markdown"
    sys.stdout.write(env_example() if which == "env" else markdown())
