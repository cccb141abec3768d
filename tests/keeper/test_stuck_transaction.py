"""A liquidation that is not included in time is replaced at the same nonce with higher fees, and
the signer's nonces stay clean: one mined transaction per nonce, no gap, nothing left behind."""

from __future__ import annotations

from typing import Any

import pytest

from tests.keeper.helpers import (
    Harness,
    KeeperRun,
    assert_nonces_clean,
    batch_liquidator,
    check_keeper_transactions,
    covering,
    crash_in_own_block,
    liquidatable_at,
    liquidated_accounts,
    liquidations,
    matching,
    mine_every,
    mined_transactions,
    pending_of,
    stop_mining,
    wait_for_account_log,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

OUTCOMES = ("liquidation.included", "liquidation.cancelled", "liquidation.failed")


def _outcome(keeper: KeeperRun, account: str) -> dict[str, Any]:
    """How the keeper booked its liquidation of `account`: the first outcome log line of a
    transaction covering it."""

    def booked() -> dict[str, Any] | None:
        for event in OUTCOMES:
            found = covering(keeper.entries(), event, account)
            if found:
                return found[0]
        return None

    return wait_until(booked, what=f"the outcome of liquidating {account}", source=keeper)


def test_a_stuck_liquidation_is_replaced_and_mined_once_with_clean_nonces(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    keeper = harness.start_keeper(net, net.roles.keeper, inclusion_timeout_s=1.0)
    wait_for_log(keeper, "keeper.following")

    # The crash is mined, then nothing more: the keeper's transactions wait in the pool.
    stop_mining(w3)
    crash_block = crash_in_own_block(net, "WETH", -3000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"

    keys = set()
    for account in below:
        sent = wait_for_account_log(keeper, "dispatcher.sent", account)
        replaced = wait_for_log(keeper, "dispatcher.replaced", key=sent["key"], cancel=False)
        assert replaced["nonce"] == sent["nonce"]
        assert replaced["max_fee_per_gas"] >= sent["max_fee_per_gas"] * 11 // 10
        keys.add(sent["key"])
    waiting = pending_of(w3, keeper_address)
    # One transaction per key: a batch per market.
    assert len(waiting) == len(keys) <= len(net.deployment.markets), waiting
    assert w3.eth.block_number == crash_block, "a block was mined while mining was stopped"

    mine_every(w3, 1)
    wait_until(
        lambda: (
            below.keys() <= liquidated_accounts(net, crash_block)
            and not pending_of(w3, keeper_address)
        ),
        what=f"liquidation of {sorted(below)} and the keeper's pool to empty",
        source=keeper,
    )

    found = liquidations(net, crash_block)
    assert sorted(f.account for f in found) == sorted(below), "each exactly once"
    assert all(f.liquidator == batch_liquidator(net) for f in found)
    txs = mined_transactions(w3, keeper_address)
    activity = check_keeper_transactions(net, keeper_address, txs)
    assert activity.liquidations.keys() == below.keys()
    assert not activity.cancels
    assert_nonces_clean(w3, keeper_address, txs)
    replacements = {r["tx_hash"] for r in matching(keeper.entries(), "dispatcher.replaced")}
    for account, tx in activity.liquidations.items():
        # The keeper must book its mined replacement as its own inclusion, not as a nonce
        # someone else took (a receipt check racing the block that mined it).
        outcome = _outcome(keeper, account)
        assert outcome["event"] == "liquidation.included", outcome
        assert account in outcome["liquidated"], outcome
        assert outcome["replacements"] >= 1
        assert outcome["tx_hash"] == tx.tx_hash
        assert tx.tx_hash in replacements, "the original was mined, not a replacement"
    assert matching(keeper.entries(), "dispatcher.nonce_taken") == []
    keeper.check_alive()
