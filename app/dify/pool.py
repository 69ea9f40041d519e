"""One ``httpx.AsyncClient`` per Dify base URL, one client and breaker per app."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import structlog

from app.dify.breaker import CircuitBreaker, State
from app.dify.client import DifyClient
from app.dify.wire import DifyTimeouts, RetryPolicy, Transport, make_http_client

log = structlog.get_logger("app.dify")


class DifyClientPool:
    """One ``httpx.AsyncClient`` per base URL; one client and breaker per (base URL, key)."""

    def __init__(
        self,
        *,
        transport: Transport = "aiohttp",
        timeouts: DifyTimeouts = DifyTimeouts(),
        retry: RetryPolicy = RetryPolicy(),
        breaker_failures: int = 5,
        breaker_reset_seconds: float = 30.0,
        on_breaker_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        """``on_breaker_change(base_url, before, after)`` is called on every breaker transition
        (for metrics); transitions are also logged as ``dify_breaker``."""
        if transport not in ("aiohttp", "httpx"):
            raise ValueError("transport must be 'aiohttp' or 'httpx'")
        self.transport: Transport = transport
        self._timeouts = timeouts
        self._retry = retry
        self._breaker_failures = breaker_failures
        self._breaker_reset = breaker_reset_seconds
        self._http: dict[str, httpx.AsyncClient] = {}
        self._clients: dict[tuple[str, str], DifyClient] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._on_breaker_change = on_breaker_change

    @staticmethod
    def _key(base_url: str, api_key: str) -> tuple[str, str]:
        # The dict key never holds the API key itself.
        return base_url.rstrip("/"), hashlib.sha256(api_key.encode()).hexdigest()

    def breaker(self, base_url: str, api_key: str) -> CircuitBreaker:
        """The breaker shared by every call to this app."""
        k = self._key(base_url, api_key)
        b = self._breakers.get(k)
        if b is None:
            url = k[0]

            def changed(before: State, after: State) -> None:
                log.warning("dify_breaker", base_url=url, before=before, after=after)
                if self._on_breaker_change is not None:
                    self._on_breaker_change(url, before, after)

            b = CircuitBreaker(
                failures=self._breaker_failures,
                reset_seconds=self._breaker_reset,
                on_change=changed,
            )
            self._breakers[k] = b
        return b

    def client(self, base_url: str, api_key: str) -> DifyClient:
        """A (cached) client for one app."""
        k = self._key(base_url, api_key)
        c = self._clients.get(k)
        if c is None:
            http = self._http.get(k[0])
            if http is None:
                http = make_http_client(self.transport)
                self._http[k[0]] = http
            c = DifyClient(
                k[0],
                api_key,
                http=http,
                timeouts=self._timeouts,
                retry=self._retry,
                breaker=self.breaker(base_url, api_key),
                pace_reads=self.transport == "aiohttp",
            )
            self._clients[k] = c
        return c

    async def aclose(self) -> None:
        """Close every HTTP client (connections, aiohttp sessions)."""
        clients, self._http = list(self._http.values()), {}
        self._clients.clear()
        for http in clients:
            await http.aclose()
