"""Generate the settings reference and .env.example from the settings models, so neither drifts.

``python -m app.admin.settings_doc markdown`` / ``python -m app.admin.settings_doc env`` print them;
``python -m app.admin.settings_doc docs`` rewrites the table in the configuration reference page.
A test checks that the page and .env.example hold exactly what this prints. The core's variables
come first, then one section per installed platform (its ``Platform.settings`` sub-model).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.config.settings import Settings
from app.seams.plugin import discover

_REQUIRED = {"dify_api_key"}


def _default(field: FieldInfo) -> str:
    d: Any = field.default
    if d is None:
        return ""
    if hasattr(d, "value"):
        d = d.value
    return str(d)


def _sections() -> list[tuple[str, type[BaseModel]]]:
    """(title, model): the core's settings, then each platform's that has some."""
    out: list[tuple[str, type[BaseModel]]] = [("Core", Settings)]
    out += [(p.display_name, p.settings) for p in discover() if p.settings is not None]
    return out


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        default = _default(field)
        shown = f"`{default}`" if default else ("**required**" if name in _REQUIRED else "unset")
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | {shown} | {desc} |")
    return rows


def markdown() -> str:
    """The core's table, then a ``#### <Platform>`` heading and table per platform."""
    out: list[str] = []
    for title, model in _sections():
        if out:
            out += ["", f"#### {title}", ""]
        out += _table(model)
    return "\n".join(out) + "\n"


def env_example() -> str:
    out = [
        "# dify-bridge environment. Copy to .env: every dify-bridge command run in this",
        "# directory reads it (variables set in the environment win). Generated from",
        "# the settings models by `python -m app.admin.settings_doc env`: edit them,",
        "# not this list.",
    ]
    for title, model in _sections():
        out += ["", f"# --- {title}"]
        for name, field in model.model_fields.items():
            out.append(f"# {field.description or ''}")
            line = f"{name.upper()}={_default(field)}"
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
