"""A paused protocol: only emergency liquidators may liquidate. A plain keeper must leave the
accounts alone and say why; a keeper whose signer is an emergency liquidator must liquidate them
while the protocol stays paused."""

from __future__ import annotations

import pytest

from keeper.devnet.tx import send
from tests.keeper.helpers import (
    Harness,
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


def test_paused_plain_keeper_refuses_and_emergency_liquidator_liquidates(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3 = net.w3
    plain = harness.start_keeper(net, net.roles.keeper, "plain")
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
    emergency = harness.start_keeper(net, net.roles.emergency_liquidator, "emergency")
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
