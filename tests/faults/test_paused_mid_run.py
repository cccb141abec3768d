"""Scenario 11: the protocol is paused while the keeper runs. Accounts that sink below 1 during
the pause cannot be liquidated by a keeper that is no emergency liquidator, so it must send
nothing (no transaction to revert, no nonce spent); once unpaused it must liquidate them."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.devnet.tx import send
from tests.faults.criteria import assert_fault_criteria, settle
from tests.faults.waits import nonce, until_block, until_liquidated
from tests.keeper.helpers import (
    Harness,
    crash,
    keeper_in_process,
    liquidatable_at,
    liquidations,
    managers,
    on_chain,
    wait_for_log_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

PAUSED_BLOCKS = 4  # longer than the criteria's 3: the pause, not the keeper, holds them back


async def test_accounts_sunk_while_paused_are_liquidated_after_the_unpause(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper, owner = net.w3, net.roles.keeper.address, net.roles.deployer.address
    start = w3.eth.block_number
    # Without the devnet's BatchLiquidator, an emergency liquidator of every market.
    async with keeper_in_process(
        net, net.roles.keeper, tmp_path, batch_liquidator=False
    ) as running:
        await wait_for_log_async(running, "keeper.following")
        for manager in managers(net).values():
            await on_chain(send, w3, manager.functions.pause(), owner)
        sent_before = await nonce(net, keeper)
        crash_block = await on_chain(crash, net, "WETH", -3_000)
        below = await on_chain(liquidatable_at, net, crash_block)
        assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"

        await until_block(running, net, crash_block + PAUSED_BLOCKS)
        assert await on_chain(liquidations, net, crash_block) == []
        assert await nonce(net, keeper) == sent_before, "the keeper sent while paused"

        unpaused = [
            (await on_chain(send, w3, manager.functions.unpause(), owner))["blockNumber"]
            for manager in managers(net).values()
        ]
        found = await until_liquidated(running, net, below, crash_block)
        snapshot = await settle(running, net, keeper)

    assert all(liquidation.block > min(unpaused) for liquidation in found), found
    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    assert verdict.keeper_liquidations.keys() == below.keys(), "the keeper, no one else"
