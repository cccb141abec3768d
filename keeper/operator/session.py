"""What every operator command does before it answers: connect, back-fill the same exact state the
daemon would act on, find the account asked about, and (for commands that sign) assemble the
daemon's liquidator and dispatcher around the signer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from keeper.chain.rpc import RpcClient
from keeper.config import KeeperConfig, _checked_address
from keeper.execution.dispatcher import Dispatcher, TxRequest
from keeper.execution.liquidator import LiquidationPolicy, Liquidator
from keeper.execution.signer import Signer
from keeper.operator.progress import BackfillMeter
from keeper.ops.logging import configure_logging
from keeper.startup import LoadedState, load_state
from keeper.state.store import ProtocolState


def quiet_logging() -> None:
    """Warnings and errors only, on stderr: the commands print their own answer on stdout."""
    configure_logging(level=logging.WARNING)


def checked_address(name: str, value: str) -> str:
    """`value` checksummed; a malformed address raises `ConfigError` naming `name` (exit 2)."""
    return _checked_address(name, value)


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


def liquidation_policy(config: KeeperConfig) -> LiquidationPolicy:
    """The `[liquidation]` section as the execution stage takes it."""
    settings = config.liquidation
    return LiquidationPolicy(
        native_token=settings.native_token,
        min_profit_usd=settings.min_profit_usd,
        emergency=settings.emergency,
        priority_fee_wei=settings.priority_fee_wei,
        max_fee_wei=settings.max_fee_wei,
        gas_limit_margin_bps=settings.gas_limit_margin_bps,
        max_failures=settings.max_failures,
        failure_cooldown_s=settings.failure_cooldown_s,
    )


def signing_pipeline(
    rpc: RpcClient, config: KeeperConfig, signer: Signer, state: ProtocolState
) -> tuple[Liquidator, Dispatcher]:
    """The daemon's liquidator and dispatcher for `signer`, wired the same way (the dispatcher
    asks the liquidator whether a stuck liquidation is still wanted before replacing it)."""
    liquidator: Liquidator

    async def still_wanted(request: TxRequest) -> bool:
        return await liquidator.still_wanted(request)

    settings = config.liquidation
    dispatcher = Dispatcher(
        rpc,
        signer,
        config.chain.chain_id,
        priority_fee_wei=settings.priority_fee_wei,
        max_fee_wei=settings.max_fee_wei,
        inclusion_timeout_s=settings.inclusion_timeout_s,
        still_wanted=still_wanted,
    )
    liquidator = Liquidator(rpc, state, dispatcher, signer.address, liquidation_policy(config))
    return liquidator, dispatcher
