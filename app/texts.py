"""Every text the bridge shows to people in a chat thread, in one place.

Plain words for the person in the chat: no codes, no Dify internals, no stack traces. Adapters may
add platform wording of their own (a short button label, say); what the core says comes
from here. Texts with blanks are format strings (``X.format(...)``) or small functions.

A leaf module: it imports nothing from the project, so anything may import it.
"""

from __future__ import annotations

# ------------------------------------------------------------------ answers and the thread

# The thread's Dify conversation had expired (Redis TTL or Dify lost it).
THREAD_EXPIRED = "The earlier context of this thread had expired, so I started a new conversation."
STOPPED = "Stopped. This is what had arrived so far."
PARTIAL = (
    "⚠️ The connection to the assistant broke off before this answer was finished, so it may "
    "be incomplete. Ask again for the whole answer."
)
EMPTY_ANSWER = "(The assistant returned an empty answer.)"
RESET_DONE = "Okay, starting a new conversation in this thread. Ask away!"
# Shown under a chat answer when Dify named the conversation.
CONVERSATION_NAMED = "Dify conversation: “{name}”"
# A replica restarted under a running answer (app/state/inflight.py).
INTERRUPTED = "⚠️ This answer was interrupted because the assistant restarted. Please ask again."
RESTARTING = "The assistant is restarting. Please ask again in a few seconds."


def cut_notice(many: str, *, attached: bool) -> str:
    """The note under an answer cut to fit the thread; ``many``: "3 messages"."""
    if attached:
        return (
            f"This answer is longer than {many}, so it stops here in the thread; the whole "
            "answer is attached as a file."
        )
    return (
        f"This answer was longer than {many}, so it was cut here. Ask for a shorter answer, "
        "or for the part you need."
    )


# ------------------------------------------------------------------ failures on our side

BUSY_THREAD = (
    "An earlier question in this thread is still being answered. Please try again in a minute."
)
STORAGE_DOWN = (
    "The assistant is having a temporary problem (its storage is not reachable). "
    "Please try again in a minute."
)
INTERNAL = "Something went wrong on our side. Please try again."
NO_ROUTE = "No Dify app is configured for this channel. Ask your admin to add a route."
NO_ROUTE_ANY_MORE = "No Dify app is configured for this channel any more."

# ------------------------------------------------------------------ status lines while answering

THINKING = "Thinking…"
# Node types whose start is worth a status line ({title}: the node's title); others stay silent.
NODE_STATUS = {
    "knowledge-retrieval": "Searching the knowledge base…",
    "llm": THINKING,
    "http-request": "Calling {title}…",
    "tool": "Using tool: {title}",
    "code": "Running {title}…",
    "agent": "Working on it: {title}…",
    "question-classifier": "Understanding the question…",
    "human-input": "Waiting for an answer to {title}…",
}
USING_TOOL = "Using tool: {tool}"
# A step on the task card of an agent's tool call ({tools}: the tools, comma-separated).
USING_TOOLS_STEP = "Using {tools}"
WORKING_ON = "Working on it: {label}"

# ------------------------------------------------------------------ limits and quotas

QUOTA_USED = (
    "This workspace has used its monthly assistant quota for this channel; it resets on "
    "{day} {month}."
)
USER_TOO_FAST = "You're asking faster than I can answer: please wait about {when}."
WORKSPACE_TOO_FAST = (
    "This workspace is asking the assistant more questions than it can take right now: "
    "please try again in about {when}."
)

# ------------------------------------------------------------ Dify errors (app/dify/errors.py)

_ADMIN = "Please tell an administrator."
DIFY_BUSY = "The assistant is busy, try again in a minute."
DIFY_UNAVAILABLE = "The assistant is not available right now. Please try again in a few minutes."
DIFY_REFUSED = "The assistant could not answer this request. Please try again later."
DIFY_CONVERSATION_GONE = "The earlier conversation is no longer available; starting a new one."
DIFY_AUTH = f"The assistant is not set up correctly (access was refused). {_ADMIN}"
DIFY_MODEL_UNAVAILABLE = (
    f"The assistant's AI model is not available (not set up or out of quota). {_ADMIN}"
)
DIFY_WRONG_APP_KIND = f"The assistant app is not configured for this kind of request. {_ADMIN}"
DIFY_MODEL_FAILED = "The AI model failed to answer. Please try again in a moment."
DIFY_INVALID_INPUT = (
    "The assistant could not accept this question "
    f"(a required input is missing or invalid). {_ADMIN}"
)
DIFY_FILE_TOO_LARGE = "That file is too large for the assistant."
DIFY_FILE_TYPE = "The assistant does not accept that type of file."
DIFY_QUOTA = "The assistant has reached its usage limit for now. Please try again later."
DIFY_SERVER = "The assistant had a problem answering. Please try again in a moment."
DIFY_STREAM_ERROR = "The assistant ran into an error while answering. Please try again."
DIFY_UNREADABLE = "The assistant sent an answer that could not be read. Please try again."
DIFY_TIMEOUT = "The assistant took too long to answer. Please try again."
DIFY_NO_START = "The assistant did not start answering in time, so I stopped it. Please try again."
DIFY_TOO_LONG = "The answer took too long, so I stopped it here. Please try again."
DIFY_UNREACHABLE = "The assistant cannot be reached right now. Please try again in a few minutes."
DIFY_CUT_OFF = "The answer was cut off. Please try again."

# ------------------------------------------------------------------ Human Input forms

FORM_TITLE = "Approval needed"
FORM_EMAIL_ONLY = (
    "This step waits for an approval that Dify sends by e-mail: it cannot be answered here. "
    "The run continues once someone answers the e-mail (or the request expires)."
)
FORM_ASKS_FILE = (
    "This form asks for a file ({kinds}), which cannot be given from "
    "a chat: please answer it in Dify."
)
FORM_NO_BUTTONS = "This form has no buttons to answer it with: please answer it in Dify."
FORM_CHOOSE = "Please choose a value for “{label}”."
FORM_NOT_A_CHOICE = "“{value}” is not one of the choices for “{label}”."
FORM_TIMED_OUT = "The form “{title}” expired without an answer."
FORM_UNNAMED = "approval"  # {title} of a form without a node title
# The line a decided form shows: "Ann chose “Approve”", then the values given.
FORM_CHOSE = "{by} chose “{action}”"
SOMEONE = "Someone"
FORM_UNKNOWN = (
    "I no longer know this form (it may be too old, or it was changed). If the run still "
    "waits, please answer it in Dify."
)
FORM_ASKER_ONLY = "Only the person who asked the question can answer this form."
FORM_NOT_LISTED = "You are not one of the people this channel lets answer this form."
FORM_EXPIRED = "This form expired, so it can no longer be answered."
FORM_ELSEWHERE = (
    "This form was already answered elsewhere (for example in Dify), so your choice was not sent."
)
FORM_NOT_SAVED = (
    "This form could not be saved on our side (storage unavailable), so it cannot be answered "
    "here: please answer it in Dify."
)
FORM_RUN_BUSY = (
    "The form was answered, but an earlier answer in this thread is still running. "
    "The rest will not appear here; please check the result in Dify."
)
FORM_STORAGE_DOWN = (
    "The assistant's storage is not reachable right now. Please try again in a minute."
)
FORM_INTERNAL = "Something went wrong on our side while continuing after the form."
FORM_REFUSED = "Dify did not accept this answer: {detail}"
FORM_REFUSED_DETAIL = "the answer was refused"
FORM_RUN_NO_TEXT = "(The run continued without further answer text.)"


def already_decided(who: str, action_title: str) -> str:
    """A click on a form someone already answered."""
    what = f" (“{action_title}”)" if action_title else ""
    return f"Already decided by {who or 'someone'}{what}."
