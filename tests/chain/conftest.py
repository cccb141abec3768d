"""Each chain test gets its own anvil (started and stopped here) and an RpcClient on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from keeper.chain.rpc import RpcClient
from keeper.devnet.anvil import AnvilNode


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    with AnvilNode() as anvil:
        yield anvil


@pytest_asyncio.fixture
async def rpc(node: AnvilNode) -> AsyncIterator[RpcClient]:
    client = RpcClient(node.rpc_url, timeout_s=5.0, attempts=2, max_backoff_s=0.05)
    try:
        yield client
    finally:
        await client.close()
