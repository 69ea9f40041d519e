"""Recognizers: find candidate spans cheaply, then validate only the candidates.

All functions work on the *folded* text (see :mod:`._normalize`), whose offsets equal the
original's, and yield ``(type, start, end, priority)`` (:data:`._scan.Raw`). Everything is
compiled at import time. Python's ``re`` has no fast multi-pattern scan, so each recognizer
starts from something cheap to find (``str.find`` of a marker, an ``@``, the first digit).
"""

from app.redact._addresses import emails, ibans, ipv6_addresses
from app.redact._nino import ninos
from app.redact._numbers import numbers
from app.redact._scan import Raw
from app.redact._secrets import secrets, url_credentials

__all__ = [
    "Raw",
    "emails",
    "ibans",
    "ipv6_addresses",
    "ninos",
    "numbers",
    "secrets",
    "url_credentials",
]
