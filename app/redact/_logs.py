"""A structlog processor that scrubs every value of an event dict: the last line of defence.

The code never logs message text; this catches what slips through anyway (an exception message
quoting user input, a URL with credentials, an id that is really a phone number).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from app.redact._redactor import Redactor, get_redactor
from app.redact._scan import first_digit

_MAX_DEPTH = 6
# Keys structlog itself fills in (TimeStamper, add_log_level, add_logger_name): never user text.
_STRUCTLOG_OWN = frozenset({"timestamp", "level", "logger"})
# Below this length no recognizer can match ("a@b.co" is the shortest email).
_MIN_LEN = 6


def _plain(s: str) -> bool:
    """Nothing any recognizer looks for can be in ``s`` (most log values: names, states)."""
    return (
        s.isascii()
        and first_digit(s) == -1
        and not any(c in s for c in "@:=")
        and "earer" not in s
        and "oken" not in s
        and "asic" not in s
        and "-----" not in s
    )


def _scrub(value: Any, r: Redactor, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) < _MIN_LEN or _plain(value) else r.redact(value)[0]
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if -10_000_000 < value < 10_000_000:
            return value
        text = str(value)
        scrubbed = r.redact(text)[0]
        return value if scrubbed == text else scrubbed
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {_scrub(k, r, depth + 1): _scrub(v, r, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, r, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub(v, r, depth + 1) for v in value)
    if isinstance(value, (set, frozenset)):
        return [_scrub(v, r, depth + 1) for v in value]
    return value


def scrub_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace sensitive values in ``event_dict`` (nested dicts, lists, tuples too) with markers.

    Put it after ``format_exc_info`` and before the renderer so formatted tracebacks are
    scrubbed as well. Containers are copied, never changed in place: the caller's objects stay
    as they were.
    """
    r = get_redactor()
    for key, value in list(event_dict.items()):
        if key in _STRUCTLOG_OWN:
            continue
        event_dict[key] = _scrub(value, r, 0)
    return event_dict
