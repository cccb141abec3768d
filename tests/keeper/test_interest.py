"""Interest alone sinks an account: no price moves, only time passes.

This keeper follows the chain by HTTP polling (no WebSocket in its config), the other tests by
WebSocket newHeads, so both head sources are exercised end to end."""

from __future__ import annotations

import pytest

from keeper.devnet.controls import advance_time, refresh_feeds
from tests.keeper.helpers import (
    WAD,
    Harness,
    batch_liquidator,
    check_keeper_transactions,
    feed_answers,
    health_factor,
    liquidated_accounts,
    liquidations,
    manager_of,
    mined_transactions,
    open_accounts,
    seconds_until_liquidatable,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

# Past the exact second, so the block timestamps of the feed refresh cannot matter.
MARGIN_S = 120


def test_interest_alone_makes_an_account_liquidatable_and_the_keeper_takes_it(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=12, seed=1)
    keeper_address = net.roles.keeper.address
    keeper = harness.start_keeper(net, net.roles.keeper, use_websocket=False)
    wait_for_log(keeper, "keeper.following", ws=False)

    # The account interest sinks first, and how long that takes, from the contracts' numbers.
    waits = {
        account: seconds_until_liquidatable(net, market, account)
        for account, market in open_accounts(net).items()
    }
    target = min(waits, key=lambda account: waits[account])
    market = open_accounts(net)[target]
    hf_before = health_factor(net, market, target)
    assert WAD <= hf_before < 11 * WAD // 10, f"{target} is not just above 1: {hf_before / WAD}"
    prices = feed_answers(net)
    jumped_from = net.w3.eth.block_number

    # Far beyond the feeds' staleness period: the jump leaves every feed stale (nobody can
    # value or liquidate anything) until the heartbeat re-publishes the same answers.
    assert waits[target] > net.spec.staleness_period_s
    advance_time(net.w3, waits[target] + MARGIN_S)
    refresh_feeds(net.w3, net.deployment, net.roles.deployer.address)

    def liquidated() -> bool:
        return target in liquidated_accounts(net, jumped_from)

    wait_until(liquidated, what=f"liquidation of {target}", source=keeper)
    (event,) = [found for found in liquidations(net, jumped_from) if found.account == target]
    assert event.liquidator == batch_liquidator(net)  # the devnet keeper's, owned by its key
    before = event.block - 1
    manager = manager_of(net, market).functions
    assert manager.isLiquidatable(target).call(block_identifier=before)
    assert feed_answers(net, before) == prices, "a price moved: not interest alone"

    txs = mined_transactions(net.w3, keeper_address)
    activity = check_keeper_transactions(net, keeper_address, txs)
    assert target in activity.liquidations
    keeper.check_alive()
