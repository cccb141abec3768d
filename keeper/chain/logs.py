"""eth_getLogs over long block ranges, in chunks sized to what the node accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from keeper.chain.rpc import RpcClient, RpcError, RpcTransportError

Topics = Sequence[str | Sequence[str] | None]

# How nodes and providers refuse an eth_getLogs range as too large (matched lowercase, as
# substrings): block-span caps of geth, erigon, reth and hosted providers, result-count caps
# (geth/Infura "query returned more than 10000 results"), response-size caps (Alchemy "Log
# response size exceeded") and query timeouts. Splitting the range answers all of them.
_RANGE_TOO_LARGE = (
    "query returned more than",
    "block range",  # "block range too large", "exceed maximum block range: 10000"
    "range is too large",
    "range too large",
    "range is too wide",
    "too many blocks",
    "response size",
    "limit exceeded",  # EIP-1474 -32005 "limit exceeded"
    "too many results",
    "max results",
    "query timeout exceeded",
)
# EIP-1474 "limit exceeded": rate limits with this code are retried by RpcClient before they get
# here, so on eth_getLogs it means the query was too big.
_LIMIT_EXCEEDED_CODE = -32005
# Successful chunks in a row before the chunk doubles again: log density varies along the chain,
# so a limit met in one busy stretch should not slow down the quiet ones for good, while against
# a fixed block-range cap each probe costs one refused request in nine.
_SUCCESSES_BEFORE_GROWING = 8


_LOG_FIELDS = ("address", "topics", "data", "blockNumber", "blockHash", "logIndex")


class InconsistentLogsError(RpcTransportError):
    """The node answered `eth_getLogs` with logs it cannot have meant: outside the range asked
    for, removed by a reorg, or missing fields. Nothing is applied; the range is asked again."""


class LogFetcher:
    """Fetches raw logs (JSON dicts) for inclusive block ranges in adaptive chunks.

    A range the node refuses as too large is halved and retried; after a run of accepted chunks
    the chunk doubles again, up to `max_chunk_blocks`. The chunk size is kept across calls,
    since a node's limit does not change between them.
    """

    def __init__(
        self,
        rpc: RpcClient,
        *,
        max_chunk_blocks: int = 50_000,
        initial_chunk_blocks: int = 5_000,
        min_chunk_blocks: int = 1,
    ) -> None:
        if not 1 <= min_chunk_blocks <= initial_chunk_blocks <= max_chunk_blocks:
            raise ValueError("chunk sizes must satisfy 1 <= min <= initial <= max")
        self._rpc = rpc
        self._max_chunk = max_chunk_blocks
        self._min_chunk = min_chunk_blocks
        self._chunk = initial_chunk_blocks
        self._successes = 0

    @property
    def chunk_blocks(self) -> int:
        """The number of blocks the next chunk asks for."""
        return self._chunk

    async def fetch(
        self,
        addresses: Sequence[str],
        from_block: int,
        to_block: int,
        *,
        topics: Topics | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Logs of `addresses` in blocks from_block..to_block (inclusive), in chain order.

        `on_progress(done_to_block, to_block)` runs after each chunk. A refusal at the smallest
        chunk is re-raised as the node's RpcError.
        """
        chunks = self.chunks(
            addresses, from_block, to_block, topics=topics, on_progress=on_progress
        )
        return [log async for chunk in chunks for log in chunk]

    async def chunks(
        self,
        addresses: Sequence[str],
        from_block: int,
        to_block: int,
        *,
        topics: Topics | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """`fetch`, one accepted chunk at a time: each in chain order, the chunks in block
        order. A caller that applies each chunk before asking for the next never holds a long
        history's logs (gigabytes of JSON on a busy chain) all at once."""
        if not addresses:
            return
        start = from_block
        while start <= to_block:
            end = min(to_block, start + self._chunk - 1)
            query = _filter(addresses, topics, fromBlock=hex(start), toBlock=hex(end))
            try:
                chunk: list[dict[str, Any]] = await self._rpc.request("eth_getLogs", [query])
            except RpcError as error:
                span = end - start + 1
                if not _is_range_too_large(error) or span <= self._min_chunk:
                    raise
                self._chunk = max(self._min_chunk, span // 2)
                self._successes = 0
                continue
            _check_chunk(chunk, start, end)
            # Nodes answer in chain order, but the JSON-RPC spec promises none; the sort costs
            # one linear pass when all is in order already.
            chunk.sort(key=_chain_position)
            start = end + 1
            self._note_success()
            if on_progress is not None:
                on_progress(end, to_block)
            yield chunk

    async def fetch_block_logs(
        self,
        addresses: Sequence[str],
        block_hash: str,
        block_number: int,
        topics: Topics | None = None,
    ) -> list[dict[str, Any]]:
        """Logs of one block by hash (EIP-234): exact under reorgs, where a number may name two
        blocks, and refused by a node that does not have that block."""
        if not addresses:
            return []
        query = _filter(addresses, topics, blockHash=block_hash)
        logs: list[dict[str, Any]] = await self._rpc.request("eth_getLogs", [query])
        _check_chunk(logs, block_number, block_number)
        logs.sort(key=_chain_position)
        return logs

    def _note_success(self) -> None:
        self._successes += 1
        if self._successes >= _SUCCESSES_BEFORE_GROWING:
            self._chunk = min(self._max_chunk, self._chunk * 2)
            self._successes = 0


def _check_chunk(chunk: object, from_block: int, to_block: int) -> None:
    if not isinstance(chunk, list):
        raise InconsistentLogsError(f"eth_getLogs answered {type(chunk).__name__}, not a list")
    for entry in chunk:
        if not isinstance(entry, dict) or any(field not in entry for field in _LOG_FIELDS):
            raise InconsistentLogsError("eth_getLogs answered a log without its fields")
        if entry.get("removed") is True:
            raise InconsistentLogsError("eth_getLogs answered a log removed by a reorg")
        try:
            block = int(entry["blockNumber"], 16)
            int(entry["logIndex"], 16)
        except (TypeError, ValueError):
            raise InconsistentLogsError("eth_getLogs answered a log with a bad number") from None
        if not from_block <= block <= to_block:
            raise InconsistentLogsError(
                f"eth_getLogs for blocks {from_block}..{to_block} answered a log of block {block}"
            )


def _filter(addresses: Sequence[str], topics: Topics | None, **where: str) -> dict[str, Any]:
    query: dict[str, Any] = {"address": list(addresses), **where}
    if topics is not None:
        query["topics"] = [
            topic if topic is None or isinstance(topic, str) else list(topic) for topic in topics
        ]
    return query


def _is_range_too_large(error: RpcError) -> bool:
    message = error.message.lower()
    return error.code == _LIMIT_EXCEEDED_CODE or any(p in message for p in _RANGE_TOO_LARGE)


def _chain_position(log: dict[str, Any]) -> tuple[int, int]:
    return int(log["blockNumber"], 16), int(log["logIndex"], 16)
