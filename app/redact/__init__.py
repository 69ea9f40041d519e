"""PII and secret redaction: everything sent to Dify passes through here, and every log line.

Public interface (the pipeline, logging and CLI use only these names):

- :data:`ENTITY_TYPES`, :class:`Finding`, :class:`Redactor`, :func:`get_redactor`: recognize
  and replace sensitive values (``[EMAIL]`` markers).
- :class:`RedactionService`, :class:`Prepared`, :class:`Restorer`: apply a route's mode
  (redact / pseudonymize / block / off) and restore ``<EMAIL_1>`` placeholders in answers.
- :func:`scrub_processor`: structlog processor.
- :func:`run_cli`: ``dify-bridge redact``.
- :func:`supported_phone_region`: validates a route's ``phone_regions``.
"""

from app.redact._cli import run_cli
from app.redact._logs import scrub_processor
from app.redact._phone_cues import supported_region as supported_phone_region
from app.redact._redactor import Redactor, get_redactor
from app.redact._restore import Restorer
from app.redact._service import Prepared, RedactionService
from app.redact._types import ENTITY_TYPES, Finding

__all__ = [
    "ENTITY_TYPES",
    "Finding",
    "Prepared",
    "RedactionService",
    "Redactor",
    "Restorer",
    "get_redactor",
    "run_cli",
    "scrub_processor",
    "supported_phone_region",
]
