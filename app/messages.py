"""What the pipeline tells people: every user-facing sentence of an answer's life, in one place."""

from __future__ import annotations

EXPIRED_NOTICE = "The earlier context of this thread had expired, so I started a new conversation."
STOPPED_NOTICE = "Stopped. This is what had arrived so far."
PARTIAL_NOTICE = (
    "⚠️ The connection to the assistant broke off before this answer was finished, so it may "
    "be incomplete. Ask again for the whole answer."
)
BUSY_THREAD = (
    "An earlier question in this thread is still being answered. Please try again in a minute."
)
STORAGE_DOWN = (
    "The assistant is having a temporary problem (its storage is not reachable). "
    "Please try again in a minute."
)
INTERNAL = "Something went wrong on our side. Please try again."
RESET_DONE = "Okay, starting a new conversation in this thread. Ask away!"
