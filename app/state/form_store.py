"""Pending Human Input forms in Redis, so any replica (or this one after a restart) can take
the click, and the first click wins.

One hash per form, keyed by the form's own key (``{prefix}:form:{<key>}``): a click names the
form, not the thread. ``status`` moves open -> submitting -> decided | expired | elsewhere;
``claim`` is one Lua script, so two clicks on two replicas cannot both send the form to Dify.
A claim whose replica died mid-submit is taken over after ``STALE_CLAIM`` seconds. Redis 6.2
commands only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from app.pipeline.forms import HumanForm
from app.pipeline.model import ThreadKey

# A submit takes a request timeout at most (30 s); longer means its replica is gone.
STALE_CLAIM = 90.0
# How long a decided form is remembered after its expiry (a late click still hears who decided).
KEEP_AFTER = 86_400
# Forms without an expiry time are kept this long.
DEFAULT_TTL = 7 * 86_400

# KEYS[1] the form; ARGV: now, by_id, by_name, action, action title, stale seconds.
# Returns {"ok"} or {status, by_name, action title} of the earlier decision ({"missing"}).
_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing'} end
if st == 'submitting' then
  local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
  if tonumber(ARGV[1]) - since < tonumber(ARGV[6]) then
    return {st, redis.call('HGET', KEYS[1], 'by_name') or '',
            redis.call('HGET', KEYS[1], 'action_title') or ''}
  end
elseif st ~= 'open' then
  return {st, redis.call('HGET', KEYS[1], 'by_name') or '',
          redis.call('HGET', KEYS[1], 'action_title') or ''}
end
redis.call('HSET', KEYS[1], 'status', 'submitting', 'since', ARGV[1], 'by_id', ARGV[2],
           'by_name', ARGV[3], 'action', ARGV[4], 'action_title', ARGV[5])
return {'ok'}
"""

# Back to open after a refused submit, only if the claim is still ours (ARGV[1] = by_id).
_RELEASE = """
if redis.call('HGET', KEYS[1], 'status') == 'submitting'
   and redis.call('HGET', KEYS[1], 'by_id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'open')
  redis.call('HDEL', KEYS[1], 'since', 'by_id', 'by_name', 'action', 'action_title')
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class PendingForm:
    """Everything needed to answer a form and follow its run, whichever replica gets the click."""

    form: HumanForm
    thread: ThreadKey
    route: str
    run_id: str
    token: str
    user: str  # the Dify user of the run (the submit and the re-attach must use it)
    asker: str  # the platform user id of whoever asked the question that led here
    conversation_id: str = ""
    message_id: str = ""
    # Characters of the Dify message shown before this form (a chatflow's stored message
    # holds the whole answer; only what follows the form is new).
    before: int = 0
    status: str = "open"
    by_name: str = ""
    action_title: str = ""


@dataclass(frozen=True, slots=True)
class Claim:
    ok: bool
    status: str = ""
    by_name: str = ""
    action_title: str = ""


class FormStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, form_key: str) -> str:
        return f"{self._prefix}:form:{{{form_key}}}"

    async def save(self, p: PendingForm) -> None:
        t = p.thread
        fields: dict[FieldT, EncodableT] = {
            "form": json.dumps(p.form.to_json(), ensure_ascii=False),
            "thread": json.dumps([t.platform, t.workspace, t.channel, t.thread]),
            "route": p.route,
            "run_id": p.run_id,
            "token": p.token,
            "user": p.user,
            "asker": p.asker,
            "conversation_id": p.conversation_id,
            "message_id": p.message_id,
            "before": str(p.before),
            "status": "open",
        }
        ttl = DEFAULT_TTL
        if p.form.expires_at is not None:
            ttl = max(60, int(p.form.expires_at - time.time()) + KEEP_AFTER)
        k = self.key(p.form.key)
        await self._redis.hset(k, mapping=fields)
        await self._redis.expire(k, ttl)

    async def get(self, form_key: str) -> PendingForm | None:
        raw: dict[Any, Any] = await self._redis.hgetall(self.key(form_key))
        if not raw:
            return None
        d = {_s(k): _s(v) for k, v in raw.items()}
        try:
            form = HumanForm.from_json(json.loads(d["form"]))
            platform, workspace, channel, thread = json.loads(d["thread"])
        except (KeyError, ValueError, TypeError):
            return None
        return PendingForm(
            form=form,
            thread=ThreadKey(platform, workspace, channel, thread),
            route=d.get("route", ""),
            run_id=d.get("run_id", ""),
            token=d.get("token", ""),
            user=d.get("user", ""),
            asker=d.get("asker", ""),
            conversation_id=d.get("conversation_id", ""),
            message_id=d.get("message_id", ""),
            before=int(d.get("before", "0") or 0) if d.get("before", "0").isdigit() else 0,
            status=d.get("status", "open"),
            by_name=d.get("by_name", ""),
            action_title=d.get("action_title", ""),
        )

    async def claim(
        self, form_key: str, *, by_id: str, by_name: str, action: str, action_title: str
    ) -> Claim:
        res = await self._redis.eval(
            _CLAIM,
            1,
            self.key(form_key),
            repr(time.time()),
            by_id,
            by_name,
            action,
            action_title,
            STALE_CLAIM,
        )
        parts = [_s(x) for x in res]
        if parts[0] == "ok":
            return Claim(True)
        status, by_name, title = [*parts, "", ""][:3]
        return Claim(False, status, by_name, title)

    async def release(self, form_key: str, by_id: str) -> None:
        await self._redis.eval(_RELEASE, 1, self.key(form_key), by_id)

    async def close(
        self, form_key: str, status: str, *, by_name: str = "", action_title: str = ""
    ) -> None:
        """Mark the form decided (by us), expired or answered elsewhere; later clicks hear it."""
        mapping: dict[FieldT, EncodableT] = {"status": status}
        if by_name:
            mapping["by_name"] = by_name
        if action_title:
            mapping["action_title"] = action_title
        await self._redis.hset(self.key(form_key), mapping=mapping)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


__all__ = ["Claim", "FormStore", "PendingForm"]
