"""JSON-RPC over HTTP: raw results, one retry policy of our own, errors that say what failed.

Results come back as the node sent them (hex strings), skipping web3's result formatters: they
cost more than the request itself on hot paths.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from web3 import AsyncHTTPProvider
from web3.types import RPCEndpoint

_log = structlog.get_logger(__name__)

# The first retry waits about this long (plus as much jitter); each further one twice as long.
_FIRST_BACKOFF_S = 0.1
# HTTP statuses worth another attempt besides 5xx; any other non-2xx status is a setup problem
# (wrong URL, bad API key) that waiting does not fix.
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
# How providers word a throttled request (matched lowercase). The code alone is not enough:
# -32005 ("limit exceeded", EIP-1474) also means "query returned more than 10000 results", which
# the log fetcher answers by splitting the range, not by waiting.
_RATE_LIMIT_PHRASES = (
    "rate limit",
    "ratelimit",
    "rate-limit",
    "too many requests",
    "request rate",
    "per second",
    "/second",
)
_RATE_LIMIT_CODE = 429
_HEX_DATA = re.compile(r"\b0x[0-9a-fA-F]*\b")


class RpcError(Exception):
    """A JSON-RPC error response from the node."""

    def __init__(self, method: str, code: int, message: str, data: str | None) -> None:
        super().__init__(f"{method} failed: JSON-RPC error {code}: {_printable(message)}")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class RpcTransportError(Exception):
    """The node could not be reached, answered garbage or an HTTP error, after retries."""


class _TransientError(Exception):
    """One attempt failed in a way another attempt may not; the text says how, without params."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class RpcObserver(Protocol):
    def rpc_request(
        self, method: str, endpoint: str, duration_s: float, error_kind: str | None
    ) -> None:
        """One HTTP request (each retry is one) and how it failed: `transport`, `http`,
        `rate_limited`, `invalid_response`, `json_rpc`; None when it succeeded."""


class _NullRpcObserver:
    def rpc_request(
        self, method: str, endpoint: str, duration_s: float, error_kind: str | None
    ) -> None:
        pass


class RpcClient:
    """A JSON-RPC client over HTTP that several asyncio tasks may share.

    Built on web3's AsyncHTTPProvider with its own retries off: this client retries transport
    failures and rate limits with capped exponential backoff, and raises any other JSON-RPC
    error at once (an eth_call revert must surface immediately). Connections are kept alive:
    web3's default session opens a new connection (and TLS handshake) per request.
    """

    def __init__(
        self,
        http_url: str,
        *,
        timeout_s: float = 10.0,
        attempts: int = 4,
        max_backoff_s: float = 2.0,
        observer: RpcObserver | None = None,
    ) -> None:
        self._url = http_url
        self._endpoint = redact_url(http_url)
        self._observer = observer or _NullRpcObserver()
        self._provider = AsyncHTTPProvider(
            http_url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)},
            exception_retry_configuration=None,
        )
        self._attempts = attempts
        self._max_backoff_s = max_backoff_s
        self._session: aiohttp.ClientSession | None = None
        self._session_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return self._url

    async def request(self, method: str, params: Sequence[Any]) -> Any:
        """The raw JSON `result` of one call; raises RpcError or RpcTransportError."""
        await self._open_session()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                multiplier=_FIRST_BACKOFF_S, max=self._max_backoff_s, jitter=_FIRST_BACKOFF_S
            ),
            retry=retry_if_exception_type(_TransientError),
            before_sleep=partial(self._log_retry, method),
            reraise=True,
        )
        try:
            return await retrying(self._request_once, method, params)
        except _TransientError as error:
            raise RpcTransportError(
                f"{method} to {redact_url(self._url)} failed after {self._attempts} "
                f"attempts: {error}"
            ) from None

    async def close(self) -> None:
        await self._provider.disconnect()
        self._session = None

    async def _open_session(self) -> None:
        """Hands web3 a keep-alive session, once, before its first request on this loop."""
        if self._session is not None:
            return
        async with self._session_lock:
            if self._session is None:
                session = aiohttp.ClientSession(raise_for_status=True)
                await self._provider.cache_async_session(session)
                self._session = session

    async def _request_once(self, method: str, params: Sequence[Any]) -> Any:
        started = time.perf_counter()
        error_kind: str | None = "transport"
        try:
            result = await self._attempt(method, params)
            error_kind = None
            return result
        except _TransientError as error:
            error_kind = error.kind
            raise
        except RpcError:
            error_kind = "json_rpc"
            raise
        except RpcTransportError:
            error_kind = "http"
            raise
        except asyncio.CancelledError:
            error_kind = None  # the caller gave up; the node did nothing wrong
            raise
        finally:
            self._observer.rpc_request(
                method, self._endpoint, time.perf_counter() - started, error_kind
            )

    async def _attempt(self, method: str, params: Sequence[Any]) -> Any:
        try:
            response = await self._provider.make_request(RPCEndpoint(method), params)
        except aiohttp.ClientResponseError as error:
            if error.status >= 500 or error.status in _RETRYABLE_CLIENT_STATUSES:
                kind = "rate_limited" if error.status == _RATE_LIMIT_CODE else "http"
                raise _TransientError(f"HTTP {error.status}", kind) from None
            raise RpcTransportError(
                f"{method} to {redact_url(self._url)} failed: HTTP {error.status}"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise _TransientError(type(error).__name__, "transport") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _TransientError("invalid JSON in response", "invalid_response") from None

        if not isinstance(response, dict):
            raise _TransientError("response is not a JSON-RPC object", "invalid_response")
        error_object = response.get("error")
        if error_object is not None:
            rpc_error = _rpc_error(method, error_object)
            if _is_rate_limit(rpc_error):
                raise _TransientError(
                    f"rate limited: JSON-RPC error {rpc_error.code}", "rate_limited"
                )
            raise rpc_error
        if "result" not in response:
            raise _TransientError("response has neither result nor error", "invalid_response")
        return response["result"]

    def _log_retry(self, method: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            "rpc.retrying",
            method=method,
            url=redact_url(self._url),
            attempt=state.attempt_number,
            reason=str(error),
        )


def redact_url(url: str) -> str:
    """Scheme, host and port only: provider URLs often carry an API key in path, query or user."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    hidden = "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def _rpc_error(method: str, error: object) -> RpcError:
    if not isinstance(error, dict):
        return RpcError(method, 0, str(error), None)
    code = error.get("code")
    return RpcError(
        method,
        code if isinstance(code, int) else 0,
        str(error.get("message", "")),
        _revert_data(error.get("data")),
    )


def _revert_data(data: object) -> str | None:
    """The revert bytes as 0x hex: anvil and geth send them as a hex string in error.data, other
    nodes nest them in a dict or put text before them ("Reverted 0x...")."""
    if isinstance(data, dict):
        return _revert_data(data.get("data"))
    if isinstance(data, str):
        match = _HEX_DATA.search(data)
        return match.group().lower() if match else None
    return None


def _is_rate_limit(error: RpcError) -> bool:
    message = error.message.lower()
    return error.code == _RATE_LIMIT_CODE or any(p in message for p in _RATE_LIMIT_PHRASES)


def _printable(text: str) -> str:
    """anvil puts raw revert bytes (NULs included) into its messages; keep them out of logs."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
