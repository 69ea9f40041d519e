"""The routing YAML's schema: which Dify app answers which platform/workspace/channel, and how.

The file (``BRIDGE_CONFIG``, default ``config/bridge.yaml``) holds routes: the match, the Dify app
(its key by environment variable or file name, never inline), redaction and the answer's options.
:func:`load_bridge_file` parses and validates it; every error names the file, the key path and
the fix. :mod:`app.config.settings` resolves the routes against the environment.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import ConfigError
from app.redact.config import RedactionConfig
from app.seams.plugin import discover


class AppMode(StrEnum):
    CHAT = "chat"
    ADVANCED_CHAT = "advanced-chat"
    AGENT_CHAT = "agent-chat"
    COMPLETION = "completion"
    WORKFLOW = "workflow"

    @property
    def is_chat(self) -> bool:
        return self in (AppMode.CHAT, AppMode.ADVANCED_CHAT, AppMode.AGENT_CHAT)


# Where a Dify input value can come from (route ``inputs:`` maps Dify variable -> source).
InputSource = Literal[
    "speaker_id",
    "speaker_name",
    "speaker_email",
    "channel_id",
    "channel_name",
    "workspace",
    "platform",
    "permalink",
    "history",
    # What the user is looking at, where the platform tells (an agent view), e.g. "channel:C0123".
    "viewing",
]

# Native streaming, where the platform has it: "dm" streams in direct messages (the agent view)
# and edits in channels; "always" streams everywhere; "off" edits.
NativeStreaming = Literal["dm", "always", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DifyAppConfig(_Strict):
    """One Dify app. The API key never lives in this file: name an env var or a file instead."""

    base_url: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    mode: AppMode = AppMode.CHAT
    # workflow apps: which input receives the message text, which output is the answer.
    query_variable: str = "query"
    output_variable: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("api_key" in data or "key" in data):
            raise ValueError(
                "API keys must not be written in the config file: set api_key_env (the name of "
                "an environment variable) or api_key_file (a path to a file holding the key)"
            )
        return data

    @model_validator(mode="after")
    def _one_key_source(self) -> DifyAppConfig:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set only one of api_key_env and api_key_file")
        return self

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/") if v else v


class RouteMatch(_Strict):
    """Which messages a route answers; an absent field matches everything."""

    # An installed platform's name (its entry point).
    platform: str | None = None
    workspace: str | None = None
    channel: str | None = None

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, v: str | None) -> str | None:
        if v is None:
            return v
        known = [p.name for p in discover()]
        if v not in known:
            raise ValueError(f"unknown platform {v!r}; installed: {', '.join(sorted(known))}")
        return v

    @property
    def specificity(self) -> int:
        return (
            (self.platform is not None)
            + 2 * (self.workspace is not None)
            + 4 * (self.channel is not None)
        )


class HumanInputConfig(_Strict):
    """Who may answer the Human Input forms (approvals) a route's Dify app shows in a thread."""

    # anyone in the thread; the person who asked (and anyone in ``allowed``); only ``allowed``.
    answer_by: Literal["anyone", "asker", "listed"] = "anyone"
    # Platform user ids, e-mail addresses, or user group ids where the platform has them,
    # matched exactly.
    allowed: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _listed_needs_names(self) -> HumanInputConfig:
        if self.answer_by == "listed" and not self.allowed:
            raise ValueError("answer_by: listed needs at least one entry in allowed")
        return self


class RouteConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    match: RouteMatch = RouteMatch()
    dify: DifyAppConfig = DifyAppConfig()
    redaction: RedactionConfig = RedactionConfig()
    inputs: dict[str, InputSource] = Field(default_factory=dict)
    fallback_text: str = (
        "The assistant is not available right now. Please try again in a few minutes."
    )
    edit_interval: Annotated[float, Field(ge=0.2, le=60)] = 1.5
    # Keep answering in a thread the bot is part of without a new mention.
    continue_in_thread: bool = True
    # Where answers use the platform's native streaming instead of edits (true = "always",
    # false = "off" are accepted too). A platform refusing it falls back to edits on its own.
    native_streaming: NativeStreaming = "dm"
    # Native streaming: Dify's steps as cards between the text ("timeline") or grouped in
    # one plan block ("plan").
    task_display: Literal["timeline", "plan"] = "timeline"
    # Words that start a fresh Dify conversation in the same thread.
    reset_words: tuple[str, ...] = ("reset", "new topic")
    # Earlier thread messages passed to Dify when ``inputs`` maps ``history``.
    history_limit: Annotated[int, Field(ge=0, le=50)] = 10
    # One-shot answer cache for slash-command questions (seconds; 0 = off).
    answer_cache_ttl: Annotated[int, Field(ge=0, le=86400)] = 0
    # Monthly Dify token quota per workspace for this route (0 = unlimited).
    monthly_token_quota: Annotated[int, Field(ge=0)] = 0
    # Feature switches for what appears under a finished answer.
    feedback_buttons: bool = True
    # A "New topic" button under chat answers: the same as typing a reset word.
    reset_button: bool = True
    suggested_questions: bool = True
    show_sources: bool = True
    # Bounds on one answer; unset means the environment's DIFY_FIRST_CONTENT_TIMEOUT,
    # DIFY_ANSWER_TIMEOUT and MAX_MESSAGES_PER_ANSWER.
    first_content_timeout: Annotated[float, Field(gt=0, le=86400)] | None = None
    answer_timeout: Annotated[float, Field(gt=0, le=86400)] | None = None
    max_messages_per_answer: Annotated[int, Field(ge=1, le=100)] | None = None

    # Human Input forms: who may answer them in the thread.
    human_input: HumanInputConfig = HumanInputConfig()
    # While the model reasons (Dify ``reasoning_chunk``), show "Thinking…" on the status line;
    # the reasoning itself is never shown.
    thinking_status: bool = False

    @field_validator("native_streaming", mode="before")
    @classmethod
    def _streaming_bool(cls, v: Any) -> Any:
        # Before "dm" existed the switch was a boolean.
        if isinstance(v, bool):
            return "always" if v else "off"
        return v


class BridgeFile(_Strict):
    """The YAML document as a whole."""

    version: Literal[1] = 1
    routes: tuple[RouteConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> BridgeFile:
        seen: set[str] = set()
        for r in self.routes:
            if r.name in seen:
                raise ValueError(f"route name {r.name!r} is used twice; names must be unique")
            seen.add(r.name)
        return self


def _format_validation(err: ValidationError, file: str) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against config/bridge.example.yaml)"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{msg}{tail}", file=file, key=loc)


def load_bridge_file(path: str | Path) -> BridgeFile:
    """Parse and validate the routing YAML; raise :class:`ConfigError` naming file and key."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(p)) from e
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"not valid YAML{where}: {problem}", file=str(p)) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping with a `routes:` list", file=str(p))
    try:
        return BridgeFile.model_validate(data)
    except ValidationError as e:
        raise _format_validation(e, str(p)) from e
