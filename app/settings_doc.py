"""Generate the settings table (docs site) and .env.example from the settings model: no drift.

``python -m app.settings_doc markdown`` / ``python -m app.settings_doc env`` print them;
``python -m app.settings_doc docs`` rewrites the table in the configuration reference page. A test
checks that the page and .env.example hold exactly what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
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


REFERENCE_PAGE = Path("docs/reference/configuration.md")
_START, _END = "<!-- settings-table:start", "<!-- settings-table:end -->"


def write_reference(page: Path = REFERENCE_PAGE) -> None:
    """Replace the table between the page's settings-table markers with :func:`markdown`."""
    text = page.read_text(encoding="utf-8")
    start = text.index("-->", text.index(_START)) + len("-->\n")
    end = text.index(_END)
    page.write_text(text[:start] + markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "markdown"
    if which == "docs":
        write_reference()
    else:
        sys.stdout.write(env_example() if which == "env" else markdown())
