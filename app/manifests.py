"""App manifests admins keep in their repository: render, check and publish them.

* Slack: ``manifests/slack/manifest.yaml`` is filled in (public URL, Socket Mode, slash command),
  checked locally (structure, scopes for the enabled features, URLs) and pushed through Slack's
  app manifest API (``apps.manifest.validate`` then ``apps.manifest.update``).
* Teams: ``manifests/teams/`` (``manifest.json`` + two icons) is checked against the shipped
  Teams manifest JSON schema and our own rules (bot id, scopes, icon sizes) and zipped for upload.

Every problem is a :class:`Problem` naming the field (a JSON pointer, as Slack's own errors do)
and the fix.
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import yaml

from app.errors import ConfigError

SLACK_MANIFEST_PATH = Path("manifests/slack/manifest.yaml")
TEAMS_DIR = Path("manifests/teams")
SLACK_EVENTS_PATH = "/slack/events"
PLACEHOLDER_HOSTS = ("example.com", "bridge.example.com")
APP_ID_PLACEHOLDER = "${{MICROSOFT_APP_ID}}"
RSC_CHANNEL_MESSAGES = "ChannelMessage.Read.Group"

# Bot scope -> the feature that needs it. Nothing else is requested (least privilege); the Slack
# adapter's OAuth install asks for the same set (BOT_SCOPES; a test keeps them equal).
SLACK_SCOPES: dict[str, str] = {
    "app_mentions:read": "answer @mentions in channels",
    "assistant:write": "suggested prompts and thread titles in the agent DM "
    "(assistant.threads.setSuggestedPrompts, setTitle)",
    "channels:history": "continue threads in public channels without a new mention",
    "chat:write": "post, edit and stream answers; the loading status "
    "(assistant.threads.setStatus)",
    "commands": "the slash command",
    "files:read": "pass attached files to Dify",
    "files:write": "post files that Dify produced",
    "groups:history": "continue threads in private channels without a new mention",
    "im:history": "answer direct messages (message.im)",
    "mpim:history": "continue threads in group DMs (message.mpim)",
    "users:read": "the speaker's name (users.info)",
}
# Only needed when a route maps speaker_email into Dify inputs.
SLACK_EMAIL_SCOPES: dict[str, str] = {
    "users:read.email": "speaker_email in a route's inputs",
}
SLACK_EVENT_SCOPES: dict[str, str] = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
}

# Need no scope; they let the bridge forget a workspace that uninstalled the app (OAuth installs).
SLACK_LIFECYCLE_EVENTS: tuple[str, ...] = ("app_uninstalled", "tokens_revoked")

# The agent messaging experience (features.agent_view): conversations in the Messages tab as
# threads, loading states, suggested prompts, titles. Its events need no scope of their own.
SLACK_AGENT_EVENTS: dict[str, str] = {
    "app_home_opened": "offer the Dify app's suggested questions when the Messages tab opens",
    "app_context_changed": "know what the user is looking at (routes mapping the `viewing` input)",
    "agent_session_stopped": "stop the Dify answer when someone clicks Slack's Stop button",
}
AGENT_DESCRIPTION_MAX = 300
AGENT_PROMPTS_MAX = 4


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest: where (JSON pointer), what, and how to fix it."""

    pointer: str
    message: str
    fix: str = ""
    severity: Literal["error", "warning"] = "error"

    def line(self, source: str) -> str:
        tag = "ERROR" if self.severity == "error" else "WARNING"
        tail = f" -> {self.fix}" if self.fix else ""
        return f"{tag} {source}: {self.pointer or '/'}: {self.message}{tail}"


def errors_in(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------------------------- Slack


def needed_slack_scopes(*, speaker_email: bool = False) -> dict[str, str]:
    """Bot scopes the bridge's features need, with the reason for each."""
    return {**SLACK_SCOPES, **(SLACK_EMAIL_SCOPES if speaker_email else {})}


def slack_scopes_markdown() -> str:
    """The scope table of the admin guide (a test keeps README.md equal to this)."""
    rows = ["| Scope | Needed to |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in {**SLACK_SCOPES, **SLACK_EMAIL_SCOPES}.items()]
    return "\n".join(rows) + "\n"


def default_slack_manifest(*, command: str = "/ask") -> dict[str, Any]:
    """The manifest ``manifests/slack/manifest.yaml`` holds (tests keep the two in step)."""
    url = "https://bridge.example.com" + SLACK_EVENTS_PATH
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": "Dify Assistant",
            "description": "Answers questions with your organisation's Dify app.",
            "background_color": "#1d4ed8",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": "Dify Assistant", "always_online": True},
            # The agent experience in DMs; suggested prompts come from the Dify app at run time.
            "agent_view": {
                "agent_description": "Answers questions with your organisation's Dify app, "
                "right here or in any channel you mention it in.",
            },
            "slash_commands": [
                {
                    "command": command,
                    "url": url,
                    "description": "Ask the assistant a question",
                    "usage_hint": "[your question]",
                    "should_escape": False,
                }
            ],
        },
        "oauth_config": {"scopes": {"bot": [*SLACK_SCOPES, *SLACK_EMAIL_SCOPES]}},
        "settings": {
            "event_subscriptions": {
                "request_url": url,
                "bot_events": [*SLACK_EVENT_SCOPES, *SLACK_AGENT_EVENTS, *SLACK_LIFECYCLE_EVENTS],
            },
            "interactivity": {"is_enabled": True, "request_url": url},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }


def load_manifest_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON manifest; unreadable or malformed files raise :class:`ConfigError`."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from e
    try:
        data = yaml.safe_load(raw)  # JSON is YAML too
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError(f"not valid YAML/JSON{where}: {problem}", file=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError("the manifest must be a mapping at the top level", file=str(path))
    return data


def render_slack_manifest(
    base: dict[str, Any],
    *,
    public_url: str | None,
    socket_mode: bool,
    command: str | None = None,
    oauth: bool = False,
) -> dict[str, Any]:
    """Fill in request URLs (or drop them for Socket Mode) and the slash command."""
    m = copy.deepcopy(base)
    url = public_url.rstrip("/") + SLACK_EVENTS_PATH if public_url else None
    settings = _child(m, "settings")
    events = _child(settings, "event_subscriptions")
    interactivity = _child(settings, "interactivity", {"is_enabled": True})
    commands = _child(m, "features").get("slash_commands")
    commands = commands if isinstance(commands, list) else []
    settings["socket_mode_enabled"] = socket_mode
    targets: list[dict[str, Any]] = [events, interactivity]
    if socket_mode:
        # Slack delivers over the socket; a request URL here would only mislead.
        for t in targets:
            t.pop("request_url", None)
        for c in commands:
            if isinstance(c, dict):
                c.pop("url", None)
    elif url:
        events["request_url"] = url
        interactivity["request_url"] = url
        for c in commands:
            if isinstance(c, dict):
                c["url"] = url
    if command and commands and isinstance(commands[0], dict):
        commands[0]["command"] = command
    if oauth and public_url:
        redirect = public_url.rstrip("/") + "/slack/oauth_redirect"
        _child(m, "oauth_config")["redirect_urls"] = [redirect]
    return m


def settings_value(m: dict[str, Any], key: str) -> Any:
    """``m["settings"][key]`` of a Slack manifest, or None."""
    return _get(m, "settings", key)


def _child(
    parent: dict[str, Any], key: str, default: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``parent[key]``, created if absent; a non-mapping stays as it is (the check reports it)."""
    value = parent.setdefault(key, default if default is not None else {})
    return value if isinstance(value, dict) else {}


def dump_manifest_yaml(m: dict[str, Any]) -> str:
    return yaml.safe_dump(m, sort_keys=False, allow_unicode=True, width=100)


def _get(m: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(m, dict):
            return None
        m = m.get(key)
    return m


def _check_url(pointer: str, value: Any, problems: list[Problem]) -> None:
    fix = "run `dify-bridge manifest slack --public-url https://YOUR-HOST` (or use --socket-mode)"
    if not isinstance(value, str) or not value:
        problems.append(Problem(pointer, "a request URL is required when Socket Mode is off", fix))
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        problems.append(Problem(pointer, f"{value!r} is not an https:// URL (Slack needs TLS)",
                                fix))
    elif parts.hostname in PLACEHOLDER_HOSTS:
        problems.append(Problem(pointer, f"{value!r} still points at the example host", fix))
    elif parts.path.rstrip("/") != SLACK_EVENTS_PATH:
        problems.append(
            Problem(pointer, f"path is {parts.path or '/'!r}; the bridge listens on "
                    f"{SLACK_EVENTS_PATH}", f"use https://{parts.netloc}{SLACK_EVENTS_PATH}")
        )


def _check_str(m: Any, path: tuple[str, ...], max_len: int, problems: list[Problem], *,
               required: bool = True, min_len: int = 0) -> None:
    value = _get(m, *path)
    pointer = "/" + "/".join(path)
    if value is None:
        if required:
            problems.append(Problem(pointer, "is required", f"add {path[-1]}"))
    elif not isinstance(value, str):
        problems.append(Problem(pointer, "must be a string"))
    elif not min_len <= len(value) <= max_len:
        problems.append(Problem(pointer, f"has {len(value)} characters; Slack allows "
                                f"{min_len}-{max_len}", "shorten or lengthen it"))


def _check_agent_view(m: dict[str, Any], events: list[Any], p: list[Problem]) -> None:
    """``features.agent_view``: present (else DMs are plain IMs), well formed, its events on."""
    ptr = "/features/agent_view"
    agent = _get(m, "features", "agent_view")
    if _get(m, "features", "assistant_view") is not None:
        p.append(Problem("/features/assistant_view", "the assistant view is being deprecated by "
                         "Slack (new apps can only use agent_view)",
                         "replace it with features.agent_view (agent_description instead of "
                         "assistant_description)", "warning"))
    if agent is None:
        p.append(Problem(ptr, "the agent messaging experience is off: a DM with the bot is a "
                         "plain IM, without threads, loading states or suggested prompts",
                         "add features.agent_view with an agent_description", "warning"))
        return
    if not isinstance(agent, dict):
        p.append(Problem(ptr, "must be a mapping", "copy it from manifests/slack/manifest.yaml"))
        return
    _check_str(m, ("features", "agent_view", "agent_description"), AGENT_DESCRIPTION_MAX, p,
               required=False)
    prompts = agent.get("suggested_prompts")
    if prompts is not None:
        if not isinstance(prompts, list) or len(prompts) > AGENT_PROMPTS_MAX:
            p.append(Problem(f"{ptr}/suggested_prompts", f"must be a list of at most "
                             f"{AGENT_PROMPTS_MAX} prompts", "remove some (the bridge also offers "
                             "the Dify app's suggested questions)"))
        else:
            for i, item in enumerate(prompts):
                if not (isinstance(item, dict) and isinstance(item.get("title"), str)
                        and isinstance(item.get("message"), str)):
                    p.append(Problem(f"{ptr}/suggested_prompts/{i}", "needs a title and a "
                                     "message (both strings)", "write {title: ..., message: ...}"))
    for event, why in SLACK_AGENT_EVENTS.items():
        if event not in events:
            p.append(Problem("/settings/event_subscriptions/bot_events", f"event {event} is not "
                             "subscribed", f"add {event} (to {why})",
                             "error" if event == "app_home_opened" else "warning"))


def check_slack_manifest(
    m: dict[str, Any], *, command: str | None = None, speaker_email: bool = False
) -> list[Problem]:
    """Check structure, scopes against the enabled features, events and URLs."""
    p: list[Problem] = []
    _check_str(m, ("display_information", "name"), 35, p, min_len=1)
    _check_str(m, ("display_information", "description"), 140, p, required=False)
    _check_str(m, ("display_information", "long_description"), 4000, p, required=False,
               min_len=175)
    color = _get(m, "display_information", "background_color")
    if color is not None and not (isinstance(color, str) and re.fullmatch(
            r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", color)):
        p.append(Problem("/display_information/background_color", f"{color!r} is not a hex "
                         "colour", "use a value like \"#1d4ed8\" (quoted in YAML)"))
    _check_str(m, ("features", "bot_user", "display_name"), 80, p, min_len=1)
    if _get(m, "features", "app_home", "messages_tab_enabled") is not True or _get(
            m, "features", "app_home", "messages_tab_read_only_enabled") is not False:
        p.append(Problem("/features/app_home", "direct messages are turned off (users see "
                         "\"Sending messages to this app has been turned off\")",
                         "set messages_tab_enabled: true and messages_tab_read_only_enabled: "
                         "false"))

    scopes = _get(m, "oauth_config", "scopes", "bot")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        p.append(Problem("/oauth_config/scopes/bot", "must be a list of scope names",
                         "copy the list from manifests/slack/manifest.yaml"))
        scopes = []
    needed = needed_slack_scopes(speaker_email=speaker_email)
    for scope, why in needed.items():
        if scope not in scopes:
            p.append(Problem("/oauth_config/scopes/bot", f"scope {scope} is missing (needed to "
                             f"{why})", f"add {scope}, push the manifest and reinstall the app"))
    for scope in scopes:
        if scope not in needed and scope not in SLACK_EMAIL_SCOPES:
            p.append(Problem("/oauth_config/scopes/bot", f"scope {scope} is not used by "
                             "dify-bridge", "remove it (ask only for what the bot needs)",
                             "warning"))

    socket = _get(m, "settings", "socket_mode_enabled") is True
    events = _get(m, "settings", "event_subscriptions", "bot_events")
    if not isinstance(events, list):
        events = []
    for event, scope in SLACK_EVENT_SCOPES.items():
        if event not in events:
            p.append(Problem("/settings/event_subscriptions/bot_events", f"event {event} is not "
                             "subscribed", f"add {event} (needs scope {scope})"))
    for event in SLACK_LIFECYCLE_EVENTS:
        if event not in events:
            p.append(Problem("/settings/event_subscriptions/bot_events", f"event {event} is not "
                             "subscribed", f"add {event} so uninstalls are noticed", "warning"))
    _check_agent_view(m, events, p)
    if _get(m, "settings", "interactivity", "is_enabled") is not True:
        p.append(Problem("/settings/interactivity/is_enabled", "interactivity is off: feedback "
                         "and suggestion buttons will fail", "set is_enabled: true"))

    cmds = _get(m, "features", "slash_commands")
    if not isinstance(cmds, list) or not cmds or not isinstance(cmds[0], dict):
        p.append(Problem("/features/slash_commands", "no slash command is declared",
                         f"declare {command or '/ask'} (SLACK_SLASH_COMMAND)"))
        cmds = []
    for i, c in enumerate(cmds):
        ptr = f"/features/slash_commands/{i}"
        name = c.get("command") if isinstance(c, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"/[a-z0-9_\-]{1,31}", name):
            p.append(Problem(f"{ptr}/command", f"{name!r} is not a slash command name",
                             "use a lowercase name starting with /, at most 32 characters"))
        elif i == 0 and command and name != command:
            p.append(Problem(f"{ptr}/command", f"declares {name} but the bridge answers "
                             f"{command} (SLACK_SLASH_COMMAND)",
                             f"use {command} here or set SLACK_SLASH_COMMAND={name}"))
        if not isinstance(c, dict) or not c.get("description"):
            p.append(Problem(f"{ptr}/description", "is required", "describe the command"))
        if not socket and isinstance(c, dict):
            _check_url(f"{ptr}/url", c.get("url"), p)

    if not socket:
        _check_url("/settings/event_subscriptions/request_url",
                   _get(m, "settings", "event_subscriptions", "request_url"), p)
        _check_url("/settings/interactivity/request_url",
                   _get(m, "settings", "interactivity", "request_url"), p)
    elif _get(m, "settings", "event_subscriptions", "request_url"):
        p.append(Problem("/settings/event_subscriptions/request_url", "is ignored with Socket "
                         "Mode on", "remove it (render with --socket-mode)", "warning"))
    return p


class SlackManifestApiError(Exception):
    """Slack's manifest API said no; ``lines`` are readable, one problem each."""

    def __init__(self, method: str, error: str, lines: list[str]) -> None:
        self.method = method
        self.error = error
        self.lines = lines
        super().__init__(f"{method}: {error}")


_SLACK_ERROR_HINTS = {
    "invalid_auth": "SLACK_CONFIG_TOKEN is not valid: create an app configuration token "
    "(api.slack.com/apps, 'Your App Configuration Tokens')",
    "token_expired": "configuration tokens last 12 hours: generate a new SLACK_CONFIG_TOKEN",
    "not_authed": "set SLACK_CONFIG_TOKEN",
    "not_allowed_token_type": "use an app configuration token (xoxe.xoxp-...), not a bot or "
    "app-level token",
    "app_not_found": "check SLACK_APP_ID (Basic Information page, starts with A)",
    "invalid_app_id": "check SLACK_APP_ID (Basic Information page, starts with A)",
    "invalid_app": "check SLACK_APP_ID (Basic Information page, starts with A)",
    "ratelimited": "Slack is rate limiting manifest calls: wait a minute and retry",
}


async def _slack_call(
    client: httpx.AsyncClient, api_url: str, method: str, token: str, form: dict[str, str]
) -> dict[str, Any]:
    url = api_url.rstrip("/") + "/" + method
    try:
        r = await client.post(url, data=form, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as e:
        raise SlackManifestApiError(method, "unreachable", [f"{url}: {type(e).__name__}"]) from e
    if r.status_code == 429:
        raise SlackManifestApiError(method, "ratelimited", [
            f"retry after {r.headers.get('Retry-After', '?')} s"])
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SlackManifestApiError(method, f"http_{r.status_code}", [
            f"{url} answered HTTP {r.status_code} without a Slack API body: check SLACK_API_URL"])
    if body.get("ok") is True:
        return body
    error = str(body.get("error") or "unknown_error")
    lines: list[str] = []
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            lines.append(f"{item.get('pointer') or '/'}: {item.get('message') or item}")
    if error in _SLACK_ERROR_HINTS:
        lines.append(_SLACK_ERROR_HINTS[error])
    raise SlackManifestApiError(method, error, lines)


async def push_slack_manifest(
    manifest: dict[str, Any], *, api_url: str, config_token: str, app_id: str,
    client: httpx.AsyncClient | None = None, request_timeout: float = 15.0,
) -> dict[str, Any]:
    """Validate then update the app's manifest; returns Slack's ``apps.manifest.update`` body."""
    form = {"app_id": app_id, "manifest": json.dumps(manifest)}
    own = client is None
    c = client or httpx.AsyncClient(timeout=request_timeout)
    try:
        await _slack_call(c, api_url, "apps.manifest.validate", config_token, form)
        return await _slack_call(c, api_url, "apps.manifest.update", config_token, form)
    finally:
        if own:
            await c.aclose()


# --------------------------------------------------------------------------------------- Teams

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
TEAMS_ICON_SIZES = {"color": (192, 192), "outline": (32, 32), "color32x32": (32, 32)}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; ``ValueError`` if it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


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
        perms = _child(_child(out, "authorization"), "permissions")
        rsc = perms.setdefault("resourceSpecific", [])
        if not isinstance(rsc, list):
            rsc = []  # left for the schema check to report
        if not any(isinstance(r, dict) and r.get("name") == RSC_CHANNEL_MESSAGES for r in rsc):
            rsc.append({"name": RSC_CHANNEL_MESSAGES, "type": "Application"})
        # RSC needs webApplicationInfo with the app id; the resource string is not used.
        if app_id:
            out.setdefault("webApplicationInfo", {"id": app_id, "resource": "https://RscBasedStoreApp"})
    return out


def check_teams_manifest(
    m: dict[str, Any], files: dict[str, bytes], *, app_id: str | None,
    schema: dict[str, Any] | None,
) -> list[Problem]:
    """Schema (if shipped), required fields, bot id, scopes and icon sizes."""
    p: list[Problem] = []
    if schema is None:
        for key in ("manifestVersion", "version", "id", "developer", "name", "description",
                    "icons", "accentColor"):
            if key not in m:
                p.append(Problem(f"/{key}", "is required by the Teams manifest schema",
                                 f"add {key} (see manifests/teams/manifest.json)"))
    for ptr, value in (("/id", m.get("id")), ("/bots/0/botId", _get_bot(m).get("botId"))):
        if value == APP_ID_PLACEHOLDER or not value:
            p.append(Problem(ptr, "still the ${{MICROSOFT_APP_ID}} placeholder",
                             "set MICROSOFT_APP_ID (the bot's Microsoft app id)"))
        elif not isinstance(value, str) or not _GUID.match(value):
            p.append(Problem(ptr, f"{value!r} is not a GUID", "use the bot's Microsoft app id"))
    bot_id = _get_bot(m).get("botId")
    if app_id and isinstance(bot_id, str) and _GUID.match(bot_id) and \
            bot_id.lower() != app_id.lower():
        p.append(Problem("/bots/0/botId", f"is {bot_id} but MICROSOFT_APP_ID is {app_id}: "
                         "Teams would send messages to another bot", "rebuild the package"))
    scopes = _get_bot(m).get("scopes")
    scopes = scopes if isinstance(scopes, list) else []
    for scope in ("personal", "team", "groupChat"):
        if scope not in scopes:
            p.append(Problem("/bots/0/scopes", f"scope {scope} is missing", f"add {scope} so "
                             "the bot can be used there", "warning"))
    rsc = _get(m, "authorization", "permissions", "resourceSpecific")
    rsc = rsc if isinstance(rsc, list) else []
    if any(isinstance(r, dict) and r.get("name") == RSC_CHANNEL_MESSAGES for r in rsc) and not \
            _get(m, "webApplicationInfo", "id"):
        p.append(Problem("/webApplicationInfo", f"{RSC_CHANNEL_MESSAGES} needs webApplicationInfo"
                         " with the app id", "rebuild with --rsc-channel-messages"))
    for url_key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        value = _get(m, "developer", url_key)
        if isinstance(value, str) and urlsplit(value).hostname in PLACEHOLDER_HOSTS:
            p.append(Problem(f"/developer/{url_key}", "still points at example.com",
                             "use your organisation's page", "warning"))
    for kind, (w, h) in TEAMS_ICON_SIZES.items():
        name = _get(m, "icons", kind)
        if not isinstance(name, str):
            continue
        ptr = f"/icons/{kind}"
        if name not in files:
            p.append(Problem(ptr, f"{name} is not in the package", f"add {name} next to "
                             "manifest.json (manifests/teams/make_icons.py draws one)"))
            continue
        try:
            size = png_size(files[name])
        except ValueError:
            p.append(Problem(ptr, f"{name} is not a PNG", f"save it as a {w}x{h} PNG"))
            continue
        if size != (w, h):
            p.append(Problem(ptr, f"{name} is {size[0]}x{size[1]}; Teams requires {w}x{h}",
                             f"resize it to {w}x{h} pixels"))
    if schema is not None:
        # Our own messages are more specific; the schema reports the rest.
        seen = {x.pointer for x in p}
        fix = f"see the Teams manifest schema {m.get('manifestVersion')} for this field"
        p.extend(Problem(x.pointer, x.message, x.fix or fix) for x in
                 validate_json_schema(m, schema) if x.pointer not in seen)
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
        raise ConfigError(f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                          file=str(manifest_path)) from e
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
            const = _get(loaded, "properties", "manifestVersion", "const")
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
            name = _get(m, "icons", kind)
            if isinstance(name, str) and name in files:
                z.writestr(name, files[name])
    return buf.getvalue()


# ----------------------------------------------------------------- JSON schema (draft-04 subset)

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(name, (object,)))


def validate_json_schema(instance: Any, schema: dict[str, Any]) -> list[Problem]:
    """Validate with the keywords the Teams schema uses; one problem per failing field."""
    out: list[Problem] = []
    try:
        _validate(instance, schema, schema, "", out)
    except (KeyError, TypeError, AttributeError, re.error, RecursionError) as e:
        # An admin's own schema file we cannot apply must not crash the check.
        out.append(Problem("/", f"the schema could not be applied ({type(e).__name__})",
                           "use the MicrosoftTeams.schema.json shipped in manifests/teams"))
    return out


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/") if ref != "#" else []:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node if isinstance(node, dict) else {}


def _validate(
    v: Any, s: dict[str, Any], root: dict[str, Any], ptr: str, out: list[Problem]
) -> None:
    if "$ref" in s:
        _validate(v, _resolve(root, s["$ref"]), root, ptr, out)
        return
    t = s.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if not any(_type_ok(v, n) for n in names):
            out.append(Problem(ptr, f"must be of type {'/'.join(names)}"))
            return
    if "enum" in s and v not in s["enum"]:
        out.append(Problem(ptr, f"{v!r} is not one of {s['enum']}"))
    if "const" in s and v != s["const"]:
        out.append(Problem(ptr, f"must be {s['const']!r}, got {v!r}"))
    if isinstance(v, str):
        if len(v) > s.get("maxLength", len(v)) or len(v) < s.get("minLength", 0):
            out.append(Problem(ptr, f"length {len(v)} is outside {s.get('minLength', 0)}-"
                               f"{s.get('maxLength', '∞')}"))
        if "pattern" in s and not re.search(s["pattern"], v):
            out.append(Problem(ptr, f"{v!r} does not match {s['pattern']}"))
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if number and (v > s.get("maximum", v) or v < s.get("minimum", v)):
        out.append(Problem(ptr, f"{v} is out of range"))
    if isinstance(v, list):
        if len(v) > s.get("maxItems", len(v)) or len(v) < s.get("minItems", 0):
            out.append(Problem(ptr, f"has {len(v)} items; allowed {s.get('minItems', 0)}-"
                               f"{s.get('maxItems', '∞')}"))
        if s.get("uniqueItems") and len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            out.append(Problem(ptr, "items must be unique"))
        if isinstance(s.get("items"), dict):
            for i, item in enumerate(v):
                _validate(item, s["items"], root, f"{ptr}/{i}", out)
    if isinstance(v, dict):
        _validate_object(v, s, root, ptr, out)
    for key, combine in (("anyOf", any), ("oneOf", None)):
        if key in s:
            passing = sum(1 for sub in s[key] if not _sub(v, sub, root, ptr))
            if (combine is any and passing == 0) or (combine is None and passing != 1):
                out.append(Problem(ptr, f"does not match {key} of the schema"))
    for sub in s.get("allOf", []):
        _validate(v, sub, root, ptr, out)
    if "not" in s and not _sub(v, s["not"], root, ptr):
        out.append(Problem(ptr, "matches a form the schema forbids"))
    if "if" in s and not _sub(v, s["if"], root, ptr):
        _validate(v, s.get("then", {}), root, ptr, out)


def _sub(v: Any, s: dict[str, Any], root: dict[str, Any], ptr: str) -> list[Problem]:
    found: list[Problem] = []
    _validate(v, s, root, ptr, found)
    return found


def _validate_object(
    v: dict[str, Any], s: dict[str, Any], root: dict[str, Any], ptr: str, out: list[Problem]
) -> None:
    props: dict[str, Any] = s.get("properties", {})
    for key in s.get("required", []):
        if key not in v:
            out.append(Problem(f"{ptr}/{key}", "is required"))
    if len(v) < s.get("minProperties", 0):
        out.append(Problem(ptr, f"needs at least {s['minProperties']} properties"))
    extra = s.get("additionalProperties", True)
    for key, value in v.items():
        if key in props:
            _validate(value, props[key], root, f"{ptr}/{key}", out)
        elif extra is False:
            out.append(Problem(f"{ptr}/{key}", "is not a known field in this manifest version",
                               "check the spelling or the manifestVersion"))
        elif isinstance(extra, dict):
            _validate(value, extra, root, f"{ptr}/{key}", out)
    for key, dep in (s.get("dependencies") or {}).items():
        if key in v:
            if isinstance(dep, list):
                out.extend(Problem(f"{ptr}/{d}", f"is required with {key}") for d in dep
                           if d not in v)
            elif isinstance(dep, dict):
                _validate(v, dep, root, ptr, out)
