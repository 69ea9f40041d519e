"""Every text the bridge shows to people in a chat thread, in one place.

Plain words for the person in the chat: no codes, no Dify internals, no stack traces. Adapters may
add platform wording of their own (a short button label, say); what the core says comes
from here. Texts with blanks are format strings (``X.format(...)``) or small functions.

A leaf module: it imports nothing from the project, so anything may import it.
"""

from __future__ import annotations

from collections.abc import Mapping

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
# A failure after part of the answer had arrived: what arrived, then why it stopped.
FAILED_AFTER_PARTIAL = "{partial}\n\n⚠️ {message}"


def cut_notice(max_messages: int, *, attached: bool) -> str:
    """The note under an answer cut to fit the thread (at most ``max_messages`` messages)."""
    many = f"{max_messages} message{'s' if max_messages != 1 else ''}"
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

# A question over MAX_MESSAGE_CHARS (typed, or a voice message's transcript).
TOO_LONG = "That message is too long ({chars} characters); the limit is {limit}. Please shorten it."

QUOTA_USED = (
    "This workspace has used its monthly assistant quota for this channel; it resets on "
    "{day} {month}."
)
USER_TOO_FAST = "You're asking faster than I can answer: please wait about {when}."
WORKSPACE_TOO_FAST = (
    "This workspace is asking the assistant more questions than it can take right now: "
    "please try again in about {when}."
)


def wait_time(seconds: int) -> str:
    """The {when} of the rate-limit texts: "20 seconds", "3 minutes"."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{-(-seconds // 60)} minutes"


# ------------------------------------------------ the app's input form (app/pipeline/inputs.py)

# Problems with what the route maps into the form are the admin's to fix.
_FIX_INPUTS = "Please tell your admin (the channel's route `inputs` need fixing)."
NEEDS_QUESTION = "Please write a question: this assistant needs some text to work on."
QUESTION_TOO_LONG_FOR_APP = (
    "That message is too long for this assistant ({chars} characters; "
    "it takes at most {limit}). Please shorten it."
)
QUESTION_NOT_AN_OPTION = "This assistant only understands these answers: {options}."
INPUT_MISSING = (
    "This assistant needs “{label}”, which this channel does not provide. " + _FIX_INPUTS
)
INPUT_TOO_LONG = (
    "“{label}” is too long for this assistant ({chars} characters; at most {limit}). " + _FIX_INPUTS
)
INPUT_NOT_AN_OPTION = (
    "“{label}” must be one of {options} for this assistant, "
    "and this channel sends something else. " + _FIX_INPUTS
)

# ------------------------------------------------ files sent along (app/pipeline/attachments.py)

FILES_NOT_ACCEPTED = (
    "This assistant does not accept files, so I did not send {names}. "
    "Please ask again without the attachment, or paste the relevant text."
)
TOO_MANY_FILES = (
    "This assistant takes at most {limit} file(s) per message; you sent {count}. Please send fewer."
)
FILE_KIND_REFUSED = "This assistant does not accept {kind} files like {name} (it takes: {kinds})."
FILE_TOO_LARGE = (
    "{name} is too large for this assistant ({size}; the limit for {kind} files is {limit})."
)
# Stand-ins for a file without a name: in a list of names, in "files like this", as a subject.
FILE_NAMELESS = "file"
FILE_NAMELESS_LIKE = "this"
FILE_NAMELESS_SUBJECT = "That file"
NO_FILE_KINDS = "none"  # {kinds} when the app takes only custom extensions
MEGABYTES = "{mb:.0f} MB"

# ------------------------------------------------------ voice messages (app/pipeline/voice.py)

VOICE_OFF = (
    "This assistant cannot listen to voice messages (speech-to-text is off for its Dify app). "
    "Please type your question."
)
VOICE_NO_DOWNLOAD = "I could not download the voice message. Please try again."
VOICE_EMPTY = "The voice message was empty. Please try again."
VOICE_NOT_TRANSCRIBED = "I could not transcribe the voice message: {reason}"
VOICE_UNREADABLE = "I could not read that voice message. Please try again."
VOICE_NO_WORDS = (
    "I could not make out any words in the voice message. Please try again or type your question."
)
# The notice under the answer quoting what was understood.
VOICE_QUOTE = '🎙️ "{words}"'

# ------------------------------------------------------------------ redaction (app/redact)

PRIVACY_MISCONFIGURED = (
    "This channel's privacy settings are misconfigured, so nothing was sent. "
    "Please tell your admin."
)
REDACTED = "I removed {what} before sending your message."
PSEUDONYMIZED = "I replaced {what} with placeholders before sending your message."
BLOCKED = (
    "I did not send your message because it contains {what}. "
    "Please remove it and send your message again."
)
SENSITIVE_DATA = "sensitive data"  # {what} of BLOCKED when no kind was counted
# (singular, plural) of each entity type as the asker reads them.
DATA_KINDS: dict[str, tuple[str, str]] = {
    "EMAIL": ("email address", "email addresses"),
    "PHONE": ("phone number", "phone numbers"),
    "CREDIT_CARD": ("payment card number", "payment card numbers"),
    "IBAN": ("IBAN", "IBANs"),
    "US_SSN": ("US Social Security number", "US Social Security numbers"),
    "JP_MY_NUMBER": ("My Number (個人番号)", "My Numbers (個人番号)"),
    "JP_CORPORATE_NUMBER": ("corporate number (法人番号)", "corporate numbers (法人番号)"),
    "CN_RESIDENT_ID": ("Chinese resident ID number", "Chinese resident ID numbers"),
    "TH_NATIONAL_ID": ("Thai national ID number", "Thai national ID numbers"),
    "UK_NINO": ("UK National Insurance number", "UK National Insurance numbers"),
    "IP_ADDRESS": ("IP address", "IP addresses"),
    "URL_CREDENTIALS": ("password in a link", "passwords in links"),
    "SECRET": ("secret (password, token or API key)", "secrets (passwords, tokens or API keys)"),
}


def data_found(found: Mapping[str, int]) -> str:
    """The {what} of the redaction texts: "1 email address and 2 phone numbers"; never values."""
    parts = []
    for entity_type, count in found.items():
        one, many = DATA_KINDS.get(entity_type, (entity_type, entity_type))
        parts.append(f"{count} {one if count == 1 else many}")
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


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
