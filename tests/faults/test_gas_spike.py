"""Scenario 7: the base fee spikes while the keeper's liquidations wait in the pool. anvil drops a
pooled transaction whose max fee falls below the base fee, as a busy node would leave it
unmined. The keeper must replace each at its nonce with bumped fees, never above its
`max_fee_gwei` cap, and get each liquidation included exactly once with clean nonces: whether
the spike stays below the cap (it pays up to the cap at once) or rises above it (it waits at the
cap until the base fee falls back below it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_typing import HexStr
from web3.types import TxParams, Wei

from keeper.devnet.controls import latest_answer
from keeper.devnet.network import Devnet
from tests.faults.criteria import Verdict, assert_fault_criteria, settle
from tests.faults.waits import until_liquidated
from tests.keeper.helpers import (
    GWEI,
    Harness,
    InProcessKeeper,
    assert_nonces_clean,
    keeper_in_process,
    liquidatable_at,
    mine,
    mine_every,
    mined_transactions,
    on_chain,
    pending_of,
    rpc,
    stop_mining,
    wait_for_account_log_async,
    wait_for_log_async,
    wait_until_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

CAP_GWEI = 30


def _crash_unmined(net: Devnet, symbol: str, change_bps: int) -> None:
    """Sends a price crash without waiting for a block (mining is stopped)."""
    feed = net.deployment.contract(net.w3, f"PriceFeed.{symbol}")
    new = latest_answer(net.w3, net.deployment, symbol) * (10_000 + change_bps) // 10_000
    params: TxParams = {"from": net.roles.deployer.address}
    feed.functions.updateAnswer(new).transact(params)


async def _pooled(running: InProcessKeeper, net: Devnet, count: int) -> dict[int, int]:
    """Waits until `count` keeper transactions wait in the pool; their max fee by nonce."""
    keeper = net.roles.keeper.address

    async def waiting() -> dict[int, int] | None:
        pool = await on_chain(pending_of, net.w3, keeper)
        if len(pool) < count:
            return None
        return {nonce: int(tx["maxFeePerGas"], 16) for nonce, tx in pool.items()}

    return await wait_until_async(
        waiting, what=f"{count} keeper transactions in the pool", source=running
    )


async def _spike(
    harness: Harness, tmp_path: Path, spike_gwei: int
) -> tuple[Devnet, dict[str, str], dict[int, int], Verdict]:
    """Crash with mining stopped, then a block whose base fee is `spike_gwei`; then a block a
    second. Returns the devnet, the accounts the crash sank, the max fee of each liquidation
    first sent (by nonce) and the verdict."""
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper = net.w3, net.roles.keeper.address
    start = w3.eth.block_number
    async with keeper_in_process(
        net,
        net.roles.keeper,
        tmp_path,
        inclusion_timeout_s=1.0,
        settings={"liquidation": {"max_fee_gwei": CAP_GWEI}},
    ) as running:
        await wait_for_log_async(running, "keeper.following")
        await on_chain(stop_mining, w3)
        await on_chain(_crash_unmined, net, "WETH", -3_000)
        crash_block = await on_chain(mine, w3)
        below = await on_chain(liquidatable_at, net, crash_block)
        assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"
        # One transaction per key: each account's, or a market's batch.
        keys = {
            (await wait_for_account_log_async(running, "dispatcher.sent", account))["key"]
            for account in below
        }
        first = await _pooled(running, net, len(keys))
        assert max(first.values()) < spike_gwei * GWEI, "the spike must price them out"

        await on_chain(rpc, w3, "anvil_setNextBlockBaseFeePerGas", hex(spike_gwei * GWEI))
        spike_block = await on_chain(mine, w3)
        assert not await on_chain(mined_transactions, w3, keeper, spike_block)
        await on_chain(mine_every, w3, 1)
        await until_liquidated(running, net, below, crash_block)
        snapshot = await settle(running, net, keeper)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    assert verdict.keeper_liquidations.keys() == below.keys(), "the keeper liquidated them all"
    await on_chain(assert_nonces_clean, w3, keeper, verdict.keeper_txs)
    return net, below, first, verdict


def _max_fee(net: Devnet, tx_hash: str) -> int:
    fee: int = net.w3.eth.get_transaction(HexStr(tx_hash))["maxFeePerGas"]
    return fee


async def test_a_spike_below_the_cap_is_outbid_at_the_cap(harness: Harness, tmp_path: Path) -> None:
    net, _, first, verdict = await _spike(harness, tmp_path, spike_gwei=20)
    for account, tx in verdict.keeper_liquidations.items():
        paid = await on_chain(_max_fee, net, tx.tx_hash)
        assert tx.nonce in first, f"{account} was liquidated at a nonce never pooled before"
        assert paid == Wei(CAP_GWEI * GWEI), (
            f"{account}: replaced at the same nonce with max fee {paid}, not the cap: twice the "
            "spiked base fee is above the cap, so the cap is what the keeper must offer"
        )


async def test_a_spike_above_the_cap_waits_at_the_cap_until_the_base_fee_falls(
    harness: Harness, tmp_path: Path
) -> None:
    net, _, first, verdict = await _spike(harness, tmp_path, spike_gwei=40)
    for account, tx in verdict.keeper_liquidations.items():
        paid = await on_chain(_max_fee, net, tx.tx_hash)
        assert tx.nonce in first, f"{account} was liquidated at a nonce never pooled before"
        assert paid <= CAP_GWEI * GWEI, f"{account}: max fee {paid} above the cap"
