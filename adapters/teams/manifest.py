"""The Teams app package admins keep in their repository: fill it in, check it, zip it.

``manifests/teams/`` (``manifest.json`` + two icons) is checked against the Teams manifest JSON
schema shipped beside it (validated with the ``jsonschema`` library) and our own rules (bot id,
scopes, icon sizes), then zipped for upload. Every problem is an
:class:`app.admin.manifests.Problem` naming the field (a JSON pointer) and the fix.
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from jsonschema.exceptions import ValidationError

from app.admin.manifests import PLACEHOLDER_HOSTS, Problem, child, get_in, png_size
from app.errors import ConfigError

TEAMS_DIR = Path("manifests/teams")
APP_ID_PLACEHOLDER = "${{MICROSOFT_APP_ID}}"
RSC_CHANNEL_MESSAGES = "ChannelMessage.Read.Group"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
TEAMS_ICON_SIZES = {"color": (192, 192), "outline": (32, 32), "color32x32": (32, 32)}


def fill_teams_manifest(
    m: dict[str, Any], *, app_id: str | None, rsc_channel_messages: bool = False
) -> dict[str, Any]:
    """Put the bot's app id in ``id`` and ``botId``; add the RSC permission if asked."""
    out = copy.deepcopy(m)
    if app_id:
        if out.get("id") in (APP_ID_PLACEHOLDER, None, ""):
            out["id"] = app_id
        bots = out.get("bots")
        for bot in bots if isinstance(bots, list) else []:
            if isinstance(bot, dict) and bot.get("botId") in (APP_ID_PLACEHOLDER, None, ""):
                bot["botId"] = app_id
    if rsc_channel_messages:
        perms = child(child(out, "authorization"), "permissions")
        rsc = perms.setdefault("resourceSpecific", [])
        if not isinstance(rsc, list):
            rsc = []  # left for the schema check to report
        if not any(isinstance(r, dict) and r.get("name") == RSC_CHANNEL_MESSAGES for r in rsc):
            rsc.append({"name": RSC_CHANNEL_MESSAGES, "type": "Application"})
        # RSC needs webApplicationInfo with the app id; the resource string is not used.
        if app_id:
            out.setdefault(
                "webApplicationInfo", {"id": app_id, "resource": "https://RscBasedStoreApp"}
            )
    return out


def check_teams_manifest(
    m: dict[str, Any],
    files: dict[str, bytes],
    *,
    app_id: str | None,
    schema: dict[str, Any] | None,
) -> list[Problem]:
    """Schema (if shipped), required fields, bot id, scopes and icon sizes."""
    p: list[Problem] = []
    if schema is None:
        for key in (
            "manifestVersion",
            "version",
            "id",
            "developer",
            "name",
            "description",
            "icons",
            "accentColor",
        ):
            if key not in m:
                p.append(
                    Problem(
                        f"/{key}",
                        "is required by the Teams manifest schema",
                        f"add {key} (see manifests/teams/manifest.json)",
                    )
                )
    for ptr, value in (("/id", m.get("id")), ("/bots/0/botId", _get_bot(m).get("botId"))):
        if value == APP_ID_PLACEHOLDER or not value:
            p.append(
                Problem(
                    ptr,
                    "still the ${{MICROSOFT_APP_ID}} placeholder",
                    "set MICROSOFT_APP_ID (the bot's Microsoft app id)",
                )
            )
        elif not isinstance(value, str) or not _GUID.match(value):
            p.append(Problem(ptr, f"{value!r} is not a GUID", "use the bot's Microsoft app id"))
    bot_id = _get_bot(m).get("botId")
    if (
        app_id
        and isinstance(bot_id, str)
        and _GUID.match(bot_id)
        and bot_id.lower() != app_id.lower()
    ):
        p.append(
            Problem(
                "/bots/0/botId",
                f"is {bot_id} but MICROSOFT_APP_ID is {app_id}: "
                "Teams would send messages to another bot",
                "rebuild the package",
            )
        )
    scopes = _get_bot(m).get("scopes")
    scopes = scopes if isinstance(scopes, list) else []
    for scope in ("personal", "team", "groupChat"):
        if scope not in scopes:
            p.append(
                Problem(
                    "/bots/0/scopes",
                    f"scope {scope} is missing",
                    f"add {scope} so the bot can be used there",
                    "warning",
                )
            )
    rsc = get_in(m, "authorization", "permissions", "resourceSpecific")
    rsc = rsc if isinstance(rsc, list) else []
    if any(
        isinstance(r, dict) and r.get("name") == RSC_CHANNEL_MESSAGES for r in rsc
    ) and not get_in(m, "webApplicationInfo", "id"):
        p.append(
            Problem(
                "/webApplicationInfo",
                f"{RSC_CHANNEL_MESSAGES} needs webApplicationInfo with the app id",
                "rebuild with --rsc-channel-messages",
            )
        )
    for url_key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        value = get_in(m, "developer", url_key)
        if isinstance(value, str) and urlsplit(value).hostname in PLACEHOLDER_HOSTS:
            p.append(
                Problem(
                    f"/developer/{url_key}",
                    "still points at example.com",
                    "use your organisation's page",
                    "warning",
                )
            )
    for kind, (w, h) in TEAMS_ICON_SIZES.items():
        name = get_in(m, "icons", kind)
        if not isinstance(name, str):
            continue
        ptr = f"/icons/{kind}"
        if name not in files:
            p.append(
                Problem(
                    ptr,
                    f"{name} is not in the package",
                    f"add {name} next to manifest.json (manifests/teams/make_icons.py draws one)",
                )
            )
            continue
        try:
            size = png_size(files[name])
        except ValueError:
            p.append(Problem(ptr, f"{name} is not a PNG", f"save it as a {w}x{h} PNG"))
            continue
        if size != (w, h):
            p.append(
                Problem(
                    ptr,
                    f"{name} is {size[0]}x{size[1]}; Teams requires {w}x{h}",
                    f"resize it to {w}x{h} pixels",
                )
            )
    if schema is not None:
        # Our own messages are more specific; the schema reports the rest.
        seen = {x.pointer for x in p}
        fix = f"see the Teams manifest schema {m.get('manifestVersion')} for this field"
        p.extend(
            Problem(x.pointer, x.message, x.fix or fix)
            for x in validate_against_schema(m, schema)
            if x.pointer not in seen
        )
    return p


def _get_bot(m: dict[str, Any]) -> dict[str, Any]:
    bots = m.get("bots")
    if isinstance(bots, list) and bots and isinstance(bots[0], dict):
        return bots[0]
    return {}


def read_teams_dir(
    directory: Path,
) -> tuple[dict[str, Any], dict[str, bytes], dict[str, Any] | None]:
    """Manifest, the files beside it (icons) and the shipped schema for its version, if any."""
    manifest_path = directory / "manifest.json"
    try:
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(manifest_path)) from e
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}", file=str(manifest_path)
        ) from e
    if not isinstance(m, dict):
        raise ConfigError("the manifest must be a JSON object", file=str(manifest_path))
    files = {f.name: f.read_bytes() for f in directory.iterdir() if f.suffix.lower() == ".png"}
    schema = None
    schema_name = "MicrosoftTeams.schema.json"
    for candidate in (directory / schema_name, TEAMS_DIR / schema_name):
        if candidate.is_file():
            try:
                loaded = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"unreadable schema: {e}", file=str(candidate)) from e
            const = get_in(loaded, "properties", "manifestVersion", "const")
            if const == m.get("manifestVersion"):
                schema = loaded
                break
    return m, files, schema


def build_teams_zip(m: dict[str, Any], files: dict[str, bytes]) -> bytes:
    """The upload package: manifest.json and the icons it names, flat at the zip root."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(m, indent=2, ensure_ascii=False) + "\n")
        for kind in TEAMS_ICON_SIZES:
            name = get_in(m, "icons", kind)
            if isinstance(name, str) and name in files:
                z.writestr(name, files[name])
    return buf.getvalue()


# ------------------------------------------------------------------------------- JSON schema

_MAX_SHOWN = 80  # characters of an offending value quoted in a message


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _problems(error: ValidationError) -> list[Problem]:
    """One schema error as the problems an admin reads: the field's pointer and what is wrong.

    ``required`` and ``additionalProperties`` are reported at the missing or unknown field itself
    (jsonschema reports them at the enclosing object), so the pointer says which line to edit.
    """
    ptr = _pointer(error.absolute_path)
    kind, value, schema = error.validator, error.instance, error.schema
    if kind == "required" and isinstance(value, dict):
        return [
            Problem(f"{ptr}/{key}", "is required")
            for key in error.validator_value
            if key not in value
        ]
    if kind == "additionalProperties" and isinstance(value, dict):
        known = schema.get("properties", {}) if isinstance(schema, dict) else {}
        return [
            Problem(
                f"{ptr}/{key}",
                "is not a known field in this manifest version",
                "check the spelling or the manifestVersion",
            )
            for key in value
            if key not in known
        ]
    if kind in ("minLength", "maxLength") and isinstance(value, str):
        low = schema.get("minLength", 0)
        high = schema.get("maxLength", "∞")
        return [Problem(ptr, f"length {len(value)} is outside {low}-{high}")]
    if kind in ("minItems", "maxItems") and isinstance(value, list):
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", "∞")
        return [Problem(ptr, f"has {len(value)} items; allowed {low}-{high}")]
    if kind == "enum":
        return [Problem(ptr, f"{_shown(value)} is not one of {error.validator_value}")]
    if kind == "type":
        names = error.validator_value
        names = names if isinstance(names, list) else [names]
        return [Problem(ptr, f"must be of type {'/'.join(map(str, names))}")]
    if kind == "pattern":
        return [Problem(ptr, f"{_shown(value)} does not match {error.validator_value}")]
    if kind == "uniqueItems":
        return [Problem(ptr, "items must be unique")]
    if kind in ("anyOf", "oneOf"):
        return [Problem(ptr, f"does not match {kind} of the schema")]
    message = error.message
    return [Problem(ptr, message if len(message) <= 200 else message[:199] + "…")]


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    """``pattern`` with Python's ``re``; a pattern it cannot compile (the Teams schema has one
    ECMAScript ``\\p{L}`` class) is not checked rather than failing the whole manifest."""
    if not isinstance(instance, str):
        return
    try:
        found = re.search(pattern, instance)
    except re.error:
        return
    if found is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _validator(schema: dict[str, Any]) -> Any:
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    cls = jsonschema.validators.extend(base, {"pattern": _pattern})
    # The meta-schema without format checks: ECMAScript-only patterns are not "regex" to Python.
    bad = jsonschema.exceptions.best_match(cls(base.META_SCHEMA).iter_errors(schema))
    if bad is not None:
        raise jsonschema.SchemaError.create_from(bad)
    return cls(schema)


_cache: list[tuple[dict[str, Any], Any]] = []  # the last schema used and its validator


def validate_against_schema(instance: Any, schema: dict[str, Any]) -> list[Problem]:
    """Validate with ``jsonschema`` (the draft the schema names); one problem per failing field."""
    try:
        if not _cache or _cache[0][0] is not schema:
            _cache[:] = [(schema, _validator(schema))]
        errors = sorted(_cache[0][1].iter_errors(instance), key=lambda e: list(map(str, e.path)))
        return [p for e in errors for p in _problems(e)]
    except jsonschema.SchemaError as e:
        where = _pointer(e.absolute_path) or "/"
        return [
            Problem(
                "/",
                f"the schema is not valid JSON Schema (at {where}: {e.message[:120]})",
                "use the MicrosoftTeams.schema.json shipped in manifests/teams",
            )
        ]
    except Exception as e:  # an admin's own schema (a bad $ref) must not crash the check
        return [
            Problem(
                "/",
                f"the schema could not be applied ({type(e).__name__})",
                "use the MicrosoftTeams.schema.json shipped in manifests/teams",
            )
        ]
