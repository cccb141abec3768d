"""Scenario 5: a reorg takes away the block holding the keeper's liquidations (depth 1), or that
block and two after it (depth 3).

anvil_reorg replaces the last blocks with empty ones and drops their transactions, as a chain
does with transactions no other node saw. The accounts are then open and below 1 again on the new
branch, so the keeper must notice the fork at its next head, roll its state back to the common
ancestor, find its mined liquidations gone (the journal says dropped, the nonce is free again) and
liquidate each account once more, on the new branch, with no gap in its nonces.
"""

from __future__ import annotations

import pytest

from keeper.execution.batch import key_accounts
from tests.faults.checkpoint import checkpoint_snapshot, checkpointed_block
from tests.faults.criteria import assert_fault_criteria
from tests.keeper.helpers import (
    Harness,
    assert_nonces_clean,
    crash_in_own_block,
    liquidatable_at,
    liquidated_accounts,
    matching,
    mine,
    mine_every,
    mined_transactions,
    rpc,
    stop_mining,
    wait_for_account_log,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain


@pytest.mark.parametrize("depth", [1, 3])
def test_liquidations_undone_by_a_reorg_are_sent_again_once(harness: Harness, depth: int) -> None:
    net = harness.devnet(accounts=20, seed=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    database = harness.tmp_path / "keeper.sqlite"
    keeper = harness.start_keeper(net, net.roles.keeper, database_path=database.name)
    wait_for_log(keeper, "keeper.following")
    start_block = w3.eth.block_number

    stop_mining(w3)
    crash_block = crash_in_own_block(net, "WETH", -3000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"
    for account in below:
        wait_for_account_log(keeper, "dispatcher.sent", account)
    liquidation_block = mine(w3)
    assert liquidated_accounts(net, liquidation_block) == below.keys()
    for account in below:
        # Booked as mined: the reorg then takes away what the journal holds as included.
        wait_for_account_log(keeper, "liquidation.included", account)
    for _ in range(depth - 1):
        mine(w3)
    reorged_head = w3.eth.block_number
    wait_until(
        lambda: checkpointed_block(database) == reorged_head,
        what=f"the keeper to process block {reorged_head}",
        source=keeper,
    )

    rpc(w3, "anvil_reorg", depth, [])
    assert w3.eth.block_number == reorged_head
    assert liquidated_accounts(net, crash_block) == set(), "the reorg kept a liquidation"
    assert liquidatable_at(net, reorged_head).keys() == below.keys()

    mine_every(w3, 1)
    reorg = wait_for_log(keeper, "chain.reorg")
    assert reorg["common_ancestor"] == crash_block
    assert reorg["depth"] == depth
    wait_until(
        lambda: liquidated_accounts(net, crash_block) == below.keys(),
        what=f"the liquidation of {sorted(below)} again on the new branch",
        source=keeper,
    )
    dropped = matching(keeper.entries(), "journal.dropped")
    assert sorted(a for entry in dropped for a in key_accounts(entry["key"])) == sorted(below)

    stop_mining(w3)
    end_block = w3.eth.block_number
    wait_until(
        lambda: checkpointed_block(database) == end_block,
        what=f"the keeper to process block {end_block}",
        source=keeper,
    )
    assert keeper.stop() == 0
    verdict = assert_fault_criteria(
        net,
        keeper_address,
        start_block=start_block,
        snapshot=checkpoint_snapshot(database, net),
    )
    assert verdict.keeper_liquidations.keys() == below.keys()
    assert all(tx.block > reorged_head for tx in verdict.keeper_liquidations.values())
    assert_nonces_clean(w3, keeper_address, mined_transactions(w3, keeper_address))
