"""New chain heads: pushed over a WebSocket when there is one, polled over HTTP otherwise."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final, cast

import structlog
from web3 import AsyncWeb3, WebSocketProvider
from web3.exceptions import Web3Exception
from websockets.exceptions import WebSocketException

from keeper.chain.rpc import (
    ChainMismatchError,
    RpcClient,
    RpcError,
    RpcTransportError,
    redact_url,
)

_log = structlog.get_logger(__name__)

WEBSOCKET: Final = "websocket"
POLLING: Final = "polling"

_BLOCK_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_HEAD_FIELDS = ("number", "hash", "parentHash", "timestamp", "baseFeePerGas")
# web3's defaults hide a hung node for minutes; these notice it within a few seconds. Nothing is
# polled while a connection is attempted, so an unreachable host may cost at most the open and
# request timeouts once per retry delay.
_WEBSOCKET_KWARGS: Final = {
    "ping_interval": 1,
    "ping_timeout": 2,
    "close_timeout": 1,
    "open_timeout": 2,
}
_WEBSOCKET_REQUEST_TIMEOUT_S = 5.0
# Everything that ends a WebSocket session: refused or dropped connection, a hung node, a node
# without subscriptions, and the HTTP calls made on the socket's behalf.
_WEBSOCKET_FAILURES = (
    Web3Exception,
    WebSocketException,
    OSError,
    TimeoutError,
    RpcError,
    RpcTransportError,
)


@dataclass(frozen=True, slots=True)
class Head:
    """The part of a block header the keeper uses."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int
    base_fee_per_gas: int


class MalformedBlockError(RpcTransportError):
    """A node answered a block without the fields every block has, or with values that are not
    numbers and 32-byte hashes: nothing is taken from it, and it counts as a failed request."""


def parse_head(block: Mapping[str, Any]) -> Head:
    """A block as the node sends it (hex strings) or as web3 formats it (ints, HexBytes); a block
    from before London has no base fee and gets 0. Raises `MalformedBlockError`."""
    try:
        head = Head(
            number=_to_int(block["number"]),
            hash=_to_hex(block["hash"]),
            parent_hash=_to_hex(block["parentHash"]),
            timestamp=_to_int(block["timestamp"]),
            base_fee_per_gas=_to_int(block.get("baseFeePerGas", 0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise MalformedBlockError(
            f"malformed block from the node ({type(error).__name__}: {error})"
        ) from None
    for field, value in (("hash", head.hash), ("parentHash", head.parent_hash)):
        if not _BLOCK_HASH.fullmatch(value):
            raise MalformedBlockError(f"malformed block from the node: {field} is not a hash")
    if min(head.number, head.timestamp, head.base_fee_per_gas) < 0:
        raise MalformedBlockError("malformed block from the node: a negative number")
    return head


async def latest_head(rpc: RpcClient) -> Head:
    block = await rpc.request("eth_getBlockByNumber", ["latest", False])
    if block is None:
        raise RpcTransportError(f"{redact_url(rpc.url)} returned no latest block")
    return parse_head(block)


async def head_from_notification(rpc: RpcClient, header: Mapping[str, Any]) -> Head | None:
    """The head a newHeads notification announces. Some nodes leave fields out; then the block is
    fetched by hash, and None means the node no longer knows it (reorged away)."""
    if all(field in header for field in _HEAD_FIELDS):
        return parse_head(header)
    block = await rpc.request("eth_getBlockByHash", [_to_hex(header["hash"]), False])
    return None if block is None else parse_head(block)


class HeadFollower:
    """Follows the chain's head: `async for head in follower` (one consumer at a time).

    Heads come in strictly increasing block number, never the same number twice. Numbers are
    skipped when several blocks arrive between two reads, so a consumer must process the whole
    range after the last head it saw, not just the new block. A block replacing one at a height
    already yielded is not yielded: a reorg shows up at the next higher head, as a parent_hash
    the consumer has not seen.

    With `ws_url`, heads come from a newHeads subscription. When the socket cannot connect or
    drops, the follower logs a warning, polls eth_getBlockByNumber("latest") over HTTP every
    `poll_interval_s`, and tries the socket again after a delay: `ws_first_retry_s` at first,
    doubling after each session that pushed no head, up to `ws_retry_s`. A blip costs a second
    of polling, a node that stays down is not hammered. Each connection subscribes anew and
    yields the latest head at once, so the consumer back-fills what it missed. `mode` names the
    source in use: "websocket" or "polling".

    Cancelling the task that iterates the follower closes the socket. A consumer that stops
    iterating early should close the iterator: `async with aclosing(aiter(follower)) as heads`.
    """

    def __init__(
        self,
        rpc: RpcClient,
        *,
        ws_url: str | None,
        poll_interval_s: float = 1.0,
        ws_retry_s: float = 30.0,
        ws_first_retry_s: float = 1.0,
    ) -> None:
        self._rpc = rpc
        self._ws_url = ws_url
        self._poll_interval_s = poll_interval_s
        self._ws_retry_s = ws_retry_s
        self._ws_first_retry_s = min(ws_first_retry_s, ws_retry_s)
        self._ws_retry_delay_s = self._ws_first_retry_s  # before the next connection attempt
        self.mode: str = POLLING

    def __aiter__(self) -> AsyncGenerator[Head, None]:
        return self._follow()

    async def _follow(self) -> AsyncGenerator[Head, None]:
        last: Head | None = None
        behind = False
        async with aclosing(self._heads()) as heads:
            async for head in heads:
                if last is None or head.number > last.number:
                    last, behind = head, False
                    yield head
                elif head.number < last.number and not behind:
                    # A restarted devnet or a deep reorg: stay silent until the chain passes
                    # the last head again, but say why once.
                    behind = True
                    _log.warning("heads.node_behind", node_head=head.number, last_head=last.number)

    async def _heads(self) -> AsyncGenerator[Head, None]:
        """Heads from every source in turn, repeats included."""
        loop = asyncio.get_running_loop()
        while True:
            retry_websocket_at = math.inf
            if self._ws_url is not None:
                async with aclosing(self._websocket_heads(self._ws_url)) as heads:
                    async for head in heads:
                        yield head
                retry_websocket_at = loop.time() + self._ws_retry_delay_s
                self._ws_retry_delay_s = min(2 * self._ws_retry_delay_s, self._ws_retry_s)
            async with aclosing(self._polled_heads(until=retry_websocket_at)) as heads:
                async for head in heads:
                    yield head

    async def _websocket_heads(self, ws_url: str) -> AsyncGenerator[Head, None]:
        """Heads from one WebSocket session; ends (with a warning) when the session does.

        A task reads the socket and keeps only the newest head it announced: a consumer slower
        than the chain skips to the newest head instead of working through a backlog.
        """
        provider = WebSocketProvider(
            ws_url,
            websocket_kwargs=_WEBSOCKET_KWARGS,
            request_timeout=_WEBSOCKET_REQUEST_TIMEOUT_S,
            max_connection_retries=1,  # this follower owns the retry policy
        )
        newest: asyncio.Queue[Head | Exception | None] = asyncio.Queue(maxsize=1)
        try:
            async with AsyncWeb3(provider) as w3:
                await w3.eth.subscribe("newHeads")
                self.mode = WEBSOCKET
                _log.info("heads.websocket_subscribed", url=redact_url(ws_url))
                reader = asyncio.create_task(self._read_heads(w3, newest))
                try:
                    # Blocks mined before the subscription took effect are announced by no one.
                    yield await latest_head(self._rpc)
                    while (item := await newest.get()) is not None:
                        if isinstance(item, Exception):
                            raise item
                        # The socket works: should it drop, the first retry comes soon.
                        self._ws_retry_delay_s = self._ws_first_retry_s
                        yield item
                finally:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
        except _WEBSOCKET_FAILURES as error:
            _log.warning(
                "heads.websocket_failed",
                error=type(error).__name__,
                url=redact_url(ws_url),
                retry_in_s=self._ws_retry_delay_s,
            )
        else:
            _log.warning(
                "heads.websocket_closed", url=redact_url(ws_url), retry_in_s=self._ws_retry_delay_s
            )
        finally:
            self.mode = POLLING

    async def _read_heads(
        self,
        w3: AsyncWeb3[WebSocketProvider],
        newest: asyncio.Queue[Head | Exception | None],
    ) -> None:
        """Puts each announced head in `newest`, then the error that ended the socket (or None
        when the node closed it), replacing whatever the consumer has not taken yet."""
        outcome: Exception | None = None
        try:
            async for message in w3.socket.process_subscriptions():
                header = cast(Mapping[str, Any], message["result"])
                head = await head_from_notification(self._rpc, header)
                if head is not None:
                    _replace(newest, head)
        except Exception as error:  # handed to the consumer, which decides what is fatal
            outcome = error
        _replace(newest, outcome)

    async def _polled_heads(self, *, until: float) -> AsyncGenerator[Head, None]:
        """The latest head every poll interval until the loop time `until`; a failed poll is
        logged and the next one tried, as a node may come back."""
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            try:
                head = await latest_head(self._rpc)
            except ChainMismatchError:
                raise
            except (RpcError, RpcTransportError) as error:
                _log.warning("heads.poll_failed", error=type(error).__name__)
            else:
                yield head
            await asyncio.sleep(self._poll_interval_s)


def _replace(slot: asyncio.Queue[Head | Exception | None], item: Head | Exception | None) -> None:
    if slot.full():
        slot.get_nowait()
    slot.put_nowait(item)


def _to_int(value: int | str) -> int:
    return value if isinstance(value, int) else int(value, 16)


def _to_hex(value: bytes | str) -> str:
    return value if isinstance(value, str) else "0x" + value.hex()
