"""Redis state: thread -> Dify conversation, event de-duplication and the per-thread FIFO lock.

Every key of one thread carries the same hash tag (``{<thread hash>}``) so that all of them land in
one Redis Cluster slot and the Lua scripts below stay cluster-safe. Only commands available in
Redis 6.2 are used (the embedded server is 6.2).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis

from app.pipeline.model import ThreadKey
from app.state.redis_batch import RedisBatcher

log = structlog.get_logger(__name__)

# A running task and a Stop request outlive no answer by much (Dify ends a run within minutes).
_TASK_TTL = 1800


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    conversation_id: str
    user: str
    route: str
    created: float
    last_used: float
    name: str = ""


class ConversationStore(Protocol):
    """Where a thread's Dify conversation is remembered."""

    async def get_conversation(self, thread: ThreadKey) -> ConversationRecord | None: ...

    async def save_conversation(
        self, thread: ThreadKey, *, conversation_id: str, user: str, route: str
    ) -> None: ...

    async def forget(self, thread: ThreadKey) -> None: ...


# Enqueue (if not queued yet, or queued again after our own lease expired) and try to take the
# lock, in one round trip. The holder is recorded (field "!holder"), so a later message with an
# earlier timestamp queues behind the answer already running instead of taking the lock beside
# it. Dead entries (lease expired) are dropped. Returns 1 = ours, 0 = wait for someone else,
# 2 = we are first but still settling (young): try again once the settle time is over.
_ACQUIRE = """
local now = tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
local holder = redis.call('HGET', KEYS[2], '!holder')
if holder == ARGV[1] then return 1 end
if holder then
  local hexp = tonumber(redis.call('HGET', KEYS[2], holder) or '0')
  if hexp >= now and redis.call('ZSCORE', KEYS[1], holder) then return 0 end
  redis.call('ZREM', KEYS[1], holder)
  redis.call('HDEL', KEYS[2], holder, '!holder')
end
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if head == ARGV[1] then
    if tonumber(ARGV[3]) == 1 then return 2 end
    redis.call('HSET', KEYS[2], '!holder', ARGV[1])
    return 1
  end
  local exp = tonumber(redis.call('HGET', KEYS[2], head) or '0')
  if exp >= now then return 0 end
  redis.call('ZREM', KEYS[1], head)
  redis.call('HDEL', KEYS[2], head)
end
"""

# Extend our lease only while we are still queued (compare before write).
_EXTEND = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

# What the first stream event tells us, applied together (see save_stream_ids).
_SAVE_IDS = """
if ARGV[2] ~= '' then
  redis.call('HSETNX', KEYS[1], 'created', ARGV[1])
  redis.call('HSET', KEYS[1], 'conversation_id', ARGV[2], 'user', ARGV[3], 'route', ARGV[4],
             'last_used', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('SET', KEYS[2], 1, 'EX', ARGV[5])
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], 'task_id', ARGV[6], 'route', ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
return 1
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[2], '!holder') == ARGV[1] then redis.call('HDEL', KEYS[2], '!holder') end
return 1
"""


class LockTimeout(Exception):
    """Waited too long for the thread's earlier answer to finish."""


class ThreadLock:
    """A fair (FIFO) lock per thread shared by every replica.

    Waiters are ordered by the message's own timestamp, so two quick messages are answered in the
    order they were written even when they reach different replicas. Each waiter and the holder keep
    a lease alive; a crashed replica's entry expires and the next waiter moves up.
    """

    def __init__(
        self,
        redis: RedisBatcher,
        queue_key: str,
        lease_key: str,
        *,
        order: float,
        ttl: float,
        wait_timeout: float = 300.0,
        poll: float = 0.05,
        settle: float = 0.3,
        on_enter: tuple[tuple[Any, ...], ...] = (),
        each_try: tuple[tuple[Any, ...], ...] = (),
    ) -> None:
        self._redis = redis
        # Commands sent in the same round trip as the first attempt (e.g. "thread is known"),
        # and after every attempt (e.g. read the conversation): saves round trips per answer.
        self._on_enter = on_enter
        self._each_try = each_try
        #: The replies to ``each_try`` of the attempt that took the lock.
        self.replies: list[Any] = []
        self._keys = [queue_key, lease_key]
        self._order = order
        self._ttl = ttl
        self._wait_timeout = wait_timeout
        self._poll = poll
        # A message younger than this does not take a free lock yet: an earlier message of the
        # thread may still be on its way through another replica and must go first.
        self._settle = settle
        self.token = secrets.token_hex(8)
        self._keeper: asyncio.Task[None] | None = None

    def _now_ms(self) -> int:
        return int(time.time() * 1000)

    async def _lease(self) -> None:
        exp = self._now_ms() + int(self._ttl * 1000)
        await self._redis.eval(_EXTEND, self._keys, (self.token, exp, int(self._ttl * 10_000)))

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._lease()
            except Exception as e:  # Redis blip: the next round tries again
                log.warning("lock.extend_failed", error=type(e).__name__)

    async def acquire(self) -> None:
        self._keeper = asyncio.create_task(self._keep_alive())
        deadline = time.monotonic() + self._wait_timeout
        # Never wait longer than ``settle`` for it, whatever the sender's clock says.
        settle_until = min(self._order + self._settle, time.time() + self._settle)
        pexpire = int(self._ttl * 10_000)
        before = self._on_enter
        try:
            while True:
                now = time.time()
                attempt: tuple[Any, ...] = (
                    "EVAL",
                    _ACQUIRE,
                    2,
                    *self._keys,
                    self.token,
                    int(now * 1000),
                    1 if now < settle_until else 0,
                    self._order,
                    int(now * 1000) + int(self._ttl * 1000),
                    pexpire,
                )
                replies = await self._redis.run(*before, attempt, *self._each_try)
                res = replies[len(before)]
                self.replies = replies[len(before) + 1 :]
                before = ()
                if res == 1:
                    return
                if time.monotonic() > deadline:
                    raise LockTimeout("thread is busy")
                if res == 2:  # first in line: one more look once the settle time is over
                    # (+2 ms: the loop may wake a timer early by its clock resolution, and a
                    # look that comes too early costs a further round trip.)
                    await asyncio.sleep(max(settle_until - time.time(), 0.0) + 0.002)
                else:
                    await asyncio.sleep(self._poll)
        except BaseException:
            await self.release()
            raise

    async def release(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        try:
            await self._redis.eval(_RELEASE, self._keys, (self.token,))
        except Exception as e:  # the lease expires by itself
            log.warning("lock.release_failed", error=type(e).__name__)

    async def __aenter__(self) -> ThreadLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


class RedisStore:
    """The Redis implementation of the conversation store, dedup and thread lock."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "db",
        conversation_ttl: float = 30 * 86400,
        dedup_ttl: int = 900,
        lock_ttl: float = 30.0,
    ) -> None:
        self.redis = redis
        #: The hot path's commands go through here (auto-pipelined under load).
        self.batch = RedisBatcher(redis)
        self.prefix = prefix
        self.conversation_ttl = int(conversation_ttl)
        self.dedup_ttl = dedup_ttl
        self.lock_ttl = lock_ttl

    def k(self, thread: ThreadKey, what: str) -> str:
        """Key for one thread's data; the hash tag keeps a thread's keys in one Cluster slot."""
        return f"{self.prefix}:{{{thread.hashed}}}:{what}"

    def global_key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def get_conversation(self, thread: ThreadKey) -> ConversationRecord | None:
        return _record(await self.redis.hgetall(self.k(thread, "conv")))

    async def save_conversation(
        self, thread: ThreadKey, *, conversation_id: str, user: str, route: str
    ) -> None:
        await self.save_stream_ids(thread, route=route, user=user, conversation_id=conversation_id)

    async def save_stream_ids(
        self,
        thread: ThreadKey,
        *,
        route: str,
        user: str,
        conversation_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        """Store what the first stream event told us: the thread's conversation (as soon as it is
        known, so a quick follow-up continues it) and the running task (for Stop buttons)."""
        if not conversation_id and not task_id:
            return
        keys = (self.k(thread, "conv"), self.k(thread, "known"), self.k(thread, "task"))
        await self.batch.eval(
            _SAVE_IDS,
            keys,
            (
                repr(time.time()),
                conversation_id or "",
                user,
                route,
                self.conversation_ttl,
                task_id or "",
                _TASK_TTL,
            ),
        )

    async def running_task(self, thread: ThreadKey) -> dict[str, str]:
        """The task streaming in ``thread`` now (``task_id``, ``route``), or an empty dict."""
        raw: dict[Any, Any] = await self.redis.hgetall(self.k(thread, "task"))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def request_stop(self, thread: ThreadKey, task_id: str) -> None:
        """Note that the user stopped ``task_id`` (any replica may have received the click)."""
        await self.redis.set(self.k(thread, "stopped"), task_id, ex=_TASK_TTL)

    async def end_stream(self, thread: ThreadKey, *, touch: bool = False) -> str | None:
        """The stream is over: forget its task; returns the task id a Stop click named, if any.
        ``touch`` also refreshes the conversation's TTL and last-used time (a continued one)."""
        commands: list[tuple[Any, ...]] = [
            ("DEL", self.k(thread, "task")),
            ("GETDEL", self.k(thread, "stopped")),
        ]
        if touch:
            conv = self.k(thread, "conv")
            # HSET before EXPIRE: a hash this creates (the conversation vanished meanwhile)
            # expires.
            commands += [
                ("HSET", conv, "last_used", time.time()),
                ("EXPIRE", conv, self.conversation_ttl),
                ("EXPIRE", self.k(thread, "known"), self.conversation_ttl),
            ]
        res = await self.batch.run(*commands)
        return _s(res[1]) if res[1] is not None else None

    async def set_conversation_name(self, thread: ThreadKey, name: str) -> None:
        await self.batch.call("HSET", self.k(thread, "conv"), "name", name)

    async def forget(self, thread: ThreadKey) -> None:
        await self.redis.delete(self.k(thread, "conv"))

    async def is_known(self, thread: ThreadKey) -> bool:
        return bool(await self.redis.exists(self.k(thread, "known")))

    def _dedup_key(self, raw: str) -> str:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:24]
        return f"{self.prefix}:dedup:{{{digest}}}"

    async def claim(self, *event_keys: str) -> bool:
        """Claim the keys in order with SET NX EX; False if one was seen before (a retry or a
        duplicate). Callers pass the most specific key (the event id) first.

        The value is a token of this call: when a connection drops after Redis applied the SET
        but before we read the answer, the client's retry finds the key; reading our own token
        back tells "our own write" from "someone else's delivery", so a Redis restart never
        turns a message into a duplicate of itself.
        """
        owner = secrets.token_hex(8)
        for raw in event_keys:
            key = self._dedup_key(raw)
            if await self.batch.call("SET", key, owner, "NX", "EX", self.dedup_ttl):
                continue
            current = await self.batch.call("GET", key)
            if current is None or _s(current) != owner:
                # Stop here: claiming the later keys too would let two deliveries of one event
                # (a retry racing the original) each take one key, and both give up.
                return False
        return True

    def lock(
        self,
        thread: ThreadKey,
        *,
        order: float,
        wait_timeout: float = 300.0,
        mark_known: bool = False,
        read_conversation: bool = False,
        settle: float = 0.3,
    ) -> ThreadLock:
        """The thread's FIFO lock. ``mark_known`` also remembers that the bot takes part in the
        thread, in the same round trip as the first attempt to take the lock;
        ``read_conversation`` reads the conversation in the round trip that takes it (see
        :meth:`conversation_of`). ``settle``: how long a new message lets an earlier one of
        the thread, still on its way through another replica, go first (0 for a thread's first
        message)."""
        known = (("SET", self.k(thread, "known"), 1, "EX", self.conversation_ttl),)
        conv = (("HGETALL", self.k(thread, "conv")),)
        return ThreadLock(
            self.batch,
            self.k(thread, "lockq"),
            self.k(thread, "lockl"),
            order=order,
            ttl=self.lock_ttl,
            wait_timeout=wait_timeout,
            on_enter=known if mark_known else (),
            each_try=conv if read_conversation else (),
            settle=settle,
        )

    @staticmethod
    def conversation_of(lock: ThreadLock) -> ConversationRecord | None:
        """The conversation read while taking a lock made with ``read_conversation``."""
        return _record(lock.replies[0]) if lock.replies else None

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 2.0))
        except Exception:
            return False


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _record(raw: dict[Any, Any]) -> ConversationRecord | None:
    if not raw:
        return None
    d = {_s(k): _s(v) for k, v in raw.items()}
    if not d.get("conversation_id"):
        return None
    return ConversationRecord(
        conversation_id=d["conversation_id"],
        user=d.get("user", ""),
        route=d.get("route", ""),
        created=float(d.get("created", 0) or 0),
        last_used=float(d.get("last_used", 0) or 0),
        name=d.get("name", ""),
    )
