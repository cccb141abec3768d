"""LogFetcher: chunked eth_getLogs that gives exactly what one unlimited query gives.

One anvil per module holds two TestTokens whose mints (one Transfer log each) are spread over
about 200 blocks, with three mints in one block; the tests only read it. A proxy in front of it
refuses eth_getLogs spans above a limit with a hosted node's message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from eth_abi.abi import encode
from web3 import Web3
from web3.types import RPCEndpoint

from keeper.chain.logs import LogFetcher
from keeper.chain.rpc import RpcClient, RpcError
from keeper.devnet.anvil import AnvilNode, free_port
from keeper.devnet.tx import connect, contract_at, deploy, send
from tests.chain.fake_nodes import RangeLimitedProxy, range_limited_proxy

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()
MINT_ROUNDS = 24
EMPTY_BLOCKS_BETWEEN = 7


@dataclass(frozen=True, slots=True)
class LogChain:
    """A read-only chain with Transfer logs: `mints` of them, the last in `last_block`."""

    node: AnvilNode
    tokens: tuple[str, str]
    recipients: tuple[str, ...]
    mints: int
    batch_block_hash: str
    batch_block: int
    last_block: int


@pytest.fixture(scope="module")
def log_chain() -> Iterator[LogChain]:
    with AnvilNode() as node:
        keys = node.keys()
        owner, recipients = keys[0].address, tuple(key.address for key in keys[1:4])
        w3 = connect(node.rpc_url)
        first, second = (
            contract_at(w3, "TestToken", deploy(w3, "TestToken", owner, name, name, 18))
            for name in ("A", "B")
        )
        mints = 0
        for round_ in range(MINT_ROUNDS):
            send(w3, first.functions.mint(recipients[round_ % 3], round_ + 1), owner)
            mints += 1
            if round_ % 3 == 0:
                send(w3, second.functions.mint(recipients[0], round_ + 1), owner)
                mints += 1
            w3.provider.make_request(RPCEndpoint("anvil_mine"), [hex(EMPTY_BLOCKS_BETWEEN)])

        # Three mints in one block, so order within a block (logIndex) matters too.
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
        for recipient in recipients:
            first.functions.mint(recipient, 1000).transact({"from": owner})
        w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [True])
        batch_block = w3.eth.get_block("latest")
        assert len(batch_block["transactions"]) == 3
        w3.provider.make_request(RPCEndpoint("anvil_mine"), ["0xa"])

        yield LogChain(
            node=node,
            tokens=(first.address, second.address),
            recipients=recipients,
            mints=mints + 3,
            batch_block_hash=batch_block["hash"].to_0x_hex(),
            batch_block=batch_block["number"],
            last_block=batch_block["number"] + 10,
        )


@pytest_asyncio.fixture
async def direct(log_chain: LogChain) -> AsyncIterator[RpcClient]:
    client = RpcClient(log_chain.node.rpc_url)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def limited(log_chain: LogChain) -> AsyncIterator[RangeLimitedProxy]:
    async with range_limited_proxy(log_chain.node.rpc_url, max_blocks=16) as proxy:
        yield proxy


@pytest_asyncio.fixture
async def limited_rpc(limited: RangeLimitedProxy) -> AsyncIterator[RpcClient]:
    client = RpcClient(limited.url)
    try:
        yield client
    finally:
        await client.close()


async def all_logs(rpc: RpcClient, chain: LogChain) -> list[dict[str, Any]]:
    """One unlimited eth_getLogs over the whole chain: the reference answer."""
    query = {"address": list(chain.tokens), "fromBlock": "0x0", "toBlock": hex(chain.last_block)}
    logs: list[dict[str, Any]] = await rpc.request("eth_getLogs", [query])
    return logs


def position(log: dict[str, Any]) -> tuple[int, int]:
    return int(log["blockNumber"], 16), int(log["logIndex"], 16)


async def test_chunks_under_a_node_limit_give_exactly_the_unlimited_answer(
    log_chain: LogChain,
    direct: RpcClient,
    limited: RangeLimitedProxy,
    limited_rpc: RpcClient,
) -> None:
    fetcher = LogFetcher(limited_rpc, initial_chunk_blocks=64, max_chunk_blocks=256)
    progress: list[tuple[int, int]] = []

    logs = await fetcher.fetch(
        log_chain.tokens,
        0,
        log_chain.last_block,
        on_progress=lambda done, end: progress.append((done, end)),
    )

    expected = await all_logs(direct, log_chain)
    assert len(expected) == log_chain.mints
    assert logs == expected
    assert [position(log) for log in logs] == sorted(position(log) for log in logs)
    # The node refused the large chunks; the fetcher settled at or below its limit.
    assert limited.refused > 0
    assert fetcher.chunk_blocks <= 16
    # Progress rose with every chunk and ended at the last block.
    done = [done for done, _ in progress]
    assert done == sorted(set(done))
    assert progress[-1] == (log_chain.last_block, log_chain.last_block)
    assert {end for _, end in progress} == {log_chain.last_block}


async def test_chunks_are_handed_over_one_request_at_a_time(
    log_chain: LogChain,
    direct: RpcClient,
    limited: RangeLimitedProxy,
    limited_rpc: RpcClient,
) -> None:
    """What the back-fill relies on to apply a long history without holding it whole."""
    fetcher = LogFetcher(limited_rpc, initial_chunk_blocks=16, max_chunk_blocks=16)
    handed: list[tuple[int, list[dict[str, Any]]]] = []

    async for chunk in fetcher.chunks(log_chain.tokens, 0, log_chain.last_block):
        handed.append((len(limited.spans), chunk))

    # Each chunk arrived before the next range was asked for.
    assert [requests for requests, _ in handed] == list(range(1, len(handed) + 1))
    assert len(handed) == -(-(log_chain.last_block + 1) // 16)
    for number, (_, chunk) in enumerate(handed):
        assert all(number * 16 <= position(log)[0] < (number + 1) * 16 for log in chunk)
    assert [log for _, chunk in handed for log in chunk] == await all_logs(direct, log_chain)


async def test_chunk_size_is_remembered_across_calls_and_grows_back_when_allowed(
    log_chain: LogChain, limited: RangeLimitedProxy, limited_rpc: RpcClient
) -> None:
    fetcher = LogFetcher(limited_rpc, initial_chunk_blocks=32, max_chunk_blocks=32)
    await fetcher.fetch(log_chain.tokens, 0, 47)
    assert limited.spans == [32, 16, 16, 16]
    limited.spans.clear()

    # The next call starts at the learned size: the node refuses nothing.
    await fetcher.fetch(log_chain.tokens, 48, 63)
    assert limited.spans == [16]
    assert limited.refused == 1

    # Once the node takes larger ranges, a run of successes doubles the chunk, up to the maximum.
    limited.max_blocks = None
    await fetcher.fetch(log_chain.tokens, 64, log_chain.last_block)
    assert max(limited.spans) == 32
    assert fetcher.chunk_blocks == 32


async def test_a_refusal_at_the_smallest_chunk_is_raised(
    log_chain: LogChain, limited: RangeLimitedProxy, limited_rpc: RpcClient
) -> None:
    limited.max_blocks = 0
    fetcher = LogFetcher(limited_rpc, initial_chunk_blocks=32, min_chunk_blocks=4)

    with pytest.raises(RpcError, match="block range too large"):
        await fetcher.fetch(log_chain.tokens, 0, log_chain.last_block)

    assert limited.spans == [32, 16, 8, 4]


async def test_other_errors_are_raised_without_splitting(
    limited: RangeLimitedProxy, limited_rpc: RpcClient
) -> None:
    fetcher = LogFetcher(limited_rpc, initial_chunk_blocks=8)

    with pytest.raises(RpcError) as raised:
        await fetcher.fetch(["0xnot-an-address"], 0, 100)

    assert raised.value.code == -32602
    assert limited.spans == [8]


async def test_topic_filters_select_by_indexed_argument(
    log_chain: LogChain, direct: RpcClient
) -> None:
    recipient = log_chain.recipients[1]
    recipient_topic = "0x" + encode(["address"], [recipient]).hex()
    fetcher = LogFetcher(direct, initial_chunk_blocks=50)

    logs = await fetcher.fetch(
        log_chain.tokens,
        0,
        log_chain.last_block,
        topics=[TRANSFER_TOPIC, None, [recipient_topic]],
    )

    expected = [
        log for log in await all_logs(direct, log_chain) if log["topics"][2] == recipient_topic
    ]
    assert len(expected) == MINT_ROUNDS // 3 + 1
    assert logs == expected


async def test_block_logs_by_hash(log_chain: LogChain, direct: RpcClient) -> None:
    fetcher = LogFetcher(direct)

    logs = await fetcher.fetch_block_logs(
        log_chain.tokens, log_chain.batch_block_hash, log_chain.batch_block
    )

    assert [log["blockHash"] for log in logs] == [log_chain.batch_block_hash] * 3
    assert [int(log["logIndex"], 16) for log in logs] == [0, 1, 2]
    expected = [
        log
        for log in await all_logs(direct, log_chain)
        if log["blockHash"] == log_chain.batch_block_hash
    ]
    assert logs == expected


async def test_no_addresses_means_no_request() -> None:
    # A client for a closed port: any request would fail.
    client = RpcClient(f"http://127.0.0.1:{free_port()}", attempts=1)
    fetcher = LogFetcher(client)
    try:
        assert await fetcher.fetch([], 0, 1_000_000) == []
        assert await fetcher.fetch_block_logs([], "0x" + "00" * 32, 0) == []
    finally:
        await client.close()
