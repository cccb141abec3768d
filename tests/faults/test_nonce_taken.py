"""Scenario 8: another process sends with the keeper's key. Once before a crash (the keeper's
local nonce is then stale) and once while a liquidation of the keeper waits in the pool (the
other transaction outbids it at its nonce and is mined instead). The keeper must resync its
nonce and still liquidate every account, once, with no reverted transaction and no nonce gap."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from web3.types import Nonce, TxParams, Wei

from keeper.devnet.controls import latest_answer
from keeper.devnet.network import Devnet
from tests.faults.criteria import assert_fault_criteria, settle
from tests.faults.waits import nonce, until_liquidated
from tests.keeper.helpers import (
    GWEI,
    Harness,
    InProcessKeeper,
    assert_nonces_clean,
    crash,
    keeper_in_process,
    liquidatable_at,
    mine,
    mine_every,
    on_chain,
    pending_of,
    stop_mining,
    wait_for_log_async,
    wait_until_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]


def _send_with_keeper_key(net: Devnet, tx_nonce: int, max_fee: int) -> str:
    """A zero-value transfer signed with the keeper's own key at `tx_nonce`, as a second process
    holding the key would send it; returns its hash."""
    w3, key = net.w3, net.roles.keeper
    tx: TxParams = {
        "type": 2,
        "chainId": net.deployment.chain_id,
        "nonce": Nonce(tx_nonce),
        "to": net.roles.treasury.address,
        "value": Wei(0),
        "gas": 21_000,
        "maxFeePerGas": Wei(max_fee),
        "maxPriorityFeePerGas": Wei(max_fee // 2),
    }
    signed = Account.sign_transaction(tx, key.private_key)
    return w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()


def _crash_unmined(net: Devnet, symbol: str, change_bps: int) -> None:
    feed = net.deployment.contract(net.w3, f"PriceFeed.{symbol}")
    new = latest_answer(net.w3, net.deployment, symbol) * (10_000 + change_bps) // 10_000
    feed.functions.updateAnswer(new).transact({"from": net.roles.deployer.address})


async def _first_pooled_nonce(running: InProcessKeeper, net: Devnet) -> tuple[int, int]:
    """The lowest nonce of the keeper waiting in the pool and its max fee (waits for one)."""
    keeper = net.roles.keeper.address

    async def waiting() -> tuple[int, int] | None:
        pool = await on_chain(pending_of, net.w3, keeper)
        if not pool:
            return None
        first = min(pool)
        return first, int(pool[first]["maxFeePerGas"], 16)

    return await wait_until_async(waiting, what="a keeper transaction in the pool", source=running)


async def test_the_keepers_nonce_used_elsewhere_is_resynced_and_every_account_liquidated(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper = net.w3, net.roles.keeper.address
    start = w3.eth.block_number
    async with keeper_in_process(
        net, net.roles.keeper, tmp_path, inclusion_timeout_s=1.0
    ) as running:
        await wait_for_log_async(running, "keeper.following")

        # Before a crash: the nonce the keeper would use next is spent by someone else.
        stolen = await on_chain(_send_with_keeper_key, net, await nonce(net, keeper), 5 * GWEI)
        await on_chain(w3.eth.wait_for_transaction_receipt, stolen)
        first_crash = await on_chain(crash, net, "WETH", -3_000)
        first = await on_chain(liquidatable_at, net, first_crash)
        assert first, "the first crash should sink an account"
        await until_liquidated(running, net, first, first_crash)

        # While a liquidation waits: another transaction at its nonce outbids it and is mined.
        await on_chain(stop_mining, w3)
        await on_chain(_crash_unmined, net, "WBTC", -2_500)
        second_crash = await on_chain(mine, w3)
        second = await on_chain(liquidatable_at, net, second_crash)
        assert second, "the second crash should sink an account"
        taken, offered = await _first_pooled_nonce(running, net)
        await on_chain(_send_with_keeper_key, net, taken, 2 * offered)
        await on_chain(mine, w3)
        assert await nonce(net, keeper, "latest") > taken
        await on_chain(mine_every, w3, 1)
        await until_liquidated(running, net, second, second_crash)
        snapshot = await settle(running, net, keeper)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    assert verdict.keeper_liquidations.keys() == first.keys() | second.keys()
    others = [tx for tx in verdict.keeper_txs if tx.to == net.roles.treasury.address]
    assert len(others) == 2, f"both transactions of the other process were mined: {others}"
    await on_chain(assert_nonces_clean, w3, keeper, verdict.keeper_txs)
