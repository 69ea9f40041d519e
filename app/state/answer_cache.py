"""One-shot answer cache: the same frequent slash-command question, answered from Redis.

Off by default (route ``answer_cache_ttl: 0``). Keys are per route and per normalized question,
hashed (the question text is never a Redis key). The pipeline only uses it for slash commands
with no conversation in the thread, and only for answers that are not personal (see
:func:`cacheable`).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config.settings import Route
from app.pipeline.model import IncomingMessage, Kind, Source
from app.state.store import ConversationStore

log = structlog.get_logger(__name__)

_SPACE = re.compile(r"\s+")
_EDGE = string.punctuation + "¿¡…“”‘’«»„"
# Inputs that make an answer personal: it must not be served to somebody else.
_PERSONAL_SOURCES = frozenset({"speaker_id", "speaker_name", "speaker_email", "history"})


def normalize_question(text: str) -> str:
    """Casefold, collapse whitespace, strip punctuation at both ends."""
    return _SPACE.sub(" ", text.casefold()).strip().strip(_EDGE).strip()


def cacheable(route: Route, *, found_entities: bool) -> bool:
    """Whether answers on ``route`` may be shared: cache on, no personal inputs mapped, and no
    personal data detected in the question."""
    if route.config.answer_cache_ttl <= 0 or found_entities:
        return False
    return not (set(route.config.inputs.values()) & _PERSONAL_SOURCES)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    sources: tuple[Source, ...] = ()


class AnswerCache:
    """Answers in Redis under ``<prefix>:acache:<route>:<hash>`` with the route's TTL."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, route: str, question: str) -> str | None:
        """The Redis key, or None for a question that normalizes to nothing."""
        norm = normalize_question(question)
        if not norm:
            return None
        digest = hashlib.sha256(f"{route}\0{norm}".encode()).hexdigest()[:32]
        return f"{self._prefix}:acache:{route}:{digest}"

    async def get(self, route: str, question: str) -> CachedAnswer | None:
        key = self.key(route, question)
        raw = await self._redis.get(key) if key else None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return CachedAnswer(
                text=str(data["text"]),
                sources=tuple(Source(**s) for s in data.get("sources", [])),
            )
        except (ValueError, KeyError, TypeError):
            return None  # an entry from an incompatible version: a miss

    async def put(
        self, route: str, question: str, text: str, sources: list[Source], ttl: int
    ) -> None:
        key = self.key(route, question)
        if not key or ttl <= 0 or not text.strip():
            return
        body: dict[str, Any] = {
            "text": text,
            "sources": [
                {
                    "position": s.position,
                    "title": s.title,
                    "snippet": s.snippet,
                    "url": s.url,
                    "score": s.score,
                }
                for s in sources
            ],
        }
        await self._redis.set(key, json.dumps(body, ensure_ascii=False), ex=ttl)


@dataclass(frozen=True, slots=True)
class CachePlan:
    """How one message uses the cache: ``one_shot`` turns store no conversation; after a miss
    the answer is stored under ``question``; ``hit`` answers without Dify."""

    one_shot: bool = False
    question: str | None = None
    hit: CachedAnswer | None = None


async def plan(
    cache: AnswerCache,
    store: ConversationStore,
    route: Route,
    msg: IncomingMessage,
    *,
    found_entities: bool,
    count: Callable[[str], None],
) -> CachePlan:
    """Decide for one message: only slash commands on a route with the cache on and no
    conversation in the thread; ``count("hit"|"miss")`` feeds the metrics. Redis trouble
    means "no cache", never a failed answer."""
    if msg.kind is not Kind.COMMAND or route.config.answer_cache_ttl <= 0:
        return CachePlan()
    try:
        if await store.get_conversation(msg.key) is not None:
            return CachePlan()  # the thread has context: a cached answer would ignore it
        if msg.attachments or not cacheable(route, found_entities=found_entities):
            return CachePlan(one_shot=True)
        hit = await cache.get(route.name, msg.text)
    except RedisError as e:
        log.warning("answer_cache.unavailable", error=type(e).__name__)
        return CachePlan(one_shot=True)
    count("hit" if hit else "miss")
    return CachePlan(one_shot=True, question=None if hit else msg.text, hit=hit)


__all__ = ["AnswerCache", "CachePlan", "CachedAnswer", "cacheable", "normalize_question", "plan"]
