"""What a Dify app accepts, from ``GET /parameters`` and ``GET /info``, and a start-up check.

:func:`parse_parameters` turns Dify's ``/parameters`` body into :class:`AppParams` (input form,
file upload rules, speech-to-text switch); :class:`ParamsCache` keeps it per route for a few
minutes so the pipeline can check inputs and files before a call without asking Dify each time;
:func:`check_routes` compares every route with its app at start and lists what would fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.config.settings import AppMode, Route
from app.dify.errors import DifyError

# The doctor's input rule too, so start-up and `dify-bridge doctor` never disagree.
from app.dify.form_inputs import check_form_inputs
from app.dify.hints import hint
from app.dify.pool import DifyClientPool

log = structlog.get_logger(__name__)

_MB = 1024 * 1024
# Dify's self-host defaults when /parameters has no system_parameters (dify-api.md).
_DEFAULT_SIZE_MB = {"image": 10, "audio": 50, "video": 100, "document": 15, "custom": 15}
FILE_TYPES = ("image", "document", "audio", "video", "custom")


@dataclass(frozen=True, slots=True)
class FormField:
    """One variable of the app's ``user_input_form``."""

    variable: str
    kind: str
    label: str = ""
    required: bool = False
    max_length: int | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileRules:
    """Which user files the app takes. ``allowed_types=None`` means any type (Dify decides)."""

    enabled: bool = False
    allowed_types: frozenset[str] | None = None
    extensions: frozenset[str] = frozenset()
    number_limit: int | None = None
    size_limits: dict[str, int] = field(default_factory=dict)

    def size_limit(self, file_type: str) -> int:
        """Largest upload in bytes for ``file_type`` (image, document, audio, video)."""
        return self.size_limits.get(file_type) or _DEFAULT_SIZE_MB.get(file_type, 15) * _MB


@dataclass(frozen=True, slots=True)
class AppParams:
    """The parts of ``/parameters`` the bridge acts on."""

    form: tuple[FormField, ...] = ()
    files: FileRules = FileRules()
    speech_to_text: bool = False
    # What the app greets with in Dify's own chat UI: adapters may offer it as suggested prompts.
    opening_statement: str = ""
    suggested_questions: tuple[str, ...] = ()
    # Whether the app offers follow-up questions after an answer ("Suggested questions after
    # answer" in Dify, off by default); None when /parameters did not say.
    follow_ups: bool | None = None

    def field(self, variable: str) -> FormField | None:
        return next((f for f in self.form if f.variable == variable), None)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _enabled(v: Any) -> bool:
    return _switch(v) is True


def _form(raw: Any) -> tuple[FormField, ...]:
    fields: list[FormField] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        # Each item is {"<type>": {variable, label, required, max_length, options, ...}}.
        for kind, spec in item.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("variable"), str):
                continue
            opts = spec.get("options")
            fields.append(
                FormField(
                    variable=spec["variable"],
                    kind=str(spec.get("type") or kind),
                    label=str(spec.get("label") or spec["variable"]),
                    required=spec.get("required") is True,
                    max_length=_int(spec.get("max_length")),
                    options=tuple(str(o) for o in opts) if isinstance(opts, list) else (),
                )
            )
    return tuple(fields)


def _file_rules(raw: Any, system: Any) -> FileRules:
    fu = raw if isinstance(raw, dict) else {}
    image = fu.get("image")
    sizes: dict[str, int] = {}
    sysp = system if isinstance(system, dict) else {}
    for ftype, key in (
        ("image", "image_file_size_limit"),
        ("audio", "audio_file_size_limit"),
        ("video", "video_file_size_limit"),
        ("document", "file_size_limit"),
        ("custom", "file_size_limit"),
    ):
        mb = _int(sysp.get(key))
        if mb:
            sizes[ftype] = mb * _MB
    types = fu.get("allowed_file_types")
    if fu.get("enabled") is True:
        allowed = frozenset(str(t) for t in types) if isinstance(types, list) and types else None
        exts = fu.get("allowed_file_extensions")
        limit = _int(fu.get("number_limits")) or (
            _int(image.get("number_limits")) if isinstance(image, dict) else None
        )
        return FileRules(
            enabled=True,
            allowed_types=allowed,
            extensions=frozenset(str(e).lower() for e in exts)
            if isinstance(exts, list)
            else frozenset(),
            number_limit=limit,
            size_limits=sizes,
        )
    if _enabled(image):
        # Older Dify: only the image block exists.
        assert isinstance(image, dict)
        return FileRules(
            enabled=True,
            allowed_types=frozenset({"image"}),
            number_limit=_int(image.get("number_limits")),
            size_limits=sizes,
        )
    return FileRules(enabled=False, size_limits=sizes)


def parse_parameters(raw: dict[str, Any]) -> AppParams:
    """Read Dify's ``/parameters`` answer; unknown or malformed parts count as "not offered"."""
    return AppParams(
        form=_form(raw.get("user_input_form")),
        files=_file_rules(raw.get("file_upload"), raw.get("system_parameters")),
        speech_to_text=_enabled(raw.get("speech_to_text")),
        opening_statement=_text(raw.get("opening_statement")),
        suggested_questions=tuple(
            q for q in (_text(x) for x in _list(raw.get("suggested_questions"))) if q
        ),
        follow_ups=_switch(raw.get("suggested_questions_after_answer")),
    )


def _switch(v: Any) -> bool | None:
    """A feature block's ``enabled``; None when the block or its flag is missing or malformed."""
    flag = v.get("enabled") if isinstance(v, dict) else None
    return flag if isinstance(flag, bool) else None


def _text(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ""


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


class ParamsCache:
    """``/parameters`` per route for ``ttl`` seconds; one fetch at a time per route."""

    def __init__(
        self,
        pool: DifyClientPool,
        *,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str, str], tuple[float, AppParams]] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        # When each route's last read failed: the follow-up check does not retry within ttl
        # (a Dify whose /parameters fails is not asked once more after every answer).
        self._failed: dict[tuple[str, str, str], float] = {}

    @staticmethod
    def _key(route: Route) -> tuple[str, str, str]:
        return (route.name, route.base_url, route.api_key)

    def fresh(self, route: Route) -> bool:
        """True when :meth:`get` would answer from memory, without calling Dify."""
        hit = self._entries.get(self._key(route))
        return bool(hit and hit[0] > self._clock())

    def clear(self) -> None:
        """Forget every cached answer and failed read (after a config reload, or an app
        changed in Dify)."""
        self._entries.clear()
        self._failed.clear()

    async def offers_follow_ups(self, route: Route, known: AppParams | None = None) -> bool:
        """Whether to ask Dify for follow-up questions after an answer on ``route``.

        Not where the app has them off (Dify's default): that call would only get a 403. The
        switch is in /parameters (``known`` when the turn already read them, else from this
        cache: a call every few minutes at most); unknown (Dify did not say) means ask."""
        if not route.config.suggested_questions:
            return False
        app = known
        if app is None:
            failed = self._failed.get(self._key(route))
            if failed is None or self._clock() - failed >= self._ttl:
                app = await self.get(route)
        return app is None or app.follow_ups is not False

    async def get(self, route: Route) -> AppParams | None:
        """The app's parameters, or None when Dify could not say (the call then goes ahead and
        Dify itself validates)."""
        key = self._key(route)
        hit = self._entries.get(key)
        if hit and hit[0] > self._clock():
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._entries.get(key)
            if hit and hit[0] > self._clock():
                return hit[1]
            try:
                raw = await self._pool.client(route.base_url, route.api_key).parameters()
            except DifyError as e:
                self._failed[key] = self._clock()
                log.warning(
                    "dify.parameters_unavailable",
                    route=route.name,
                    error=type(e).__name__,
                    status=e.status,
                )
                return None
            params = parse_parameters(raw)
            self._entries[key] = (self._clock() + self._ttl, params)
            self._failed.pop(key, None)
            return params


# ------------------------------------------------------------------------- start-up check


def route_problems(
    route: Route, info: dict[str, Any] | None, params: dict[str, Any] | None
) -> list[str]:
    """Problems of one route given its app's ``/info`` and ``/parameters`` (None = unknown)."""
    name = route.name
    problems: list[str] = []
    if info is not None:
        mode = str(info.get("mode", ""))
        want = route.config.dify.mode.value
        if mode and mode != want:
            known = mode in {m.value for m in AppMode}
            fix = (
                f"set dify.mode: {mode} in the route"
                if known
                else f"Dify mode {mode!r} is not supported: use a chat, chatflow, agent, "
                "completion or workflow app"
            )
            problems.append(
                f"route {name!r}: the Dify app is {mode!r} but the route says {want!r}; {fix}"
            )
            return problems  # input rules differ per mode: fix the mode first
    if params is not None:
        verdict = check_form_inputs(route, params, key="the route's ")
        if not verdict.ok:
            fix = f"; {verdict.fix}" if verdict.fix else ""
            problems.append(f"route {name!r}: {verdict.detail}{fix}")
    return problems


async def check_routes(routes: Iterable[Route], pool: DifyClientPool) -> list[str]:
    """Compare each route with its Dify app; one readable sentence per problem ([] = all good).

    Checks the route's mode against ``/info`` and that every required form input is mapped
    (workflows also get the message text in ``dify.query_variable``). Routes whose app cannot
    be reached are reported too, but never raise: start-up goes on.
    """

    async def one(route: Route) -> list[str]:
        client = pool.client(route.base_url, route.api_key)
        info: dict[str, Any] | None = None
        params: dict[str, Any] | None = None
        problems: list[str] = []
        try:
            info = await client.info()
        except DifyError as e:
            fix = hint(e, route.base_url) or e.user_message
            problems.append(
                f"route {route.name!r}: cannot read the Dify app's info at "
                f"{route.base_url} ({type(e).__name__}): {fix}"
            )
            return problems
        try:
            params = await client.parameters()
        except DifyError as e:
            problems.append(
                f"route {route.name!r}: cannot read the Dify app's parameters "
                f"({type(e).__name__}); publish the app in Dify"
            )
        return problems + route_problems(route, info, params)

    results = await asyncio.gather(*(one(r) for r in routes))
    return [p for r in results for p in r]


__all__ = [
    "FILE_TYPES",
    "AppParams",
    "FileRules",
    "FormField",
    "ParamsCache",
    "check_routes",
    "parse_parameters",
    "route_problems",
]
