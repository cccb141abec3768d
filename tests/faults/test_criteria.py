"""The fault suite's verdict fails when it should: each criterion is shown a violation staged on
a real chain and must name the account, block or transaction at fault. Without this, a scenario
passing would prove nothing."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest
from web3.types import TxParams

from keeper.devnet.network import Devnet
from keeper.devnet.tx import send
from keeper.state.store import ProtocolState
from tests.faults.criteria import (
    assert_fault_criteria,
    assert_liquidated_once_by_the_keeper,
    assert_liquidated_when_due,
    assert_nothing_reverted,
    assert_state_matches_views,
    liquidatable_blocks,
    settle,
)
from tests.keeper.helpers import (
    Harness,
    crash,
    keeper_in_process,
    liquidatable_at,
    liquidations,
    manager_of,
    mine,
    mined_transactions,
    on_chain,
    wait_for_log_async,
)

pytestmark = pytest.mark.chain

MAX_UINT256 = 2**256 - 1
LIQUIDATION_GAS = 2_000_000


def _approve_all(net: Devnet, who: str) -> None:
    for market in net.deployment.markets:
        token = net.deployment.contract(net.w3, market)
        send(net.w3, token.functions.approve(manager_of(net, market).address, MAX_UINT256), who)


def _liquidate(net: Devnet, market: str, account: str, sender: str, payee: str) -> str:
    """A liquidation sent with a fixed gas limit, so one bound to revert is still mined."""
    call = manager_of(net, market).functions.liquidateCreditAccount(account, payee)
    params: TxParams = {"from": sender, "gas": LIQUIDATION_GAS}
    tx_hash = call.transact(params)
    net.w3.eth.wait_for_transaction_receipt(tx_hash)
    return tx_hash.to_0x_hex()


def test_a_b_c_name_what_went_wrong(harness: Harness) -> None:
    net = harness.devnet(accounts=20, seed=1)
    keeper, rival = net.roles.keeper.address, net.roles.competitor.address
    start = net.w3.eth.block_number
    crash_block = crash(net, "WETH", -3_000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 3, f"the crash should sink at least 3 accounts, sank {below}"
    mine(net.w3)
    assert_fault_criteria(net, keeper, start_block=start)  # 2 blocks: not due yet
    mine(net.w3)
    with pytest.raises(AssertionError) as unliquidated:
        assert_fault_criteria(net, keeper, start_block=start)
    for account in below:
        assert f"{account}: liquidatable in blocks {crash_block}..{crash_block + 2}" in str(
            unliquidated.value
        )

    (twice, twice_market), (elsewhere, elsewhere_market), *rest = sorted(below.items())
    _approve_all(net, keeper)
    _approve_all(net, rival)
    first = _liquidate(net, twice_market, twice, keeper, keeper)
    again = _liquidate(net, twice_market, twice, keeper, keeper)
    paid_away = _liquidate(net, elsewhere_market, elsewhere, keeper, rival)
    for account, market in rest:
        _liquidate(net, market, account, rival, rival)

    end = net.w3.eth.block_number
    assert_liquidated_when_due(liquidatable_blocks(net, start, end), liquidations(net, start), end)
    txs = mined_transactions(net.w3, keeper, start)
    with pytest.raises(AssertionError, match=re.escape(f"liquidates {elsewhere} paying {rival}")):
        assert_liquidated_once_by_the_keeper(net, keeper, txs, liquidations(net, start))
    without_paid_away = [tx for tx in txs if tx.tx_hash != paid_away]
    with pytest.raises(AssertionError) as duplicated:
        assert_liquidated_once_by_the_keeper(
            net, keeper, without_paid_away, liquidations(net, start)
        )
    assert f"{twice}: {first}" in str(duplicated.value)
    assert again in str(duplicated.value)
    with pytest.raises(AssertionError) as reverted:
        assert_nothing_reverted(net, txs)
    assert f"{again} (block" in str(reverted.value)
    assert f"liquidation of {twice}" in str(reverted.value)


def test_b_names_a_batch_that_tries_an_account_the_keeper_had_liquidated(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=20, seed=1)
    keeper = net.roles.keeper.address
    start = net.w3.eth.block_number
    crash_block = crash(net, "WETH", -3_000)
    (account, market), *_ = sorted(liquidatable_at(net, crash_block).items())
    _approve_all(net, keeper)
    batch = net.deployment.contract(net.w3, "BatchLiquidator")
    token = net.deployment.contract(net.w3, market)
    send(net.w3, token.functions.approve(batch.address, MAX_UINT256), keeper)
    first = _liquidate(net, market, account, keeper, keeper)
    manager = manager_of(net, market).address
    retried = send(net.w3, batch.functions.liquidateBatch(manager, [account]), keeper)
    assert retried["status"] == 1, "a batch skips an account already gone, it does not revert"

    txs = mined_transactions(net.w3, keeper, start)
    with pytest.raises(AssertionError) as duplicated:
        assert_liquidated_once_by_the_keeper(net, keeper, txs, liquidations(net, start))
    assert f"{account}: {first}" in str(duplicated.value)
    assert retried["transactionHash"].to_0x_hex() in str(duplicated.value)


@pytest.mark.asyncio
async def test_d_names_the_field_that_differs(harness: Harness, tmp_path: Path) -> None:
    net = harness.devnet(accounts=3, seed=2, block_time=1)
    async with keeper_in_process(net, net.roles.keeper, tmp_path) as running:
        await wait_for_log_async(running, "keeper.following")
        snapshot = await settle(running, net, net.roles.keeper.address)
        state = copy.deepcopy(snapshot.state)
    block = snapshot.block
    await on_chain(assert_state_matches_views, state, net, block)

    manager = manager_of(net, "USDC").address
    account = min(state.markets[manager].accounts)

    def with_principal(state: ProtocolState) -> None:
        market = state.markets[manager]
        held = market.accounts[account]
        market.accounts[account] = dataclasses.replace(held, principal=held.principal + 1)

    def paused(state: ProtocolState) -> None:
        state.markets[manager].paused = True

    def older_answer(state: ProtocolState) -> None:
        oracle = state.markets[manager].oracle
        weth = net.deployment.address("WETH")
        price = state.prices[oracle][weth]
        state.prices[oracle][weth] = dataclasses.replace(price, answer=price.answer - 1)

    def forgotten(state: ProtocolState) -> None:
        del state.markets[manager].accounts[account]

    for change, named in (
        (with_principal, f"account {account} in block {block}: keeper has (owner, principal"),
        (paused, f"market USDC in block {block}: paused flag differs"),
        (older_answer, f"WETH price in block {block}: keeper has answer"),
        (forgotten, f"only the views have ['{account}']"),
    ):
        wrong = copy.deepcopy(state)
        change(wrong)
        with pytest.raises(AssertionError, match=re.escape(named)):
            await on_chain(assert_state_matches_views, wrong, net, block)
