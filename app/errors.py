"""Errors shared across the core and the adapters.

::

    BridgeError
    ├── ConfigError            bad settings or routing file; names file, key and problem
    ├── PlatformRateLimited    the platform said 429; carries Retry-After for the edit scheduler
    ├── PlatformError          any other failed platform call the reply handle could not absorb
    └── UserFacingError        carries the text to show the user (no route, blocked content, ...)

Dify's own errors live in :mod:`app.dify.errors`.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error raised by dify-bridge itself."""


class ConfigError(BridgeError):
    """A setting or config file is wrong. The message says where and how to fix it."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        parts = (f"file {file}" if file else "", f"key {key}" if key else "")
        where = ", ".join(p for p in parts if p)
        super().__init__(f"{where}: {message}" if where else message)


class PlatformRateLimited(BridgeError):
    """The platform answered 429 (or ``ratelimited``); wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float, *, method: str = "") -> None:
        self.retry_after = max(0.0, retry_after)
        self.method = method
        super().__init__(f"rate limited on {method or 'platform call'}; retry after {retry_after}s")


class PlatformError(BridgeError):
    """A platform call failed in a way the reply handle could not work around."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class UserFacingError(BridgeError):
    """An error whose message is written for the person in the chat."""

    def __init__(self, user_message: str, *, kind: str = "user") -> None:
        self.user_message = user_message
        self.kind = kind
        super().__init__(user_message)
