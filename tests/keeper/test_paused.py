"""A paused protocol: only emergency liquidators may liquidate. A plain keeper must leave the
accounts alone and say why; a keeper whose signer is an emergency liquidator must liquidate them
while the protocol stays paused; and a keeper with a BatchLiquidator liquidates through it in the
markets where the batch contract is an emergency liquidator, and refuses in the others.

The devnet's BatchLiquidator is an emergency liquidator of every market, so the first two run
without it: one transaction per account from the signer."""

from __future__ import annotations

import pytest

from keeper.devnet.controls import set_price
from keeper.devnet.tx import send
from tests.keeper.helpers import (
    Harness,
    batch_liquidator,
    check_keeper_transactions,
    crash,
    liquidatable_at,
    liquidated_accounts,
    liquidations,
    managers,
    matching,
    mined_transactions,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

QUIET_BLOCKS = 3
USD = 10**8  # a feed answer of 1 USD (8 decimals)


def test_paused_plain_keeper_refuses_and_emergency_liquidator_liquidates(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3 = net.w3
    plain = harness.start_keeper(net, net.roles.keeper, "plain", batch_liquidator=False)
    wait_for_log(plain, "keeper.following")

    for manager in managers(net).values():
        send(w3, manager.functions.pause(), net.roles.deployer.address)
        wait_for_log(plain, "keeper.permissions", manager=manager.address, can_liquidate=False)
    crash_block = crash(net, "WETH", -3_000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"

    for account in below:
        wait_for_log(
            plain, "liquidation.refused", account=account, reason="paused_not_emergency_liquidator"
        )
    wait_until(
        lambda: w3.eth.block_number >= crash_block + QUIET_BLOCKS,
        what=f"{QUIET_BLOCKS} blocks after the crash",
        source=plain,
    )
    assert liquidations(net, crash_block) == []
    assert liquidatable_at(net).keys() >= below.keys()
    plain_txs = mined_transactions(w3, net.roles.keeper.address)
    plain_activity = check_keeper_transactions(net, net.roles.keeper.address, plain_txs)
    assert not plain_activity.liquidations
    assert not plain_activity.cancels
    assert len(plain_activity.approvals) == len(net.deployment.markets)
    assert matching(plain.entries(), "liquidation.decided") == []
    assert plain.stop() == 0

    emergency_address = net.roles.emergency_liquidator.address
    emergency = harness.start_keeper(
        net, net.roles.emergency_liquidator, "emergency", batch_liquidator=False
    )
    for manager in managers(net).values():
        wait_for_log(
            emergency,
            "keeper.permissions",
            manager=manager.address,
            paused=True,
            emergency_liquidator=True,
            can_liquidate=True,
        )

    def all_liquidated() -> bool:
        return below.keys() <= liquidated_accounts(net, crash_block)

    wait_until(all_liquidated, what=f"liquidation of {sorted(below)}", source=emergency)
    views = managers(net)
    for found in liquidations(net, crash_block):
        assert found.liquidator == emergency_address, found
        assert views[found.market].functions.paused().call(block_identifier=found.block)
    txs = mined_transactions(w3, emergency_address)
    activity = check_keeper_transactions(net, emergency_address, txs)
    assert activity.liquidations.keys() == below.keys()
    emergency.check_alive()


def test_paused_keeper_batches_only_where_its_batch_liquidator_is_an_emergency_liquidator(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, owner = net.w3, net.roles.deployer.address
    batch = batch_liquidator(net)
    views = managers(net)
    # In the WETH market the batch loses the role (and the keeper's signer never had it).
    refusing = views["WETH"]
    send(w3, refusing.functions.setEmergencyLiquidator(batch, False), owner)
    for manager in views.values():
        send(w3, manager.functions.pause(), owner)
    keeper = harness.start_keeper(net, net.roles.keeper)
    wait_for_log(
        keeper, "keeper.permissions", manager=views["USDC"].address, can_liquidate=True, batch=True
    )
    wait_for_log(keeper, "keeper.permissions", manager=refusing.address, can_liquidate=False)

    # USDC down sinks accounts of the WETH market (USDC collateral against WETH debt), where the
    # keeper may not liquidate...
    first_crash = crash(net, "USDC", -3_000)
    refused = liquidatable_at(net, first_crash)
    assert refused, "the USDC crash should sink accounts"
    assert set(refused.values()) == {"WETH"}, refused
    for account in refused:
        wait_for_log(
            keeper, "liquidation.refused", account=account, reason="paused_not_emergency_liquidator"
        )
    wait_until(
        lambda: w3.eth.block_number >= first_crash + QUIET_BLOCKS,
        what=f"{QUIET_BLOCKS} blocks after the first crash",
        source=keeper,
    )
    assert liquidations(net, first_crash) == []
    # ... and, USDC back at 1 USD, WETH down sinks accounts of the USDC market, which it
    # liquidates through the batch.
    set_price(w3, net.deployment, "USDC", USD, owner)
    crash_block = crash(net, "WETH", -3_000)
    batched = {a: m for a, m in liquidatable_at(net, crash_block).items() if m == "USDC"}
    assert batched, "the WETH crash should sink accounts of the USDC market"
    wait_until(
        lambda: batched.keys() <= liquidated_accounts(net, crash_block),
        what=f"liquidation of {sorted(batched)}",
        source=keeper,
    )
    found = liquidations(net, first_crash)
    assert {f.account for f in found} == batched.keys()
    for liquidation in found:
        assert liquidation.liquidator == batch, liquidation
        assert views[liquidation.market].functions.paused().call(block_identifier=liquidation.block)
    txs = mined_transactions(w3, net.roles.keeper.address)
    activity = check_keeper_transactions(net, net.roles.keeper.address, txs)
    assert activity.liquidations.keys() == batched.keys()
    assert not activity.skipped
    keeper.check_alive()
