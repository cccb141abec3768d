"""Scenario 9: a competing liquidator. It takes one account in the very block that sinks it, and
another while the keeper's liquidation of that account waits unmined (the base fee jumps above
what the keeper offered, the competitor pays more). The keeper must liquidate everything else,
never get a liquidation mined that reverts because the account is gone, and leave no nonce gap
where its own liquidation of that account was."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3.types import TxParams, Wei

from keeper.devnet.controls import latest_answer
from keeper.devnet.network import Devnet
from keeper.devnet.report import read_accounts
from keeper.devnet.tx import send
from tests.faults.criteria import assert_fault_criteria, settle
from tests.faults.waits import until_liquidated, until_processed
from tests.keeper.helpers import (
    GWEI,
    Harness,
    InProcessKeeper,
    assert_nonces_clean,
    keeper_in_process,
    liquidatable_at,
    manager_of,
    mine,
    mine_every,
    on_chain,
    pending_of,
    rpc,
    stop_mining,
    wait_for_log_async,
    wait_until_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

MAX_UINT256 = 2**256 - 1
LIQUIDATION_GAS = 2_000_000


def _send_crash(net: Devnet, symbol: str, change_bps: int, *, max_fee: int) -> None:
    """A price update sent without waiting for a block."""
    feed = net.deployment.contract(net.w3, f"PriceFeed.{symbol}")
    new = latest_answer(net.w3, net.deployment, symbol) * (10_000 + change_bps) // 10_000
    params: TxParams = {
        "from": net.roles.deployer.address,
        "maxFeePerGas": Wei(max_fee),
        "maxPriorityFeePerGas": Wei(GWEI),
    }
    feed.functions.updateAnswer(new).transact(params)


def _send_rival(net: Devnet, market: str, account: str, *, max_fee: int) -> str:
    """The competitor's liquidation with a fixed gas limit (it may be sent before the block that
    makes the account liquidatable, when an estimate would fail); returns its hash."""
    competitor = net.roles.competitor.address
    params: TxParams = {
        "from": competitor,
        "gas": LIQUIDATION_GAS,
        "maxFeePerGas": Wei(max_fee),
        "maxPriorityFeePerGas": Wei(2 * GWEI),
    }
    call = manager_of(net, market).functions.liquidateCreditAccount(account, competitor)
    return call.transact(params).to_0x_hex()


def _mined_ok(net: Devnet, tx_hash: str) -> int:
    """The block of a transaction that must have been mined with status 1."""
    receipt = rpc(net.w3, "eth_getTransactionReceipt", tx_hash)
    assert receipt is not None, f"{tx_hash} was not mined"
    assert int(receipt["status"], 16) == 1, f"{tx_hash} reverted: {receipt}"
    return int(receipt["blockNumber"], 16)


async def _keeper_pooled(running: InProcessKeeper, net: Devnet, count: int) -> None:
    keeper = net.roles.keeper.address

    async def waiting() -> bool:
        return len(await on_chain(pending_of, net.w3, keeper)) >= count

    await wait_until_async(waiting, what=f"{count} keeper transactions pooled", source=running)


async def test_a_competitor_first_costs_the_keeper_no_reverted_transaction(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper, competitor = net.w3, net.roles.keeper.address, net.roles.competitor.address
    for market in net.deployment.markets:
        token = net.deployment.contract(w3, market)
        send(w3, token.functions.approve(manager_of(net, market).address, MAX_UINT256), competitor)
    x = min(
        (
            v
            for v in read_accounts(w3, net.deployment)
            if v.market == "USDC" and "WETH" in v.balances
        ),
        key=lambda view: view.health_factor_wad,
    ).address
    start = w3.eth.block_number
    async with keeper_in_process(
        net, net.roles.keeper, tmp_path, inclusion_timeout_s=1.0
    ) as running:
        await wait_for_log_async(running, "keeper.following")

        # Same block: the crash, then the competitor's liquidation of x (lower fee, later).
        await on_chain(stop_mining, w3)
        await on_chain(_send_crash, net, "WETH", -3_000, max_fee=50 * GWEI)
        rival_x = await on_chain(_send_rival, net, "USDC", x, max_fee=10 * GWEI)
        first_crash = await on_chain(mine, w3)
        assert await on_chain(_mined_ok, net, rival_x) == first_crash
        first = await on_chain(liquidatable_at, net, first_crash)
        assert first, "the crash should leave accounts for the keeper"
        await on_chain(mine_every, w3, 1)
        await until_liquidated(running, net, first, first_crash)

        # While pending: the keeper's liquidation of y waits, priced out; the competitor's wins.
        await on_chain(stop_mining, w3)
        await on_chain(_send_crash, net, "WBTC", -2_000, max_fee=50 * GWEI)
        second_crash = await on_chain(mine, w3)
        sunk = await on_chain(liquidatable_at, net, second_crash)
        assert sunk, "the second crash should sink an account"
        await until_processed(running, second_crash)
        await _keeper_pooled(running, net, len(sunk))
        y, y_market = min(sunk.items())
        await on_chain(rpc, w3, "anvil_setNextBlockBaseFeePerGas", hex(100 * GWEI))
        rival_y = await on_chain(_send_rival, net, y_market, y, max_fee=300 * GWEI)
        rival_block = await on_chain(mine, w3)
        assert await on_chain(_mined_ok, net, rival_y) == rival_block
        await on_chain(mine_every, w3, 1)
        await until_liquidated(running, net, sunk, second_crash)
        snapshot = await settle(running, net, keeper)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    by_account = {found.account: found.liquidator for found in verdict.liquidations}
    assert by_account[x] == by_account[y] == competitor
    assert verdict.keeper_liquidations.keys() == (first.keys() | sunk.keys()) - {y}
    await on_chain(assert_nonces_clean, w3, keeper, verdict.keeper_txs)
