"""A fake of the Slack Web API methods the admin tools call, served on 127.0.0.1 port 0.

Methods: ``auth.test`` (with the ``x-oauth-scopes`` header Slack sends), ``apps.connections.open``,
``apps.manifest.validate`` and ``apps.manifest.update``. Like Slack, every answer is HTTP 200 with
``{"ok": false, "error": ...}`` on failure; an invalid manifest adds ``errors: [{message,
pointer}]``. Tokens may come as ``Authorization: Bearer`` or as the ``token`` form field.

Usage::

    async with FakeSlackManifestApi() as slack:
        slack.bot_tokens["xoxb-1"] = BotToken(scopes=("chat:write",))
        settings.slack_api_url = slack.api_url       # "http://127.0.0.1:<port>/api/"
        ...
        assert slack.calls[-1].method == "apps.manifest.update"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class BotToken:
    scopes: tuple[str, ...]
    team: str = "Acme"
    team_id: str = "T0ACME"
    user: str = "dify-assistant"


@dataclass
class Call:
    method: str
    form: dict[str, str]
    token: str | None


@dataclass
class FakeSlackManifestApi:
    bot_tokens: dict[str, BotToken] = field(default_factory=dict)
    app_tokens: set[str] = field(default_factory=set)
    config_tokens: set[str] = field(default_factory=set)
    expired_tokens: set[str] = field(default_factory=set)
    # app id -> the manifest last stored by apps.manifest.update
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Extra Slack-side validation errors to report (as Slack would for rules we don't model).
    extra_errors: list[dict[str, str]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def __aenter__(self) -> FakeSlackManifestApi:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            form = {
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in (await request.json()).items()
            }
        else:
            form = {k: str(v) for k, v in (await request.post()).items()}
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        token = token or form.get("token")
        self.calls.append(Call(method, form, token))
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "apps.manifest.validate": self._validate,
            "apps.manifest.update": self._update,
        }.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        if token is None:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token in self.expired_tokens:
            return web.json_response({"ok": False, "error": "token_expired"})
        return await handler(token, form)

    async def _auth_test(self, token: str, form: dict[str, str]) -> web.Response:
        bot = self.bot_tokens.get(token)
        if bot is None:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = {
            "ok": True,
            "url": f"https://{bot.team.lower()}.slack.com/",
            "team": bot.team,
            "user": bot.user,
            "team_id": bot.team_id,
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
            "is_enterprise_install": False,
        }
        return web.json_response(body, headers={"x-oauth-scopes": ",".join(bot.scopes)})

    async def _connections_open(self, token: str, form: dict[str, str]) -> web.Response:
        if token not in self.app_tokens:
            error = "not_allowed_token_type" if token in self.bot_tokens else "invalid_auth"
            return web.json_response({"ok": False, "error": error})
        return web.json_response({"ok": True, "url": "wss://127.0.0.1/link/?ticket=fake"})

    def _manifest_errors(self, form: dict[str, str]) -> tuple[str | None, list[dict[str, str]]]:
        try:
            manifest = json.loads(form.get("manifest", ""))
        except ValueError:
            return "invalid_manifest", [{"message": "Manifest is not valid JSON", "pointer": "/"}]
        if not isinstance(manifest, dict):
            return "invalid_manifest", [{"message": "Manifest must be an object", "pointer": "/"}]
        settings = manifest.get("settings") or {}
        socket = settings.get("socket_mode_enabled") is True
        errors: list[dict[str, str]] = []
        if not socket and not (settings.get("event_subscriptions") or {}).get("request_url"):
            errors.append(
                {
                    "message": "Event Subscription requires either Request URL or Socket "
                    "Mode Enabled",
                    "pointer": "/settings/event_subscriptions",
                }
            )
        interactivity = settings.get("interactivity") or {}
        if interactivity.get("is_enabled") and not socket and not interactivity.get("request_url"):
            errors.append(
                {
                    "message": "Interactivity requires a Request URL",
                    "pointer": "/settings/interactivity",
                }
            )
        errors += self.extra_errors
        return ("invalid_manifest" if errors else None), errors

    def _app_error(self, token: str, form: dict[str, str]) -> str | None:
        if token not in self.config_tokens:
            return "not_allowed_token_type" if token in self.bot_tokens else "invalid_auth"
        if form.get("app_id") and form["app_id"] not in self.apps:
            return "invalid_app_id"
        return None

    async def _validate(self, token: str, form: dict[str, str]) -> web.Response:
        if (error := self._app_error(token, form)) is not None:
            return web.json_response({"ok": False, "error": error})
        error, errors = self._manifest_errors(form)
        if error:
            return web.json_response({"ok": False, "error": error, "errors": errors})
        return web.json_response({"ok": True})

    async def _update(self, token: str, form: dict[str, str]) -> web.Response:
        if (error := self._app_error(token, form)) is not None:
            return web.json_response({"ok": False, "error": error})
        if not form.get("app_id"):
            return web.json_response({"ok": False, "error": "invalid_app_id"})
        error, errors = self._manifest_errors(form)
        if error:
            return web.json_response({"ok": False, "error": error, "errors": errors})
        manifest = json.loads(form["manifest"])
        old = self.apps.get(form["app_id"]) or {}
        old_scopes = ((old.get("oauth_config") or {}).get("scopes") or {}).get("bot")
        new_scopes = ((manifest.get("oauth_config") or {}).get("scopes") or {}).get("bot")
        self.apps[form["app_id"]] = manifest
        return web.json_response(
            {"ok": True, "app_id": form["app_id"], "permissions_updated": old_scopes != new_scopes}
        )
