"""Scenario 2: the node restarts with its state (anvil writes it on SIGTERM and loads it on the
same port). The keeper keeps running through the outage, follows the restarted node from where
the chain is, and liquidates a crash that happens after the restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.devnet.network import restart_anvil
from tests.faults.criteria import assert_fault_criteria, settle
from tests.faults.waits import chain_head, until_liquidated, until_processed
from tests.keeper.helpers import (
    Harness,
    crash,
    keeper_in_process,
    liquidatable_at,
    on_chain,
    wait_for_log_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]


async def test_the_keeper_runs_through_a_node_restart_and_liquidates_after_it(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(
        accounts=20, seed=1, block_time=1, dump_state=tmp_path / "anvil-state.json"
    )
    keeper = net.roles.keeper.address
    start = net.w3.eth.block_number
    async with keeper_in_process(net, net.roles.keeper, tmp_path) as running:
        await wait_for_log_async(running, "keeper.following")
        before_crash = await on_chain(crash, net, "WETH", -3_000)
        before = await on_chain(liquidatable_at, net, before_crash)
        assert before, "the first crash should sink an account"
        await until_liquidated(running, net, before, before_crash)

        old_pid, old_head = net.node.pid, await chain_head(net)
        await on_chain(restart_anvil, net, block_time=1)
        assert net.node.pid != old_pid
        assert await chain_head(net) >= old_head, "the restarted node lost blocks"
        await until_processed(running, await chain_head(net) + 1)

        after_crash = await on_chain(crash, net, "WBTC", -2_500)
        after = await on_chain(liquidatable_at, net, after_crash)
        assert after, "the second crash should sink an account"
        await until_liquidated(running, net, after, after_crash)
        snapshot = await settle(running, net, keeper)
        running.check_alive()

    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    assert verdict.keeper_liquidations.keys() == before.keys() | after.keys()
