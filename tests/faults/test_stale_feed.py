"""Scenario 10: feeds go stale (chain time passes their staleness period) and a crash then sinks
accounts that also hold a stale-priced token. The oracle refuses stale prices, so no one can
liquidate them and the keeper must send nothing; once the feeds are re-published (the same
answers, fresh) those accounts are liquidatable and the keeper must liquidate them."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3.exceptions import ContractLogicError

from keeper.devnet.controls import advance_time, latest_answer
from keeper.devnet.network import Devnet
from tests.faults.criteria import LIQUIDATABLE_BLOCKS, assert_fault_criteria, settle
from tests.faults.waits import nonce, until_block, until_liquidated
from tests.keeper.helpers import (
    Harness,
    crash,
    health_factor,
    keeper_in_process,
    liquidatable_at,
    liquidations,
    mine,
    mine_every,
    on_chain,
    stop_mining,
    wait_for_log_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]


def _republish_in_one_block(net: Devnet) -> int:
    """Every feed's latest answer published again, all in one block; returns that block."""
    w3 = net.w3
    stop_mining(w3)
    for symbol in net.deployment.tokens:
        feed = net.deployment.contract(w3, f"PriceFeed.{symbol}")
        answer = latest_answer(w3, net.deployment, symbol)
        feed.functions.updateAnswer(answer).transact({"from": net.roles.deployer.address})
    block = mine(w3)
    mine_every(w3, 1)
    return block


def _refused(net: Devnet, market: str, account: str, block: int) -> bool:
    """Whether the contracts refuse to value `account` at `block` (a stale price)."""
    try:
        health_factor(net, market, account, block)
    except ContractLogicError:
        return True
    return False


async def test_nothing_is_sent_on_a_stale_price_and_all_is_liquidated_once_fresh(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper = net.w3, net.roles.keeper.address
    start = w3.eth.block_number
    async with keeper_in_process(net, net.roles.keeper, tmp_path) as running:
        await wait_for_log_async(running, "keeper.following")
        sent_before = await nonce(net, keeper)
        await on_chain(advance_time, w3, net.spec.staleness_period_s + 60)
        crash_block = await on_chain(crash, net, "WETH", -3_000)
        await until_block(running, net, crash_block + LIQUIDATABLE_BLOCKS + 1)
        assert await nonce(net, keeper) == sent_before, "the keeper sent on a stale price"

        fresh_block = await on_chain(_republish_in_one_block, net)
        sunk = await on_chain(liquidatable_at, net, fresh_block)
        assert sunk, "fresh again, the crash's victims should be liquidatable"
        for account, market in sunk.items():
            assert await on_chain(_refused, net, market, account, fresh_block - 1), (
                f"{account} could be valued before the feeds were fresh again"
            )
        assert await on_chain(liquidations, net, crash_block, fresh_block) == []
        await until_liquidated(running, net, sunk, fresh_block)
        snapshot = await settle(running, net, keeper)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    assert verdict.keeper_liquidations.keys() == sunk.keys()
    assert all(tx.block > fresh_block for tx in verdict.keeper_liquidations.values())
