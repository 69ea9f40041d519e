"""The Slack app manifest admins keep in their repository: render, check and publish it.

``manifests/slack/manifest.yaml`` is filled in (public URL, Socket Mode, slash command), checked
locally (structure, scopes for the enabled features, URLs) and pushed through Slack's app manifest
API (:mod:`adapters.slack.manifest_push`). Every problem is an
:class:`app.admin.manifests.Problem` naming the field (a JSON pointer, as Slack's own errors do).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.admin.manifests import PLACEHOLDER_HOSTS, Problem, child, get_in

SLACK_MANIFEST_PATH = Path("manifests/slack/manifest.yaml")
SLACK_EVENTS_PATH = "/slack/events"


# Bot scope -> the feature that needs it. Nothing else is requested (least privilege); the Slack
# adapter's OAuth install asks for the same set (BOT_SCOPES; a test keeps them equal).
SLACK_SCOPES: dict[str, str] = {
    "app_mentions:read": "answer @mentions in channels",
    "assistant:write": "suggested prompts and thread titles in the agent DM "
    "(assistant.threads.setSuggestedPrompts, setTitle)",
    "channels:history": "continue threads in public channels without a new mention",
    "chat:write": "post, edit and stream answers; the loading status (assistant.threads.setStatus)",
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


def needed_slack_scopes(*, speaker_email: bool = False) -> dict[str, str]:
    """Bot scopes the bridge's features need, with the reason for each."""
    return {**SLACK_SCOPES, **(SLACK_EMAIL_SCOPES if speaker_email else {})}


def slack_scopes_markdown() -> str:
    """The scope table of the admin guide (a test keeps docs/admin/manifests.md equal to this)."""
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
    settings = child(m, "settings")
    events = child(settings, "event_subscriptions")
    interactivity = child(settings, "interactivity", {"is_enabled": True})
    commands = child(m, "features").get("slash_commands")
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
        child(m, "oauth_config")["redirect_urls"] = [redirect]
    return m


def settings_value(m: dict[str, Any], key: str) -> Any:
    """``m["settings"][key]`` of a Slack manifest, or None."""
    return get_in(m, "settings", key)


def _check_url(pointer: str, value: Any, problems: list[Problem]) -> None:
    fix = "run `dify-bridge manifest slack --public-url https://YOUR-HOST` (or use --socket-mode)"
    if not isinstance(value, str) or not value:
        problems.append(Problem(pointer, "a request URL is required when Socket Mode is off", fix))
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        problems.append(
            Problem(pointer, f"{value!r} is not an https:// URL (Slack needs TLS)", fix)
        )
    elif parts.hostname in PLACEHOLDER_HOSTS:
        problems.append(Problem(pointer, f"{value!r} still points at the example host", fix))
    elif parts.path.rstrip("/") != SLACK_EVENTS_PATH:
        problems.append(
            Problem(
                pointer,
                f"path is {parts.path or '/'!r}; the bridge listens on {SLACK_EVENTS_PATH}",
                f"use https://{parts.netloc}{SLACK_EVENTS_PATH}",
            )
        )


def _check_str(
    m: Any,
    path: tuple[str, ...],
    max_len: int,
    problems: list[Problem],
    *,
    required: bool = True,
    min_len: int = 0,
) -> None:
    value = get_in(m, *path)
    pointer = "/" + "/".join(path)
    if value is None:
        if required:
            problems.append(Problem(pointer, "is required", f"add {path[-1]}"))
    elif not isinstance(value, str):
        problems.append(Problem(pointer, "must be a string"))
    elif not min_len <= len(value) <= max_len:
        problems.append(
            Problem(
                pointer,
                f"has {len(value)} characters; Slack allows {min_len}-{max_len}",
                "shorten or lengthen it",
            )
        )


def _check_agent_view(m: dict[str, Any], events: list[Any], p: list[Problem]) -> None:
    """``features.agent_view``: present (else DMs are plain IMs), well formed, its events on."""
    ptr = "/features/agent_view"
    agent = get_in(m, "features", "agent_view")
    if get_in(m, "features", "assistant_view") is not None:
        p.append(
            Problem(
                "/features/assistant_view",
                "the assistant view is being deprecated by "
                "Slack (new apps can only use agent_view)",
                "replace it with features.agent_view (agent_description instead of "
                "assistant_description)",
                "warning",
            )
        )
    if agent is None:
        p.append(
            Problem(
                ptr,
                "the agent messaging experience is off: a DM with the bot is a "
                "plain IM, without threads, loading states or suggested prompts",
                "add features.agent_view with an agent_description",
                "warning",
            )
        )
        return
    if not isinstance(agent, dict):
        p.append(Problem(ptr, "must be a mapping", "copy it from manifests/slack/manifest.yaml"))
        return
    _check_str(
        m, ("features", "agent_view", "agent_description"), AGENT_DESCRIPTION_MAX, p, required=False
    )
    prompts = agent.get("suggested_prompts")
    if prompts is not None:
        if not isinstance(prompts, list) or len(prompts) > AGENT_PROMPTS_MAX:
            p.append(
                Problem(
                    f"{ptr}/suggested_prompts",
                    f"must be a list of at most {AGENT_PROMPTS_MAX} prompts",
                    "remove some (the bridge also offers the Dify app's suggested questions)",
                )
            )
        else:
            for i, item in enumerate(prompts):
                if not (
                    isinstance(item, dict)
                    and isinstance(item.get("title"), str)
                    and isinstance(item.get("message"), str)
                ):
                    p.append(
                        Problem(
                            f"{ptr}/suggested_prompts/{i}",
                            "needs a title and a message (both strings)",
                            "write {title: ..., message: ...}",
                        )
                    )
    for event, why in SLACK_AGENT_EVENTS.items():
        if event not in events:
            p.append(
                Problem(
                    "/settings/event_subscriptions/bot_events",
                    f"event {event} is not subscribed",
                    f"add {event} (to {why})",
                    "error" if event == "app_home_opened" else "warning",
                )
            )


def check_slack_manifest(
    m: dict[str, Any], *, command: str | None = None, speaker_email: bool = False
) -> list[Problem]:
    """Check structure, scopes against the enabled features, events and URLs."""
    p: list[Problem] = []
    _check_str(m, ("display_information", "name"), 35, p, min_len=1)
    _check_str(m, ("display_information", "description"), 140, p, required=False)
    _check_str(m, ("display_information", "long_description"), 4000, p, required=False, min_len=175)
    color = get_in(m, "display_information", "background_color")
    if color is not None and not (
        isinstance(color, str) and re.fullmatch(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", color)
    ):
        p.append(
            Problem(
                "/display_information/background_color",
                f"{color!r} is not a hex colour",
                'use a value like "#1d4ed8" (quoted in YAML)',
            )
        )
    _check_str(m, ("features", "bot_user", "display_name"), 80, p, min_len=1)
    if (
        get_in(m, "features", "app_home", "messages_tab_enabled") is not True
        or get_in(m, "features", "app_home", "messages_tab_read_only_enabled") is not False
    ):
        p.append(
            Problem(
                "/features/app_home",
                "direct messages are turned off (users see "
                '"Sending messages to this app has been turned off")',
                "set messages_tab_enabled: true and messages_tab_read_only_enabled: false",
            )
        )

    scopes = get_in(m, "oauth_config", "scopes", "bot")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        p.append(
            Problem(
                "/oauth_config/scopes/bot",
                "must be a list of scope names",
                "copy the list from manifests/slack/manifest.yaml",
            )
        )
        scopes = []
    needed = needed_slack_scopes(speaker_email=speaker_email)
    for scope, why in needed.items():
        if scope not in scopes:
            p.append(
                Problem(
                    "/oauth_config/scopes/bot",
                    f"scope {scope} is missing (needed to {why})",
                    f"add {scope}, push the manifest and reinstall the app",
                )
            )
    for scope in scopes:
        if scope not in needed and scope not in SLACK_EMAIL_SCOPES:
            p.append(
                Problem(
                    "/oauth_config/scopes/bot",
                    f"scope {scope} is not used by dify-bridge",
                    "remove it (ask only for what the bot needs)",
                    "warning",
                )
            )

    socket = get_in(m, "settings", "socket_mode_enabled") is True
    events = get_in(m, "settings", "event_subscriptions", "bot_events")
    if not isinstance(events, list):
        events = []
    for event, scope in SLACK_EVENT_SCOPES.items():
        if event not in events:
            p.append(
                Problem(
                    "/settings/event_subscriptions/bot_events",
                    f"event {event} is not subscribed",
                    f"add {event} (needs scope {scope})",
                )
            )
    for event in SLACK_LIFECYCLE_EVENTS:
        if event not in events:
            p.append(
                Problem(
                    "/settings/event_subscriptions/bot_events",
                    f"event {event} is not subscribed",
                    f"add {event} so uninstalls are noticed",
                    "warning",
                )
            )
    _check_agent_view(m, events, p)
    if get_in(m, "settings", "interactivity", "is_enabled") is not True:
        p.append(
            Problem(
                "/settings/interactivity/is_enabled",
                "interactivity is off: feedback and suggestion buttons will fail",
                "set is_enabled: true",
            )
        )

    cmds = get_in(m, "features", "slash_commands")
    if not isinstance(cmds, list) or not cmds or not isinstance(cmds[0], dict):
        p.append(
            Problem(
                "/features/slash_commands",
                "no slash command is declared",
                f"declare {command or '/ask'} (SLACK_SLASH_COMMAND)",
            )
        )
        cmds = []
    for i, c in enumerate(cmds):
        ptr = f"/features/slash_commands/{i}"
        name = c.get("command") if isinstance(c, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"/[a-z0-9_\-]{1,31}", name):
            p.append(
                Problem(
                    f"{ptr}/command",
                    f"{name!r} is not a slash command name",
                    "use a lowercase name starting with /, at most 32 characters",
                )
            )
        elif i == 0 and command and name != command:
            p.append(
                Problem(
                    f"{ptr}/command",
                    f"declares {name} but the bridge answers {command} (SLACK_SLASH_COMMAND)",
                    f"use {command} here or set SLACK_SLASH_COMMAND={name}",
                )
            )
        if not isinstance(c, dict) or not c.get("description"):
            p.append(Problem(f"{ptr}/description", "is required", "describe the command"))
        if not socket and isinstance(c, dict):
            _check_url(f"{ptr}/url", c.get("url"), p)

    if not socket:
        _check_url(
            "/settings/event_subscriptions/request_url",
            get_in(m, "settings", "event_subscriptions", "request_url"),
            p,
        )
        _check_url(
            "/settings/interactivity/request_url",
            get_in(m, "settings", "interactivity", "request_url"),
            p,
        )
    elif get_in(m, "settings", "event_subscriptions", "request_url"):
        p.append(
            Problem(
                "/settings/event_subscriptions/request_url",
                "is ignored with Socket Mode on",
                "remove it (render with --socket-mode)",
                "warning",
            )
        )
    return p
