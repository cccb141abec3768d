"""A price crash, with the keeper as an operator runs it: `keeper run --config …`, a real process.

anvil mines a block every second, so "within two blocks" is measured in real blocks.
"""

from __future__ import annotations

import pytest

from keeper.devnet.report import read_accounts
from tests.keeper.helpers import (
    WAD,
    Harness,
    approvals_expected,
    assert_nonces_clean,
    batch_liquidator,
    check_keeper_transactions,
    crash,
    liquidatable_at,
    liquidated_accounts,
    liquidations,
    mined_transactions,
    wait_for_account_log,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

MAX_DELAY_BLOCKS = 2


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
def test_a_crash_is_liquidated_within_two_blocks_and_only_below_one(
    harness: Harness, batch: bool
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    keeper_address = net.roles.keeper.address
    # Through its BatchLiquidator the manager names that contract; alone, the signer.
    liquidator = batch_liquidator(net) if batch else keeper_address
    started_at = net.w3.eth.block_number
    keeper = harness.start_keeper(net, net.roles.keeper, batch_liquidator=batch)
    wait_for_log(keeper, "keeper.following")

    crash_block = crash(net, "WETH", -3_000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"

    def all_liquidated() -> bool:
        return below.keys() <= liquidated_accounts(net, crash_block)

    wait_until(all_liquidated, what=f"liquidation of {sorted(below)}", source=keeper)
    # Past the deadline: a late or wrong transaction of the keeper would be mined by then.
    wait_until(
        lambda: net.w3.eth.block_number > crash_block + MAX_DELAY_BLOCKS,
        what="two blocks after the crash",
    )

    found = liquidations(net, crash_block)
    delays = {f.account: f.block - crash_block for f in found}
    print(f"crash in block {crash_block}; liquidation delay in blocks by account: {delays}")
    assert sorted(f.account for f in found) == sorted(below), "liquidated ≠ liquidatable at crash"
    for liquidation in found:
        assert liquidation.liquidator == liquidator, liquidation
        assert liquidation.block - crash_block <= MAX_DELAY_BLOCKS, (
            f"{liquidation.account} liquidated {liquidation.block - crash_block} blocks after "
            "the crash"
        )
    txs = mined_transactions(net.w3, keeper_address, started_at)
    activity = check_keeper_transactions(net, keeper_address, txs)
    assert activity.liquidations.keys() == below.keys()
    assert len(activity.approvals) == approvals_expected(net, batch=batch)
    assert not activity.cancels
    assert not activity.skipped
    # A batch per market at most: one block's accounts of a market share a transaction.
    assert len(activity.batches) <= (len(net.deployment.markets) if batch else 0)
    assert_nonces_clean(net.w3, keeper_address, txs)
    assert all(view.health_factor_wad >= WAD for view in read_accounts(net.w3, net.deployment))
    for account in below:
        included = wait_for_account_log(keeper, "liquidation.included", account)
        assert included["replacements"] == 0
        assert account in included["liquidated"]
        assert included["trigger_block"] == crash_block
        assert included["sent_after_head_ms"] > 0
    keeper.check_alive()
    assert keeper.stop() == 0
