"""Shared fixtures: one devnet (real anvil + reference protocol) per test session.

Tests never depend on a chain left running: the session starts its own anvil on a free port and
stops it at the end. Each test that changes the chain takes the `chain` fixture, which snapshots
before the test and reverts after, so tests see the freshly deployed protocol and not each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from keeper.chain.rpc import RpcClient
from keeper.devnet.anvil import AnvilNode
from keeper.devnet.controls import reverted_after
from keeper.devnet.network import Devnet, running_devnet
from tests.keeper.helpers import Harness


@pytest.fixture(scope="session")
def devnet() -> Iterator[Devnet]:
    with running_devnet(accounts=0) as net:
        yield net


@pytest.fixture
def chain(devnet: Devnet) -> Iterator[Devnet]:
    with reverted_after(devnet.w3):
        yield devnet


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """Devnets and keeper processes of one test (a running keeper follows the chain forward, so
    it cannot share the session devnet, which tests snapshot and revert); stopped at the end,
    keepers first."""
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    """A bare anvil of the test's own (no protocol), stopped at the end."""
    with AnvilNode() as anvil:
        yield anvil


@pytest_asyncio.fixture
async def rpc(node: AnvilNode) -> AsyncIterator[RpcClient]:
    """An RpcClient on `node` with short timeouts and retries, closed at the end."""
    client = RpcClient(node.rpc_url, timeout_s=5.0, attempts=2, max_backoff_s=0.05)
    try:
        yield client
    finally:
        await client.close()
