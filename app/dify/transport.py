"""The sending side of one Dify app: plain JSON calls with their retries, and how every
attempt's outcome is told to the circuit breaker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import structlog

from app.dify.breaker import CircuitBreaker
from app.dify.errors import DifyError, DifyProtocolError, DifyTimeout, error_from_response
from app.dify.wire import (
    _MAX_ERROR_BODY,
    _TRANSPORT_ERRORS,
    USER_AGENT,
    DifyTimeouts,
    RetryPolicy,
    _encode,
    _transport_error,
    _unbind,
    counts_as_failure,
)

T = TypeVar("T")

log = structlog.get_logger("app.dify")


class DifyTransport:
    """Requests to one Dify app (base URL + API key) over a shared ``httpx.AsyncClient``:
    retries before the first event, the breaker checked and told, nothing logged of the body.
    :class:`app.dify.client.DifyClient` adds the endpoints."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        http: httpx.AsyncClient,
        timeouts: DifyTimeouts = DifyTimeouts(),
        retry: RetryPolicy = RetryPolicy(),
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        pace_reads: bool = False,
    ) -> None:
        """``pace_reads``: let callers pace their streams (:meth:`EventStream.pace_reads`);
        only for an ``http`` client on the aiohttp transport."""
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if (
            not isinstance(api_key, str)
            or not api_key.strip()
            or any(c in api_key for c in "\r\n ")
        ):
            raise ValueError("api_key must be a non-empty token without spaces")
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._t = timeouts
        self._retry = retry
        self._breaker = breaker
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._stream_timeout = httpx.Timeout(
            connect=timeouts.connect, read=None, write=timeouts.connect, pool=timeouts.connect
        )
        self._request_timeout = httpx.Timeout(
            connect=timeouts.connect,
            read=timeouts.request,
            write=timeouts.request,
            pool=timeouts.connect,
        )
        self._stream_timeout_ext = self._stream_timeout.as_dict()
        # The client's defaults (Accept, Accept-Encoding, ...) under ours, as build_request would.
        self._stream_headers = httpx.Headers(http.headers)
        self._stream_headers.update(self._json_headers)
        self._plain_headers = httpx.Headers(http.headers)
        self._plain_headers.update(self._headers)
        self._stream_urls: dict[str, httpx.URL] = {}
        self._can_pace = pace_reads

    def _stream_url(self, path: str) -> httpx.URL:
        url = self._stream_urls.get(path)
        if url is None:
            url = self._stream_urls[path] = httpx.URL(self.base_url + path)
        return url

    def _fail(self, err: DifyError) -> DifyError:
        if self._breaker is not None and counts_as_failure(err):
            self._breaker.record_failure()
        return err

    # ------------------------------------------------------------ plain requests

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        budget: float | None = None,
    ) -> Any:
        """One JSON call with retries; returns the decoded body (None for 204)."""
        result = await self._retrying(
            path,
            lambda: self._request_once(
                method,
                path,
                json=json,
                params=params,
                data=data,
                files=files,
                budget=budget or self._t.request,
            ),
        )
        if self._breaker is not None:
            self._breaker.record_success()
        return result

    async def _retrying(self, path: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` until it succeeds or its error is not worth retrying (see _retry_delay).

        Only used before anything reached the caller, so a retry never repeats shown text.
        """
        attempt = 0
        while True:
            self._check_breaker()
            try:
                return await op()
            except DifyError as err:
                self._record(err)
                delay = self._retry_delay(err, attempt)
                if delay is None:
                    raise
                attempt += 1
                log.warning(
                    "dify_retry",
                    path=path,
                    attempt=attempt,
                    delay=round(delay, 3),
                    status=err.status,
                    code=err.code,
                )
                await self._sleep(delay)

    async def _request_once(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        budget: float,
    ) -> Any:
        timeout = (
            self._request_timeout
            if budget == self._t.request
            else httpx.Timeout(budget, connect=self._t.connect)
        )
        request: httpx.Request
        if files is None and data is None:
            # Plain GET/JSON calls are built directly: ``build_request`` parses the URL and
            # merges headers on every call, which costs more than the rest of a small call.
            url = self.base_url + path
            if params:
                url += "?" + urlencode(params)
            body = b"" if json is None else _encode(json)
            request = httpx.Request(
                method,
                url,
                content=body or None,
                headers=self._stream_headers if json is not None else self._plain_headers,
                extensions={"timeout": timeout.as_dict()},
            )
        else:
            request = self._http.build_request(
                method,
                self.base_url + path,
                params=params,
                data=data,
                files=files,
                headers=self._headers,
                timeout=timeout,
            )
        try:
            async with asyncio.timeout(budget):
                response = await self._http.send(request)
        except TimeoutError:
            raise DifyTimeout(phase="request") from None
        except _TRANSPORT_ERRORS as e:
            raise _transport_error(e, "request") from e
        _unbind(response)  # read in full by ``send``
        if not 200 <= response.status_code < 300:
            raise error_from_response(
                response.status_code,
                response.content[:_MAX_ERROR_BODY],
                response.headers.get("retry-after"),
            )
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise DifyProtocolError(
                "response body is not JSON", status=response.status_code, code="protocol_error"
            ) from None

    async def _http_error(self, response: httpx.Response) -> DifyError:
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except _TRANSPORT_ERRORS:
            pass  # the status alone classifies the error
        return error_from_response(
            response.status_code, bytes(body), response.headers.get("retry-after")
        )

    # --------------------------------------------------------------- policy

    def _check_breaker(self) -> None:
        if self._breaker is not None:
            self._breaker.check()

    def _record(self, err: DifyError) -> None:
        if self._breaker is None:
            return
        if counts_as_failure(err):
            self._breaker.record_failure()
        elif err.status is not None:
            self._breaker.record_success()

    def _retry_delay(self, err: DifyError, attempt: int) -> float | None:
        if not err.retryable or attempt >= self._retry.max_retries:
            return None
        if err.retry_after is not None:
            if err.retry_after > self._retry.max_retry_after:
                return None
            return err.retry_after
        return self._retry.backoff(attempt, self._rng)

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _check_file(filename: str, data: bytes, mime_type: str) -> None:
        if not isinstance(filename, str) or not filename or "/" in filename or "\\" in filename:
            raise ValueError("filename must be a plain file name (no slashes)")
        if not isinstance(data, bytes | bytearray) or not data:
            raise ValueError("file data must be non-empty bytes")
        if not isinstance(mime_type, str) or "/" not in mime_type:
            raise ValueError("mime_type must look like type/subtype")

    @staticmethod
    def _as_dict(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise DifyProtocolError("expected a JSON object from Dify", code="protocol_error")
        return obj

    def _data_list(self, obj: Any) -> list[dict[str, Any]]:
        data = self._as_dict(obj).get("data")
        if not isinstance(data, list):
            raise DifyProtocolError("expected a 'data' list from Dify", code="protocol_error")
        return [d for d in data if isinstance(d, dict)]
