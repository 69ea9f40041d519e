"""Who may answer a Human Input form from the thread (``human_input.answer_by`` and
``allowed`` of the route), and a form shown as not answerable here."""

from __future__ import annotations

from typing import Protocol

import structlog

from app import texts
from app.config.settings import Route
from app.pipeline.forms import HumanForm, Responder
from app.state.form_store import PendingForm

log = structlog.get_logger("app.pipeline.human_loop")


class GroupDirectory(Protocol):
    """Group membership for ``human_input.allowed`` entries that name a group (adapters)."""

    async def member_of(self, group: str, user_id: str) -> bool: ...


async def may_answer(
    route: Route, p: PendingForm, by: Responder, groups: GroupDirectory | None
) -> str:
    """ "" when ``by`` may answer, else why not (plain words)."""
    cfg = route.config.human_input
    if cfg.answer_by == "anyone":
        return ""
    if cfg.answer_by == "asker" and by.id == p.asker:
        return ""
    names = {by.id, *(by.groups)}
    if by.email:
        names.add(by.email.lower())
    for entry in cfg.allowed:
        if entry in names or entry.lower() in names:
            return ""
    if groups is not None:
        for entry in cfg.allowed:
            try:
                if await groups.member_of(entry, by.id):
                    return ""
            except Exception as e:  # a directory lookup failing refuses, it never lets in
                log.warning("forms.group_lookup_failed", error=type(e).__name__)
    return texts.FORM_ASKER_ONLY if cfg.answer_by == "asker" else texts.FORM_NOT_LISTED


def blocked(form: HumanForm, why: str) -> HumanForm:
    from dataclasses import replace

    return replace(form, blocked=why)


__all__ = ["GroupDirectory", "blocked", "may_answer"]
