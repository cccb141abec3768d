"""The two strategies other keepers use, implemented as well as they can be, to compare against.

(a) *Per-account view*: one `eth_call` of `CreditManager.calcHealthFactor(account)` per account
    per block, sent as JSON-RPC batches of `_PER_ACCOUNT_BATCH` calls (one HTTP request each, four
    in flight), calldata built by hand: no per-call web3 overhead at all.
(b) *Multicall scan*: the same view for every account through Multicall3 `aggregate3`,
    `_MULTICALL_CHUNK` accounts per `eth_call`, four in flight.

Both read the account list from `creditAccounts(offset, limit)` once (their cold start), then scan
a given block; `Scan` says what they found and what it cost. Neither sends a transaction: their
reaction can only be later than the scan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from eth_abi.abi import decode

from keeper.protocol.calls import MULTICALL3_ADDRESS, Call, function_abi
from keeper.protocol.events import checksum

WAD = 10**18
_PER_ACCOUNT_BATCH = 500
_MULTICALL_CHUNK = 500
_IN_FLIGHT = 4
_LIST_PAGE = 5_000


@dataclass(frozen=True, slots=True)
class Scan:
    """One scan of every account at one block."""

    liquidatable: frozenset[str]
    requests: int
    wall_s: float
    cpu_s: float  # of this (the scanning) process


class JsonRpc:
    """Bare JSON-RPC over one aiohttp session; each request or batch is one HTTP POST."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        self._next_id = 0

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, params: list[Any]) -> Any:
        (result,) = await self.batch([(method, params)])
        return result

    async def batch(self, requests: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results in request order; any error answer raises."""
        first = self._next_id
        self._next_id += len(requests)
        body = [
            {"jsonrpc": "2.0", "id": first + i, "method": method, "params": params}
            for i, (method, params) in enumerate(requests)
        ]
        async with self._session.post(self._url, json=body) as response:
            answers = await response.json(content_type=None)
        by_id = {answer["id"]: answer for answer in answers}
        results = []
        for i in range(len(requests)):
            answer = by_id[first + i]
            if "error" in answer:
                raise RuntimeError(f"{requests[i][0]} failed: {answer['error']}")
            results.append(answer["result"])
        return results


async def list_accounts(rpc: JsonRpc, manager: str, *, block: int) -> list[str]:
    """Every account open at `block`, page by page, as a scanning keeper must learn them."""
    tag = hex(block)
    count_abi = function_abi("CreditManager", "creditAccountsCount")
    page_abi = function_abi("CreditManager", "creditAccounts")
    (count,) = count_abi.decode(
        await rpc.call("eth_call", [{"to": manager, "data": count_abi.encode()}, tag])
    )
    pages = [
        ("eth_call", [{"to": manager, "data": page_abi.encode(offset, _LIST_PAGE)}, tag])
        for offset in range(0, count, _LIST_PAGE)
    ]
    accounts: list[str] = []
    for result in await rpc.batch(pages):
        accounts += [checksum(account) for account in page_abi.decode(result)[0]]
    return accounts


async def scan_per_account(rpc: JsonRpc, manager: str, accounts: Sequence[str], block: int) -> Scan:
    """Strategy (a): one `calcHealthFactor` eth_call per account."""
    selector = function_abi("CreditManager", "calcHealthFactor").selector.hex()
    tag = hex(block)

    async def scan_chunk(chunk: Sequence[str]) -> list[str]:
        requests = [
            ("eth_call", [{"to": manager, "data": f"0x{selector}{account[2:].lower():0>64}"}, tag])
            for account in chunk
        ]
        answers = await rpc.batch(requests)
        return [a for a, hf in zip(chunk, answers, strict=True) if int(hf, 16) < WAD]

    return await _timed(accounts, _PER_ACCOUNT_BATCH, scan_chunk, requests=len(accounts))


async def scan_multicall(rpc: JsonRpc, manager: str, accounts: Sequence[str], block: int) -> Scan:
    """Strategy (b): `calcHealthFactor` of `_MULTICALL_CHUNK` accounts per aggregate3 eth_call."""
    view = function_abi("CreditManager", "calcHealthFactor")
    aggregate3 = function_abi("Multicall3", "aggregate3")
    selector = view.selector
    tag = hex(block)

    async def scan_chunk(chunk: Sequence[str]) -> list[str]:
        calls = [
            (manager, True, selector + bytes(12) + bytes.fromhex(account[2:])) for account in chunk
        ]
        data = Call(MULTICALL3_ADDRESS, aggregate3, (calls,)).data
        result = await rpc.call("eth_call", [{"to": MULTICALL3_ADDRESS, "data": data}, tag])
        (answers,) = aggregate3.decode(result)
        liquidatable = []
        for account, (success, return_data) in zip(chunk, answers, strict=True):
            if not success:
                raise RuntimeError(f"calcHealthFactor({account}) reverted in the multicall")
            if decode(("uint256",), return_data)[0] < WAD:
                liquidatable.append(account)
        return liquidatable

    chunks = -(-len(accounts) // _MULTICALL_CHUNK)
    return await _timed(accounts, _MULTICALL_CHUNK, scan_chunk, requests=chunks)


async def _timed(
    accounts: Sequence[str],
    chunk_size: int,
    scan_chunk: Callable[[Sequence[str]], Awaitable[list[str]]],
    *,
    requests: int,
) -> Scan:
    """Runs `scan_chunk` over `accounts` with `_IN_FLIGHT` chunks at a time."""
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def gated(chunk: Sequence[str]) -> list[str]:
        async with gate:
            return await scan_chunk(chunk)

    wall, cpu = time.perf_counter(), time.process_time()
    found = await asyncio.gather(
        *(gated(accounts[i : i + chunk_size]) for i in range(0, len(accounts), chunk_size))
    )
    return Scan(
        frozenset(account for chunk in found for account in chunk),
        requests,
        time.perf_counter() - wall,
        time.process_time() - cpu,
    )
