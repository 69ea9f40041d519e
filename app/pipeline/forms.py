"""Dify Human Input forms as the platform-neutral model adapters render, and what a click became.

A chatflow or workflow run pauses on a Human Input node with a form: Markdown content, input
fields and one button per action (``human_input_required``, shared/docs/dify-human-input.md).
:func:`form_from_event` turns that event into a :class:`HumanForm`; adapters draw it
(``Reply.ask``) and turn a click into a :class:`FormAnswer`; the core answers with a
:class:`FormResult` that says in plain words what happened. Nothing here names a platform.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app import texts
from app.dify.events import HumanInputRequired

# What a chat field can hold: Dify's field types a button click can answer without a file.
TEXT_KINDS = frozenset({"paragraph", "text_input"})
MAX_FIELDS = 20
MAX_ACTIONS = 10
MAX_OPTIONS = 100
# Dify writes the form's own fields into its Markdown as {{#$output.name#}}.
_FIELD_REF = re.compile(r"\{\{#\$output\.([A-Za-z0-9_]+)#\}\}")

EMAIL_ONLY = texts.FORM_EMAIL_ONLY


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of a form. ``kind`` is Dify's type; ``options`` only for ``select``."""

    name: str
    kind: str
    default: str = ""
    options: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The variable name as a person would write it (``review_note`` -> "Review note")."""
        words = self.name.replace("_", " ").strip()
        return (words[:1].upper() + words[1:]) or self.name

    @property
    def supported(self) -> bool:
        """Whether a chat can fill it in (files cannot be given from a button click)."""
        return self.kind in TEXT_KINDS or (self.kind == "select" and bool(self.options))

    @property
    def multiline(self) -> bool:
        return self.kind == "paragraph"


@dataclass(frozen=True, slots=True)
class FormAction:
    """One button. ``style`` is Dify's ``button_style`` (primary, default, accent, ghost)."""

    id: str
    title: str
    style: str = "default"


@dataclass(frozen=True, slots=True)
class HumanForm:
    """A paused form as shown in a thread. ``key`` is the bridge's id for it (button values
    carry it); ``form_id`` is Dify's. ``blocked`` says in plain words why it cannot be answered
    here (e-mail only, a file field); such a form is shown without inputs and buttons."""

    key: str
    form_id: str
    title: str
    content: str
    fields: tuple[FormField, ...] = ()
    actions: tuple[FormAction, ...] = ()
    expires_at: int | None = None
    blocked: str = ""

    @property
    def answerable(self) -> bool:
        return not self.blocked and bool(self.actions)

    def action(self, action_id: str) -> FormAction | None:
        return next((a for a in self.actions if a.id == action_id), None)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "form_id": self.form_id,
            "title": self.title,
            "content": self.content,
            "expires_at": self.expires_at,
            "blocked": self.blocked,
            "fields": [[f.name, f.kind, f.default, list(f.options)] for f in self.fields],
            "actions": [[a.id, a.title, a.style] for a in self.actions],
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> HumanForm:
        return HumanForm(
            key=str(d["key"]),
            form_id=str(d.get("form_id", "")),
            title=str(d.get("title", "")),
            content=str(d.get("content", "")),
            fields=tuple(
                FormField(str(n), str(k), str(df), tuple(str(o) for o in opts))
                for n, k, df, opts in d.get("fields", [])
            ),
            actions=tuple(FormAction(str(i), str(t), str(s)) for i, t, s in d.get("actions", [])),
            expires_at=d.get("expires_at") if isinstance(d.get("expires_at"), int) else None,
            blocked=str(d.get("blocked", "")),
        )


@dataclass(frozen=True, slots=True)
class Responder:
    """Who clicked. ``groups``: the platform groups the adapter knows them to be in."""

    id: str
    name: str = ""
    email: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        return self.name or self.id


@dataclass(frozen=True, slots=True)
class FormAnswer:
    """A click on one of a form's buttons, with the values of its fields as typed."""

    key: str
    action_id: str
    values: dict[str, str]
    by: Responder


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # sent to Dify; the rest of the answer streams into the thread
    ALREADY_DECIDED = "already_decided"  # someone clicked first (here)
    DECIDED_ELSEWHERE = "decided_elsewhere"  # answered outside the thread (Dify's own UI, ...)
    EXPIRED = "expired"
    NOT_ALLOWED = "not_allowed"  # the route lets only some people answer
    INVALID = "invalid"  # a field's value was refused; the form stays open
    UNKNOWN = "unknown"  # no such pending form (too old, or a tampered button)
    UNAVAILABLE = "unavailable"  # Dify or Redis could not be reached; the form stays open


# Outcomes after which the form can no longer be answered: the form message says so.
CLOSED = frozenset(
    {Outcome.ACCEPTED, Outcome.ALREADY_DECIDED, Outcome.DECIDED_ELSEWHERE, Outcome.EXPIRED}
)


@dataclass(frozen=True, slots=True)
class FormResult:
    """What a click became. ``message`` is for the thread (closed outcomes) or for the person
    who clicked (the others); ``form`` is the form as stored (None for UNKNOWN)."""

    outcome: Outcome
    message: str
    form: HumanForm | None = None
    decided_by: str = ""
    action_title: str = ""
    values: dict[str, str] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        return self.outcome in CLOSED


def new_key() -> str:
    return secrets.token_urlsafe(12)


def _s(v: Any) -> str:
    return v if isinstance(v, str) else ""


def form_from_event(ev: HumanInputRequired, key: str | None = None) -> HumanForm:
    """The form of a ``human_input_required`` event; malformed parts are dropped, never fatal."""
    data = ev.data
    defaults = data.get("resolved_default_values")
    defaults = defaults if isinstance(defaults, dict) else {}
    fields: list[FormField] = []
    unsupported: list[str] = []
    raw_inputs = data.get("inputs")
    for raw in (raw_inputs if isinstance(raw_inputs, list) else [])[:MAX_FIELDS]:
        if not isinstance(raw, dict):
            continue
        name = _s(raw.get("output_variable_name"))
        if not name:
            continue
        kind = _s(raw.get("type")) or "paragraph"
        options: tuple[str, ...] = ()
        if kind == "select":
            src = raw.get("option_source")
            values = src.get("value") if isinstance(src, dict) else None
            options = (
                tuple(str(o) for o in values if isinstance(o, str | int | float))[:MAX_OPTIONS]
                if isinstance(values, list)
                else ()
            )
        f = FormField(name, kind, _s(defaults.get(name)), options)
        fields.append(f)
        if not f.supported:
            unsupported.append(f.label)
    actions = []
    raw_actions = data.get("actions")
    for raw in (raw_actions if isinstance(raw_actions, list) else [])[:MAX_ACTIONS]:
        if isinstance(raw, dict) and _s(raw.get("id")):
            aid = _s(raw.get("id"))
            actions.append(
                FormAction(
                    aid, _s(raw.get("title")) or aid, _s(raw.get("button_style")) or "default"
                )
            )
    blocked = ""
    if not ev.form_token:
        blocked = EMAIL_ONLY
    elif unsupported:
        blocked = texts.FORM_ASKS_FILE.format(kinds=", ".join(unsupported))
    elif not actions:
        blocked = texts.FORM_NO_BUTTONS
    expires = data.get("expiration_time")
    content = _FIELD_REF.sub(lambda m: f"‹{m.group(1)}›", _s(data.get("form_content")))
    return HumanForm(
        key=key or new_key(),
        form_id=ev.form_id,
        title=_s(data.get("node_title")) or texts.FORM_TITLE,
        content=content.strip(),
        fields=tuple(fields),
        actions=tuple(actions),
        expires_at=expires if isinstance(expires, int) and not isinstance(expires, bool) else None,
        blocked=blocked,
    )


def check_values(form: HumanForm, values: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The ``inputs`` to submit (every field present, as Dify requires), or a plain-words
    reason naming the field that is wrong."""
    out: dict[str, Any] = {}
    for f in form.fields:
        # A field the platform did not send at all keeps Dify's default; one sent empty is "".
        v = values.get(f.name, f.default)
        v = v.strip() if isinstance(v, str) else ""
        if f.kind == "select":
            if not v:
                return {}, texts.FORM_CHOOSE.format(label=f.label)
            if v not in f.options:
                # A platform may cut long option values (to 150 characters, say).
                cut = [o for o in f.options if o.startswith(v)] if len(v) >= 100 else []
                if len(cut) != 1:
                    return {}, texts.FORM_NOT_A_CHOICE.format(value=v, label=f.label)
                v = cut[0]
        out[f.name] = v
    return out, ""


def describe_choice(form: HumanForm, by: str, action_title: str, values: dict[str, Any]) -> str:
    """ "Ann chose “Approve” (Comment: looks good)": the line the decided form shows."""
    line = texts.FORM_CHOSE.format(by=by or texts.SOMEONE, action=action_title)
    labels = {f.name: f.label for f in form.fields}
    shown = [(k, str(v)) for k, v in values.items() if v]
    if shown:
        line += " (" + "; ".join(f"{labels.get(k, k)}: {v[:200]}" for k, v in shown) + ")"
    return line + "."


__all__ = [
    "CLOSED",
    "EMAIL_ONLY",
    "FormAction",
    "FormAnswer",
    "FormField",
    "FormResult",
    "HumanForm",
    "Outcome",
    "Responder",
    "check_values",
    "describe_choice",
    "form_from_event",
    "new_key",
]
