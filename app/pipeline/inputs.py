"""Dify ``inputs`` for one message: built from the route's mapping, checked against the app's form.

A bad value is caught here with a sentence for the thread, instead of a Dify 400 after the
placeholder went up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app import texts
from app.config.settings import AppMode, Route
from app.dify.appcheck import AppParams
from app.pipeline.model import IncomingMessage


def build_inputs(route: Route, msg: IncomingMessage) -> dict[str, Any]:
    """The route's ``inputs`` mapping filled from the message (email only if mapped)."""
    limit = route.config.history_limit
    sources: Mapping[str, str] = {
        "speaker_id": msg.speaker.id,
        "speaker_name": msg.speaker.name,
        "speaker_email": msg.speaker.email or "",
        "channel_id": msg.key.channel,
        "channel_name": msg.channel_name or "",
        "workspace": msg.key.workspace,
        "platform": msg.key.platform,
        "permalink": msg.permalink or "",
        "history": "\n".join(msg.history[-limit:]) if limit else "",
        "viewing": msg.viewing,
    }
    return {var: sources[src] for var, src in route.config.inputs.items()}


def not_content(route: Route) -> set[str]:
    """Inputs the admin mapped on purpose that are not user-written content (not redacted)."""
    return {k for k, src in route.config.inputs.items() if src in ("speaker_email", "platform")}


def is_reset(text: str, route: Route) -> bool:
    """True when the message is one of the route's reset words ("reset", "new topic")."""
    norm = text.strip().strip(".!").lower()
    return bool(norm) and norm in {w.lower() for w in route.config.reset_words}


def too_long(chars: int, limit: int) -> str:
    """The refusal for a question over ``MAX_MESSAGE_CHARS``."""
    return texts.TOO_LONG.format(chars=chars, limit=limit)


def check_inputs(route: Route, inputs: dict[str, Any], query: str, params: AppParams) -> str | None:
    """Fit ``inputs`` to the app's form; return a message for the user if they cannot fit.

    ``history`` values longer than the field allows are cut to their newest part (context,
    not a value anyone typed); every other problem is reported. For workflow and completion
    apps the message text itself is the ``query_variable`` input and gets the same checks.
    """
    values: dict[str, Any] = dict(inputs)
    takes_query = route.config.dify.mode in (AppMode.WORKFLOW, AppMode.COMPLETION)
    if takes_query:
        values.setdefault(route.config.dify.query_variable, query)
    for f in params.form:
        value = values.get(f.variable)
        is_query = takes_query and f.variable == route.config.dify.query_variable
        if f.required and (value is None or value == ""):
            if is_query:
                return texts.NEEDS_QUESTION
            return texts.INPUT_MISSING.format(label=f.label)
        if not isinstance(value, str) or value == "":
            continue
        if f.max_length and len(value) > f.max_length:
            if route.config.inputs.get(f.variable) == "history":
                inputs[f.variable] = value[-f.max_length :]
                continue
            if is_query:
                return texts.QUESTION_TOO_LONG_FOR_APP.format(chars=len(value), limit=f.max_length)
            return texts.INPUT_TOO_LONG.format(label=f.label, chars=len(value), limit=f.max_length)
        if f.kind == "select" and f.options and value not in f.options:
            options = ", ".join(f.options)
            if is_query:
                return texts.QUESTION_NOT_AN_OPTION.format(options=options)
            return texts.INPUT_NOT_AN_OPTION.format(label=f.label, options=options)
    return None


__all__ = ["build_inputs", "check_inputs", "is_reset", "not_content", "too_long"]
