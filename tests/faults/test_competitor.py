"""Scenario 9: another liquidator gets there first. The keeper must not pay for a transaction
that reverts because the account is already gone: neither when the competitor's liquidation lands
in the same block as the crash, nor when it lands while the keeper's own transaction is not yet
mined (its nonce then goes to a cancellation), nor when it lands just before the keeper's batch
in one block (the batch skips that account and liquidates the rest). Everything else it
liquidates, and the run ends with the fault suite's verdict.

Mining is driven by hand (`evm_mine`) so each race is decided exactly, not by timing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from web3.types import TxParams, Wei

from keeper.devnet.controls import latest_answer
from keeper.devnet.network import Devnet
from keeper.devnet.report import read_accounts
from keeper.devnet.tx import send
from keeper.execution.batch import key_accounts
from tests.faults.criteria import assert_fault_criteria, settle
from tests.faults.waits import until_processed
from tests.keeper.helpers import (
    GWEI,
    Harness,
    InProcessKeeper,
    assert_nonces_clean,
    check_keeper_transactions,
    crash_in_own_block,
    keeper_in_process,
    liquidatable_at,
    manager_of,
    mine,
    mine_every,
    mined_transactions,
    on_chain,
    rpc,
    stop_mining,
    wait_for_account_log_async,
    wait_for_log_async,
    wait_until_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

MAX_UINT256 = 2**256 - 1
LIQUIDATION_GAS = 2_000_000


def _send_crash(net: Devnet, symbol: str, change_bps: int, *, max_fee: int, tip: int) -> str:
    """Sends a price update without waiting for it to be mined; returns its hash."""
    feed = net.deployment.contract(net.w3, f"PriceFeed.{symbol}")
    new = latest_answer(net.w3, net.deployment, symbol) * (10_000 + change_bps) // 10_000
    params: TxParams = {
        "from": net.roles.deployer.address,
        "maxFeePerGas": Wei(max_fee),
        "maxPriorityFeePerGas": Wei(tip),
    }
    tx_hash = feed.functions.updateAnswer(new).transact(params)
    return tx_hash.to_0x_hex()


def _send_competitor_liquidation(
    net: Devnet, market: str, account: str, *, max_fee: int, tip: int
) -> str:
    """The competitor's liquidation, with an explicit gas limit: it may be sent before the block
    that makes the account liquidatable, when an estimate would fail."""
    competitor = net.roles.competitor.address
    params: TxParams = {
        "from": competitor,
        "gas": LIQUIDATION_GAS,
        "maxFeePerGas": Wei(max_fee),
        "maxPriorityFeePerGas": Wei(tip),
    }
    liquidate = manager_of(net, market).functions.liquidateCreditAccount(account, competitor)
    tx_hash = liquidate.transact(params)
    return tx_hash.to_0x_hex()


def _receipt(net: Devnet, tx_hash: str) -> dict[str, int]:
    receipt = rpc(net.w3, "eth_getTransactionReceipt", tx_hash)
    assert receipt is not None, f"{tx_hash} not mined"
    return {
        "block": int(receipt["blockNumber"], 16),
        "index": int(receipt["transactionIndex"], 16),
        "status": int(receipt["status"], 16),
    }


def _keeper_holds(running: InProcessKeeper, market: str, net: Devnet, account: str) -> bool:
    pipeline = running.keeper.pipeline
    assert pipeline is not None
    manager = manager_of(net, market).address
    return account in pipeline.state.markets[manager].accounts or (
        account in pipeline.monitor.books[manager]
    )


async def _sent_nonce(running: InProcessKeeper, account: str) -> int:
    """The nonce the keeper's dispatcher gave its liquidation of `account` (waits for it)."""
    sent = await wait_for_log_async(running, "dispatcher.sent", key=f"liquidate:{account}")
    nonce: int = sent["nonce"]
    return nonce


async def _settled(running: InProcessKeeper, net: Devnet, nonce: int) -> None:
    """Waits until the chain has mined the keeper's transactions up to `nonce`."""
    address = net.roles.keeper.address

    async def mined() -> bool:
        return await on_chain(net.w3.eth.get_transaction_count, address, "latest") > nonce

    await wait_until_async(mined, what=f"the keeper's nonce {nonce} to be mined", source=running)


async def _same_block_as_the_crash(running: InProcessKeeper, net: Devnet, x: str) -> dict[str, str]:
    """The crash and the competitor's liquidation of `x` in one block, the crash first (anvil
    orders its pool by max fee): the keeper learns of both at once and must not chase `x`.
    Returns the accounts the crash left for the keeper, once it has liquidated them."""
    w3 = net.w3
    crash_tx = await on_chain(_send_crash, net, "WETH", -3_000, max_fee=50 * GWEI, tip=GWEI)
    rival_tx = await on_chain(
        _send_competitor_liquidation, net, "USDC", x, max_fee=10 * GWEI, tip=GWEI
    )
    crash_block = await on_chain(mine, w3)
    crashed = await on_chain(_receipt, net, crash_tx)
    rival = await on_chain(_receipt, net, rival_tx)
    assert crashed["block"] == rival["block"] == crash_block
    assert crashed["index"] < rival["index"]
    assert rival["status"] == 1, "the competitor's liquidation failed: x was not below 1"
    await until_processed(running, crash_block)
    assert not _keeper_holds(running, "USDC", net, x)
    others = await on_chain(liquidatable_at, net, crash_block)
    assert others, "the crash should leave accounts for the keeper too"
    nonces = [await _sent_nonce(running, account) for account in others]
    await on_chain(mine, w3)
    await _settled(running, net, max(nonces))
    return others


async def _while_the_keepers_transaction_waits(
    running: InProcessKeeper, net: Devnet
) -> tuple[str, dict[str, str], int]:
    """The keeper's liquidation of y is not mined (the base fee jumps above what it offered;
    anvil then drops it from its pool, a busier node would keep it waiting) while the
    competitor's, paying more, is. Sending it again at a higher fee would revert: the keeper must
    spend the nonce on a cancellation instead. Returns y, every account the crash sank, and the
    block of the cancellation."""
    w3 = net.w3
    crash_tx = await on_chain(_send_crash, net, "WBTC", -2_000, max_fee=50 * GWEI, tip=GWEI)
    crash_block = await on_chain(mine, w3)
    assert (await on_chain(_receipt, net, crash_tx))["status"] == 1
    sunk = await on_chain(liquidatable_at, net, crash_block)
    assert sunk, "the WBTC crash should sink an account"
    y, y_market = min(sunk.items())
    nonces = {account: await _sent_nonce(running, account) for account in sunk}
    await on_chain(rpc, w3, "anvil_setNextBlockBaseFeePerGas", hex(100 * GWEI))
    rival_tx = await on_chain(
        _send_competitor_liquidation, net, y_market, y, max_fee=300 * GWEI, tip=2 * GWEI
    )
    rival_block = await on_chain(mine, w3)
    assert (await on_chain(_receipt, net, rival_tx))["status"] == 1
    keeper_address = net.roles.keeper.address
    assert not await on_chain(mined_transactions, w3, keeper_address, rival_block)
    await on_chain(mine_every, w3, 1)
    await _settled(running, net, max(nonces.values()))
    (spent,) = [
        tx
        for tx in await on_chain(mined_transactions, w3, keeper_address, rival_block)
        if tx.nonce == nonces[y]
    ]
    assert spent.status == 1, f"the keeper's transaction at y's nonce reverted: {spent}"
    assert spent.to == keeper_address, f"the keeper's nonce for y went to {spent.to}"
    await wait_for_account_log_async(running, "liquidation.cancelled", y, tx_hash=spent.tx_hash)
    await until_processed(running, spent.block)
    assert not _keeper_holds(running, y_market, net, y)
    return y, sunk, spent.block


async def test_a_competitor_first_costs_the_keeper_no_reverted_transaction(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=20, seed=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    competitor = net.roles.competitor.address
    for market in net.deployment.markets:
        token = net.deployment.contract(w3, market)
        send(w3, token.functions.approve(manager_of(net, market).address, MAX_UINT256), competitor)
    x = min(
        (
            v
            for v in read_accounts(w3, net.deployment)
            if v.market == "USDC" and "WETH" in v.balances
        ),
        key=lambda v: v.health_factor_wad,
    ).address
    start_block = w3.eth.block_number

    # One transaction per account: each race is about one account's own transaction.
    async with keeper_in_process(
        net, net.roles.keeper, tmp_path, inclusion_timeout_s=2.0, batch_liquidator=False
    ) as running:
        await wait_for_log_async(running, "keeper.following")
        await on_chain(stop_mining, w3)
        others = await _same_block_as_the_crash(running, net, x)
        y, sunk, cancel_block = await _while_the_keepers_transaction_waits(running, net)
        snapshot = await settle(running, net, keeper_address)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper_address, start_block=start_block, snapshot=snapshot
    )
    by_account = {found.account: found.liquidator for found in verdict.liquidations}
    assert by_account[x] == by_account[y] == competitor
    txs = await on_chain(mined_transactions, w3, keeper_address)
    activity = await on_chain(check_keeper_transactions, net, keeper_address, txs)
    assert x not in activity.liquidations
    assert y not in activity.liquidations
    assert activity.liquidations.keys() == (others.keys() | sunk.keys()) - {y}
    assert [cancel.block for cancel in activity.cancels] == [cancel_block]
    await on_chain(assert_nonces_clean, w3, keeper_address, txs)


async def test_a_competitor_first_inside_a_batch_is_skipped_and_the_rest_liquidated(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=20, seed=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    competitor = net.roles.competitor.address
    for market in net.deployment.markets:
        token = net.deployment.contract(w3, market)
        send(w3, token.functions.approve(manager_of(net, market).address, MAX_UINT256), competitor)
    start_block = w3.eth.block_number

    async with keeper_in_process(net, net.roles.keeper, tmp_path) as running:
        await wait_for_log_async(running, "keeper.following")
        await on_chain(stop_mining, w3)
        crash_block = await on_chain(crash_in_own_block, net, "WETH", -3_000)
        sunk = await on_chain(liquidatable_at, net, crash_block)
        assert len(sunk) >= 2, f"the crash should sink at least 2 accounts, sank {sunk}"
        assert set(sunk.values()) == {"USDC"}, sunk
        y = min(sunk)
        batch = await wait_for_account_log_async(running, "dispatcher.sent", y)
        assert set(key_accounts(batch["key"])) == sunk.keys(), "one batch for the market"
        # The competitor pays a higher max fee: anvil puts it first in the block.
        rival_tx = await on_chain(
            _send_competitor_liquidation, net, "USDC", y, max_fee=50 * GWEI, tip=2 * GWEI
        )
        block = await on_chain(mine, w3)
        rival = await on_chain(_receipt, net, rival_tx)
        ours = await on_chain(_receipt, net, batch["tx_hash"])
        assert rival["block"] == ours["block"] == block
        assert rival["index"] < ours["index"]
        assert rival["status"] == ours["status"] == 1, "a skip is no revert"
        included = await wait_for_log_async(
            running, "liquidation.included", tx_hash=batch["tx_hash"]
        )
        assert included["skipped"] == [y]
        assert sorted(included["liquidated"]) == sorted(sunk.keys() - {y})
        skipped = await wait_for_log_async(running, "liquidation.skipped", account=y)
        assert skipped["revert"].startswith("UnknownCreditAccount")
        await on_chain(mine_every, w3, 1)
        snapshot = await settle(running, net, keeper_address)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper_address, start_block=start_block, snapshot=snapshot
    )
    by_account = {found.account: found.liquidator for found in verdict.liquidations}
    assert by_account[y] == competitor
    assert verdict.keeper_liquidations.keys() == sunk.keys() - {y}
    txs = await on_chain(mined_transactions, w3, keeper_address)
    activity = await on_chain(check_keeper_transactions, net, keeper_address, txs)
    assert activity.skipped.keys() == {y}
    assert not activity.cancels
    await on_chain(assert_nonces_clean, w3, keeper_address, txs)
