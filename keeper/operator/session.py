"""What every operator command does before it answers: connect, and back-fill the same exact state
the daemon would act on, showing progress on a terminal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from keeper.chain.rpc import RpcClient
from keeper.config import KeeperConfig
from keeper.operator.progress import BackfillMeter
from keeper.ops.logging import configure_logging
from keeper.startup import LoadedState, load_state


def quiet_logging() -> None:
    """Warnings and errors only, on stderr: the commands print their own answer on stdout."""
    configure_logging(level=logging.WARNING)


@asynccontextmanager
async def connected(config: KeeperConfig) -> AsyncIterator[RpcClient]:
    """An RPC client for `chain.rpc_url`, closed on the way out."""
    rpc = RpcClient(config.chain.rpc_url)
    try:
        yield rpc
    finally:
        await rpc.close()


async def backfilled(rpc: RpcClient, config: KeeperConfig) -> LoadedState:
    """`load_state` with a progress line on a terminal's stderr."""
    with BackfillMeter() as meter:
        return await load_state(rpc, config, meter)
