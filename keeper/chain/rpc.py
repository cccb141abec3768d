"""JSON-RPC over HTTP: raw results, one retry policy of our own, errors that say what failed, and
failover across several endpoints.

Results come back as the node sent them (hex strings), skipping web3's result formatters: they
cost more than the request itself on hot paths.

With several endpoints (the first is the primary, the rest backups in priority order) each
request goes to the first one not set aside. One that keeps failing, is rate limited, stalls,
falls behind or serves another chain is set aside (`keeper.chain.endpoints` decides for how
long) and the same request goes on to the next at once. When the cooldown of a preferred
endpoint ends, the next request probes it; if it answers, it is preferred again.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from web3 import AsyncHTTPProvider
from web3.types import RPCEndpoint

from keeper.chain.endpoints import (
    EndpointBoard,
    EndpointPolicy,
    EndpointState,
    EndpointStatus,
    SetAsideReason,
    Transition,
)

_log = structlog.get_logger(__name__)

# The first retry waits about this long (plus as much jitter); each further one twice as long.
_FIRST_BACKOFF_S = 0.1
# With backups, an endpoint gets this many attempts before the request moves on: waiting out a
# sick node costs more than asking a healthy one. An endpoint set aside gets one (a probe).
_ATTEMPTS_WITH_BACKUPS = 2
# With another endpoint serving, an attempt unanswered this long counts as a hung node and the
# request moves on at once: a node that accepts connections but never answers would otherwise
# hold every request for the full timeout. Alone, an endpoint gets the full timeout (a slow
# answer beats none).
_FAILOVER_TIMEOUT_S = 3.0
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
# What the log calls each state an endpoint is set aside in.
_SET_ASIDE_EVENTS = {
    EndpointState.DOWN: "rpc.endpoint_down",
    EndpointState.RATE_LIMITED: "rpc.endpoint_down",
    EndpointState.STALLED: "rpc.endpoint_stalled",
    EndpointState.BEHIND: "rpc.endpoint_behind",
    EndpointState.WRONG_CHAIN: "rpc.endpoint_refused",
}


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


class ChainMismatchError(RpcTransportError):
    """Every endpoint answered, and none serves the chain the keeper started on: the node was
    reset or repointed. Acting on another chain's state would be wrong, so nothing is served."""


@dataclass(frozen=True, slots=True)
class ChainIdentity:
    """What names a chain: its id, and the hash of its block 0 (a reset devnet keeps the id)."""

    chain_id: int
    genesis_hash: str


class _TransientError(Exception):
    """One attempt failed in a way another attempt may not; the text says how, without params."""

    def __init__(
        self,
        message: str,
        kind: str,
        retry_after_s: float | None = None,
        *,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.timed_out = timed_out


class _EndpointFailedError(Exception):
    """An endpoint could not serve a request: set it aside and ask the next one."""

    def __init__(
        self, message: str, reason: SetAsideReason, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class _WrongChainError(Exception):
    """The endpoint serves another chain than the expected one."""


class RpcObserver(Protocol):
    def rpc_request(
        self, method: str, endpoint: str, duration_s: float, error_kind: str | None
    ) -> None:
        """One HTTP request (each retry is one) and how it failed: `transport`, `http`,
        `rate_limited`, `invalid_response`, `json_rpc`; None when it succeeded."""

    def rpc_endpoint_set_aside(self, endpoint: str, reason: str) -> None:
        """An endpoint stopped serving requests: `transport`, `http`, `invalid_response`,
        `rate_limited`, `stalled`, `behind` or `wrong_chain`."""


class _NullRpcObserver:
    def rpc_request(
        self, method: str, endpoint: str, duration_s: float, error_kind: str | None
    ) -> None:
        pass

    def rpc_endpoint_set_aside(self, endpoint: str, reason: str) -> None:
        pass


@dataclass(eq=False)
class _Endpoint:
    """One URL with its own provider and keep-alive session."""

    url: str
    label: str  # redacted: what logs and metrics call it
    provider: AsyncHTTPProvider
    session: aiohttp.ClientSession | None = None
    chain_check_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wrong_chain: ChainIdentity | None = None  # what it served when last refused


class RpcClient:
    """A JSON-RPC client over HTTP that several asyncio tasks may share.

    Built on web3's AsyncHTTPProvider with its own retries off: this client retries transport
    failures and rate limits with capped exponential backoff, and raises any other JSON-RPC
    error at once (an eth_call revert must surface immediately, and is no fault of the node).
    Connections are kept alive: web3's default session opens a new connection (and TLS
    handshake) per request.

    `http_url` is one URL or several: the primary first, then backups in priority order. With
    one URL, a request gets `attempts` attempts; with several, each endpoint gets at most two
    before the request moves on to the next. `head_stall_s` is how long an endpoint's head may
    stand still while another's moves on (see `check_endpoints`); `clock` times cooldowns and
    stalls.
    """

    def __init__(
        self,
        http_url: str | Sequence[str],
        *,
        timeout_s: float = 10.0,
        attempts: int = 4,
        max_backoff_s: float = 2.0,
        head_stall_s: float = 30.0,
        observer: RpcObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        urls = [http_url] if isinstance(http_url, str) else list(http_url)
        if not urls:
            raise ValueError("RpcClient needs at least one URL")
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._endpoints = [
            _Endpoint(
                url,
                label,
                AsyncHTTPProvider(
                    url,
                    request_kwargs={"timeout": timeout},
                    exception_retry_configuration=None,
                ),
            )
            for url, label in zip(urls, endpoint_labels(urls), strict=True)
        ]
        self._board = EndpointBoard(
            [endpoint.label for endpoint in self._endpoints],
            EndpointPolicy(head_stall_s=head_stall_s),
            clock,
        )
        self._observer = observer or _NullRpcObserver()
        self._attempts = attempts if len(urls) == 1 else min(attempts, _ATTEMPTS_WITH_BACKUPS)
        self._max_backoff_s = max_backoff_s
        self._expected_chain: ChainIdentity | None = None
        self._session_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        """The endpoint preferred now (unredacted: it may hold an API key)."""
        return self._endpoints[self._board.preferred()].url

    def endpoints(self) -> list[EndpointStatus]:
        """Every endpoint in priority order: its state, whether it is preferred, its last head."""
        return self._board.statuses()

    async def request(self, method: str, params: Sequence[Any]) -> Any:
        """The raw JSON `result` of one call from the first endpoint that serves it.

        Raises RpcError at once when a node answers with an error, RpcTransportError when no
        endpoint could answer, and ChainMismatchError when every one answered from another
        chain than the one given to `expect_chain`.
        """
        failures: list[str] = []
        refusals: list[str] = []
        for index in self._board.plan():
            try:
                result = await self._call(index, method, params)
            except RpcError:
                self._report(self._board.succeeded(index))
                raise
            except _EndpointFailedError as failure:
                self._report(
                    self._board.failed(index, failure.reason, failure.retry_after_s),
                    error=str(failure),
                )
                failures.append(str(failure))
            except _WrongChainError as refusal:
                refusals.append(str(refusal))
            else:
                self._report(self._board.succeeded(index))
                return result
        if not failures:
            raise ChainMismatchError(self._mismatch_message(refusals))
        raise RpcTransportError("; ".join(failures + refusals))

    async def expect_chain(self, chain_id: int, genesis_hash: str) -> None:
        """From now on an endpoint serves only once it has shown this chain id and genesis hash
        (eth_chainId, block 0), and again each time it comes back after being set aside.

        Checks every endpoint at once (a backup on another chain is refused at start-up, not
        when it is needed); raises ChainMismatchError if all of them serve another chain.
        """
        self._expected_chain = ChainIdentity(chain_id, genesis_hash.lower())
        self._board.forget_chain()
        for endpoint in self._endpoints:
            endpoint.wrong_chain = None
        await self.check_endpoints()

    async def check_endpoints(self) -> None:
        """Asks every endpoint for its head, set-aside ones too (a probe), to set aside those
        that stalled or fell far behind and bring back those that recovered. Call every few
        seconds. A rate-limited endpoint is left alone until its cooldown ends.

        Raises ChainMismatchError if every endpoint serves another chain than the expected one.
        """
        probed = [i for i in range(len(self._endpoints)) if self._board.may_probe(i)]
        answers = await asyncio.gather(*(self._probe_head(i) for i in probed))
        heads = {
            i: answer for i, answer in zip(probed, answers, strict=True) if isinstance(answer, int)
        }
        best_head = max(heads.values(), default=None)
        for transition in self._board.judge_heads(heads):
            self._report(transition, head=heads[transition.index], best_head=best_head)
        refusals = [str(answer) for answer in answers if isinstance(answer, _WrongChainError)]
        if len(refusals) == len(self._endpoints):
            raise ChainMismatchError(self._mismatch_message(refusals))

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.provider.disconnect()
            endpoint.session = None

    async def _probe_head(self, index: int) -> int | _WrongChainError | None:
        """The endpoint's head, its refusal, or None when it did not answer."""
        try:
            head = await self._head(index)
            previous = self._board.head(index)
            if self._expected_chain is not None and previous is not None and head < previous:
                # A head going back may be a node restarted as a new chain: it shows its chain
                # again before the head counts.
                self._board.forget_chain(index)
                head = await self._head(index)
        except _EndpointFailedError as failure:
            self._report(
                self._board.failed(index, failure.reason, failure.retry_after_s),
                error=str(failure),
            )
            return None
        except _WrongChainError as refusal:
            return refusal
        except RpcError:
            return None  # it answers, but not this; requests will tell whether it serves
        return head

    async def _head(self, index: int) -> int:
        number = await self._call(index, "eth_blockNumber", [])
        try:
            return int(number, 16)
        except (TypeError, ValueError):
            label = self._endpoints[index].label
            raise _EndpointFailedError(
                f"eth_blockNumber to {label} answered no hex number",
                SetAsideReason.INVALID_RESPONSE,
            ) from None

    async def _call(self, index: int, method: str, params: Sequence[Any]) -> Any:
        """One request to one endpoint, retried; _EndpointFailedError when the attempts run out."""
        endpoint = self._endpoints[index]
        await self._open_session(endpoint)
        attempts = self._attempts_for(index)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(
                multiplier=_FIRST_BACKOFF_S, max=self._max_backoff_s, jitter=_FIRST_BACKOFF_S
            ),
            retry=retry_if_exception(partial(self._worth_retrying, index)),
            before_sleep=partial(self._log_retry, method, endpoint),
            reraise=True,
        )
        try:
            return await retrying(self._checked_attempt, index, method, params)
        except _TransientError as error:
            raise _EndpointFailedError(
                f"{method} to {endpoint.label} failed after {attempts} attempts: {error}",
                SetAsideReason(error.kind),
                error.retry_after_s,
            ) from None

    def _worth_retrying(self, index: int, error: BaseException) -> bool:
        """Transient errors are retried, except a timeout while another endpoint serves: that
        one answers sooner than a second wait on a node that may hang."""
        if not isinstance(error, _TransientError):
            return False
        return not (error.timed_out and self._board.has_other_up(index))

    def _deadline_s(self, index: int) -> float | None:
        return _FAILOVER_TIMEOUT_S if self._board.has_other_up(index) else None

    def _attempts_for(self, index: int) -> int:
        if len(self._endpoints) > 1 and self._board.is_set_aside(index):
            return 1
        return self._attempts

    async def _checked_attempt(self, index: int, method: str, params: Sequence[Any]) -> Any:
        await self._check_chain(index)
        return await self._request_once(index, method, params, self._deadline_s(index))

    async def _check_chain(self, index: int) -> None:
        """Makes sure the endpoint serves the expected chain before it serves anything else;
        raises _WrongChainError (after setting it aside) when it does not."""
        expected = self._expected_chain
        if expected is None or self._board.chain_verified(index):
            return
        endpoint = self._endpoints[index]
        self._refuse_while_resting(endpoint, index)
        was_set_aside = self._board.is_set_aside(index)
        async with endpoint.chain_check_lock:
            if self._board.chain_verified(index):
                return
            self._refuse_while_resting(endpoint, index)
            if (
                not was_set_aside
                and self._board.is_set_aside(index)
                and self._board.has_other_up(index)
            ):
                # Set aside while this request waited for the check: ask the next one instead.
                raise _EndpointFailedError(
                    f"{endpoint.label} was set aside", SetAsideReason.TRANSPORT
                )
            found = await self._read_chain(index)
            if found != expected:
                endpoint.wrong_chain = found
                self._report(
                    self._board.failed(index, SetAsideReason.WRONG_CHAIN),
                    expected_chain_id=expected.chain_id,
                    expected_genesis=expected.genesis_hash,
                    found_chain_id=found.chain_id,
                    found_genesis=found.genesis_hash,
                )
                raise _WrongChainError(_serves(endpoint.label, found))
            self._report(self._board.chain_confirmed(index))

    def _refuse_while_resting(self, endpoint: _Endpoint, index: int) -> None:
        """Until its cooldown ends, a refused endpoint is refused again without asking it: many
        requests waiting on one check must not each check again."""
        if endpoint.wrong_chain is not None and self._board.refusing(index):
            raise _WrongChainError(_serves(endpoint.label, endpoint.wrong_chain))

    async def _read_chain(self, index: int) -> ChainIdentity:
        try:
            deadline = self._deadline_s(index)
            chain_id = await self._request_once(index, "eth_chainId", [], deadline)
            genesis = await self._request_once(
                index, "eth_getBlockByNumber", ["0x0", False], deadline
            )
            return ChainIdentity(int(chain_id, 16), str(genesis["hash"]).lower())
        except (RpcError, TypeError, ValueError, KeyError):
            raise _TransientError(
                "no readable chain id or genesis block", "invalid_response"
            ) from None

    def _mismatch_message(self, refusals: Sequence[str]) -> str:
        expected = self._expected_chain
        assert expected is not None
        return (
            "THE NODE NOW SERVES A DIFFERENT CHAIN (new genesis or chain id) and the keeper "
            f"refuses it: the keeper started on chain {expected.chain_id} with genesis "
            f"{expected.genesis_hash}, but {'; '.join(refusals)}. Acting on another chain's "
            "state would be wrong: check the node, then restart the keeper."
        )

    async def _open_session(self, endpoint: _Endpoint) -> None:
        """Hands web3 a keep-alive session, once, before its first request on this loop."""
        if endpoint.session is not None:
            return
        async with self._session_lock:
            if endpoint.session is None:
                session = aiohttp.ClientSession(raise_for_status=True)
                await endpoint.provider.cache_async_session(session)
                endpoint.session = session

    async def _request_once(
        self, index: int, method: str, params: Sequence[Any], deadline_s: float | None
    ) -> Any:
        endpoint = self._endpoints[index]
        started = time.perf_counter()
        error_kind: str | None = "transport"
        try:
            result = await self._attempt(endpoint, method, params, deadline_s)
            error_kind = None
            return result
        except _TransientError as error:
            error_kind = error.kind
            if error.kind != "rate_limited":
                # A node that dropped a connection or answered garbage may have been reset:
                # it shows its chain again before its next answer counts.
                self._board.forget_chain(index)
            raise
        except RpcError:
            error_kind = "json_rpc"
            raise
        except _EndpointFailedError:
            error_kind = "http"
            raise
        except asyncio.CancelledError:
            error_kind = None  # the caller gave up; the node did nothing wrong
            raise
        finally:
            self._observer.rpc_request(
                method, endpoint.label, time.perf_counter() - started, error_kind
            )

    async def _attempt(
        self, endpoint: _Endpoint, method: str, params: Sequence[Any], deadline_s: float | None
    ) -> Any:
        """One request; `deadline_s` (None: the client's timeout) bounds it as a whole."""
        try:
            async with asyncio.timeout(deadline_s):
                response = await endpoint.provider.make_request(RPCEndpoint(method), params)
        except aiohttp.ClientResponseError as error:
            if error.status >= 500 or error.status in _RETRYABLE_CLIENT_STATUSES:
                if error.status == _RATE_LIMIT_CODE:
                    retry_after_s = _retry_after_s(error.headers)
                    raise _TransientError("HTTP 429", "rate_limited", retry_after_s) from None
                raise _TransientError(f"HTTP {error.status}", "http") from None
            raise _EndpointFailedError(
                f"{method} to {endpoint.label} failed: HTTP {error.status}", SetAsideReason.HTTP
            ) from None
        except TimeoutError:
            raise _TransientError("no answer in time", "transport", timed_out=True) from None
        except (aiohttp.ClientError, OSError) as error:
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

    def _report(self, transition: Transition | None, **context: Any) -> None:
        """Logs an endpoint's change of state once, and counts each time one is set aside."""
        if transition is None:
            return
        label = self._endpoints[transition.index].label
        if transition.reason is None:
            _log.info("rpc.endpoint_up", endpoint=label, was=transition.before.value)
            return
        self._observer.rpc_endpoint_set_aside(label, transition.reason.value)
        # Serving another chain is no outage to wait out: someone has to look.
        emit = _log.error if transition.after is EndpointState.WRONG_CHAIN else _log.warning
        emit(
            _SET_ASIDE_EVENTS[transition.after],
            endpoint=label,
            reason=transition.reason.value,
            **context,
        )

    def _log_retry(self, method: str, endpoint: _Endpoint, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            "rpc.retrying",
            method=method,
            url=endpoint.label,
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


def endpoint_labels(urls: Sequence[str]) -> list[str]:
    """`redact_url` of each URL, made unique with `#2`, `#3`...: two keys of one provider
    differ only in the part that is redacted, and each needs its own metric series."""
    labels = []
    seen: dict[str, int] = {}
    for url in urls:
        label = redact_url(url)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return labels


def _serves(label: str, chain: ChainIdentity) -> str:
    return f"{label} serves chain {chain.chain_id} with genesis {chain.genesis_hash}"


def _retry_after_s(headers: Any) -> float | None:
    """A Retry-After given in seconds; the HTTP-date form is rare enough to ignore."""
    value = headers.get("Retry-After") if headers is not None else None
    if isinstance(value, str) and value.strip().isdigit():
        return float(value)
    return None


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
