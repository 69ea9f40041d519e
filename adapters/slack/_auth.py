"""Who we are in each workspace: bolt's ``authorize``, the Redis installation store, OAuth state.

Bolt runs ``authorize`` before the ack. It must not make a Web API call or a Redis round trip on
every request, so both implementations here answer from memory after the first time:

* :class:`SingleTeamAuthorize` (``SLACK_BOT_TOKEN``): one ``auth.test`` at start-up, then cached.
* :class:`CachedInstallationAuthorize` (OAuth): one Redis read per workspace per few minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from adapters.slack._webapi import SlackApi, SlackCallError, error_code
from adapters.slack.hints import SLACK_AUTH_HINTS

log = structlog.get_logger(__name__)

_NONE = "-"


def _who(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None) -> str:
    team = _NONE if is_enterprise_install else (team_id or _NONE)
    return f"{enterprise_id or _NONE}:{team}"


class RedisInstallationStore(AsyncInstallationStore):
    """Slack installations (one per workspace) in Redis, under the adapter's key prefix
    (``PlatformStore.key_prefix``, ``<prefix>:slack``).

    Keys: ``<prefix>:slack:bot:<enterprise>:<team>`` and ``<prefix>:slack:inst:<enterprise>:<team>``
    (``-`` for an absent id), JSON of slack_sdk's models. Tokens never leave this module in logs.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, what: str, who: str) -> str:
        return f"{self._prefix}:{what}:{who}"

    @property
    def logger(self) -> Any:
        return log

    async def async_save(self, installation: Installation) -> None:
        who = _who(
            installation.enterprise_id, installation.team_id, installation.is_enterprise_install
        )
        await self._redis.set(self._key("inst", who), json.dumps(installation.__dict__))
        await self.async_save_bot(installation.to_bot())
        log.info(
            "slack.installed", team=installation.team_id, enterprise=installation.enterprise_id
        )

    async def async_save_bot(self, bot: Bot) -> None:
        who = _who(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        await self._redis.set(self._key("bot", who), json.dumps(bot.__dict__))

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        raw = await self._redis.get(
            self._key("bot", _who(enterprise_id, team_id, is_enterprise_install))
        )
        if raw is None:
            return None
        try:
            return Bot(**json.loads(raw))
        except (ValueError, TypeError) as e:
            log.error("slack.installation_corrupt", team=team_id, error=type(e).__name__)
            return None

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        who = _who(enterprise_id, team_id, is_enterprise_install)
        raw = await self._redis.get(self._key("inst", who))
        if raw is None:
            return None
        try:
            inst = Installation(**json.loads(raw))
        except (ValueError, TypeError) as e:
            log.error("slack.installation_corrupt", team=team_id, error=type(e).__name__)
            return None
        if user_id is not None and inst.user_id != user_id:
            return None
        return inst

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._redis.delete(self._key("bot", _who(enterprise_id, team_id, False)))

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        await self._redis.delete(self._key("inst", _who(enterprise_id, team_id, False)))


class SignedStateStore(AsyncOAuthStateStore):
    """OAuth ``state``: signed with ``SLACK_STATE_SECRET``, expiring, usable once (Redis SET NX).

    The signature lets any replica check a state another replica issued; the Redis claim stops a
    replayed callback.
    """

    def __init__(self, secret: str, redis: Redis, prefix: str, *, expiration: int = 600) -> None:
        self._secret = secret.encode()
        self._redis = redis
        self._prefix = prefix
        self._expiration = expiration

    @property
    def logger(self) -> Any:
        return log

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()[:32]

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        payload = f"{secrets.token_urlsafe(16)}.{int(time.time()) + self._expiration}"
        return f"{payload}.{self._sign(payload)}"

    async def async_consume(self, state: str) -> bool:
        nonce, _, rest = state.partition(".")
        expiry, _, sig = rest.partition(".")
        if not (nonce and expiry.isdigit() and sig):
            return False
        if not hmac.compare_digest(sig, self._sign(f"{nonce}.{expiry}")):
            return False
        if int(expiry) < time.time():
            return False
        key = f"{self._prefix}:state:{nonce}"
        return bool(await self._redis.set(key, 1, nx=True, ex=self._expiration))


class SingleTeamAuthorize(AsyncAuthorize):
    """``SLACK_BOT_TOKEN`` mode: ``auth.test`` once, then each request is authorized from memory."""

    def __init__(self, api: SlackApi) -> None:
        self._api = api
        self._result: AuthorizeResult | None = None
        self._lock = asyncio.Lock()
        # Slack's error code of the last failed auth.test ("transport": not reachable).
        self.last_error = ""

    @property
    def result(self) -> AuthorizeResult | None:
        return self._result

    async def warm(self) -> AuthorizeResult | None:
        """Call ``auth.test`` unless it already succeeded; None (logged) if the token is refused."""
        async with self._lock:
            if self._result is not None:
                return self._result
            try:
                data = await self._api.call("auth.test")
            except Exception as e:
                self.last_error = str(error_code(e, "") or type(e).__name__)
                _, setting, fix = auth_problem(self.last_error)
                log.error("slack.auth_test_failed", error=self.last_error, setting=setting, fix=fix)
                return None
            self._result = AuthorizeResult(
                enterprise_id=data.get("enterprise_id") or None,
                team_id=data.get("team_id"),
                team=data.get("team"),
                url=data.get("url"),
                bot_user_id=data.get("user_id"),
                bot_id=data.get("bot_id"),
                bot_token=self._api.token,
            )
            return self._result

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        return self._result or await self.warm()


def auth_problem(code: str) -> tuple[str, str, str]:
    """(reason, setting, fix) for a failed ``auth.test`` of SLACK_BOT_TOKEN."""
    if code == "transport" or code.startswith("http_5"):
        return (
            f"Slack cannot be reached ({code})",
            "SLACK_API_URL",
            "check outbound HTTPS to slack.com (proxy, firewall, DNS)",
        )
    return (
        f"Slack refused SLACK_BOT_TOKEN (auth.test: {code})",
        "SLACK_BOT_TOKEN",
        SLACK_AUTH_HINTS.get(code, "check SLACK_BOT_TOKEN (the Bot User OAuth Token, xoxb-…)"),
    )


class CachedInstallationAuthorize(AsyncAuthorize):
    """OAuth mode: the workspace's bot token from the installation store, cached for ``ttl`` s."""

    def __init__(self, store: AsyncInstallationStore, *, ttl: float = 300.0) -> None:
        self._store = store
        self._ttl = ttl
        self._cache: dict[str, tuple[float, AuthorizeResult]] = {}

    def forget(self, enterprise_id: str | None, team_id: str | None) -> None:
        self._cache.pop(_who(enterprise_id, team_id, False), None)

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        is_org = bool(context.is_enterprise_install)
        who = _who(enterprise_id, team_id, is_org)
        hit = self._cache.get(who)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        bot = await self._store.async_find_bot(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=is_org
        )
        if bot is None:
            log.warning("slack.not_installed", team=team_id, enterprise=enterprise_id)
            return None
        result = AuthorizeResult(
            enterprise_id=bot.enterprise_id,
            team_id=bot.team_id,
            team=bot.team_name,
            bot_user_id=bot.bot_user_id,
            bot_id=bot.bot_id,
            bot_token=bot.bot_token,
            bot_scopes=bot.bot_scopes,
        )
        if len(self._cache) > 10_000:  # many workspaces: drop the oldest entries
            for k in list(self._cache)[:1000]:
                del self._cache[k]
        self._cache[who] = (now + self._ttl, result)
        return result


__all__ = [
    "CachedInstallationAuthorize",
    "RedisInstallationStore",
    "SignedStateStore",
    "SingleTeamAuthorize",
    "SlackCallError",
]
