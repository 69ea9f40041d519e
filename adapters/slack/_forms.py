"""Dify Human Input forms in Slack: the form as a message with Block Kit input blocks and one
button per action, the values read back from a click's ``state``, and the message after the
decision (who chose what).

Input blocks in a message send nothing by themselves; a click on one of the form's buttons
carries every input's current value in ``state.values`` (keyed by block id, then action id).
Limits kept: labels 2,000 characters, ``initial_value`` 3,000, 100 options per select with
text <= 75 and value <= 150, button text 75, button value 2,000.
"""

from __future__ import annotations

from typing import Any

from adapters.slack import _blocks as B
from app.pipeline.forms import FormResult, HumanForm, Outcome

ACTION_FORM = "dify_form"  # + "_<n>": action ids must be unique within a message
FIELD_BLOCK = "dify_field:"  # + the field's variable name
FIELD_ACTION = "value"
ACTIONS_BLOCK = "dify_form_actions"
_OPTION_TEXT = 75
_OPTION_VALUE = 150
_STYLES = {"primary": "primary"}  # Slack has primary and danger only; Dify's others are plain


def fallback(form: HumanForm) -> str:
    return B.fallback_text(f"{form.title}: {form.content}" if form.content else form.title)


def form_blocks(form: HumanForm, notices: list[str] | None = None) -> list[B.Block]:
    blocks: list[B.Block] = [_context(f"*{_esc(form.title)}*")]
    if form.content:
        blocks.append({"type": "markdown", "text": form.content[: B.PART_LIMIT]})
    for n in notices or []:
        blocks.append(_context(f"_{_esc(n)}_"))
    if not form.answerable:
        blocks.append(_context(f":envelope: {_esc(form.blocked)}"))
        return blocks
    for f in form.fields:
        element: dict[str, Any]
        if f.kind == "select":
            options = [_option(o) for o in f.options]
            element = {
                "type": "static_select",
                "action_id": FIELD_ACTION,
                "options": options,
                "placeholder": {"type": "plain_text", "text": "Choose…"},
            }
            initial = next((o for o in options if o["value"] == f.default[:_OPTION_VALUE]), None)
            if f.default and initial is not None:
                element["initial_option"] = initial
        else:
            element = {
                "type": "plain_text_input",
                "action_id": FIELD_ACTION,
                "multiline": f.multiline,
            }
            if f.default:
                element["initial_value"] = f.default[:3000]
        blocks.append(
            {
                "type": "input",
                "block_id": f"{FIELD_BLOCK}{f.name}"[:255],
                "label": {"type": "plain_text", "text": f.label[:2000]},
                "element": element,
                "optional": f.kind != "select",
            }
        )
    buttons = []
    for i, a in enumerate(form.actions):
        buttons.append(
            B._button(
                a.title,
                f"{ACTION_FORM}_{i}",
                {"f": form.key, "a": a.id},
                style=_STYLES.get(a.style),
            )
        )
    blocks.append({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons})
    if form.expires_at:
        when = f"<!date^{form.expires_at}^{{date_short_pretty}} at {{time}}|before it expires>"
        blocks.append(_context(f"Answer {when}."))
    return blocks


def state_values(body: dict[str, Any]) -> dict[str, str]:
    """The form's field values from a click's ``state.values`` (untrusted: checked shapes)."""
    out: dict[str, str] = {}
    state = body.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict):
        return out
    for block_id, actions in values.items():
        if not (isinstance(block_id, str) and block_id.startswith(FIELD_BLOCK)):
            continue
        v = actions.get(FIELD_ACTION) if isinstance(actions, dict) else None
        if not isinstance(v, dict):
            continue
        name = block_id[len(FIELD_BLOCK) :]
        if isinstance(v.get("value"), str):
            out[name] = v["value"]
        opt = v.get("selected_option")
        if isinstance(opt, dict) and isinstance(opt.get("value"), str):
            out[name] = opt["value"]
    return out


def parse_click(value: Any) -> tuple[str, str] | None:
    v = B.parse_value(value)
    f, a = v.get("f"), v.get("a")
    return (f, a) if isinstance(f, str) and isinstance(a, str) and f and a else None


def closed_blocks(blocks: list[B.Block], result: FormResult) -> list[B.Block]:
    """The form message once it cannot be answered any more: content kept, inputs and buttons
    replaced by what happened (who chose what, or why it closed)."""
    kept = [
        b
        for b in blocks
        if b.get("type") != "input" and b.get("block_id") != ACTIONS_BLOCK and not _is_deadline(b)
    ]
    icon = {
        Outcome.ACCEPTED: ":white_check_mark:",
        Outcome.ALREADY_DECIDED: ":white_check_mark:",
        Outcome.EXPIRED: ":hourglass:",
    }.get(result.outcome, ":information_source:")
    line = result.message
    if result.outcome is Outcome.ALREADY_DECIDED and result.decided_by:
        line = f"Decided by {result.decided_by}" + (
            f": “{result.action_title}”." if result.action_title else "."
        )
    kept.append(_context(f"{icon} {line}"))
    return kept


def _is_deadline(b: B.Block) -> bool:
    if b.get("type") != "context":
        return False
    els = b.get("elements") or []
    return bool(els) and str(els[0].get("text", "")).startswith("Answer <!date^")


def _option(text: str) -> dict[str, Any]:
    return {
        "text": {"type": "plain_text", "text": text[:_OPTION_TEXT] or " "},
        "value": text[:_OPTION_VALUE] or " ",
    }


def _context(text: str) -> B.Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _esc(text: str) -> str:
    """Plain text for mrkdwn: no mentions or links from Dify's side."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
