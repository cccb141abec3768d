"""Scenario 6: SIGKILL of the keeper between sending its liquidations and seeing their receipts,
then a restart on the same database.

Two moments are covered. Killed while the transactions still wait in the pool and restarted
before they are mined: the new process finds them in its journal and in the node's pool, follows
them and sends nothing again. Killed, the transactions mined while it is down, then restarted:
the new process finds them mined and books them. Either way each account is liquidated once, and
the restart resumes from the checkpoint rather than from the deploy block.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.checkpoint import checkpoint_snapshot, checkpointed_block
from tests.faults.criteria import assert_fault_criteria
from tests.keeper.helpers import (
    Harness,
    KeeperRun,
    assert_nonces_clean,
    crash_in_own_block,
    liquidatable_at,
    liquidated_accounts,
    matching,
    mine,
    mined_transactions,
    pending_of,
    stop_mining,
    wait_for_account_log,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

DATABASE = "keeper.sqlite"


def _kill(keeper: KeeperRun) -> None:
    os.kill(keeper.process.pid, signal.SIGKILL)
    wait_until(lambda: keeper.process.poll() is not None, what=f"{keeper.name} to die")


def test_killed_between_send_and_receipt_the_keeper_neither_resends_nor_forgets(
    harness: Harness,
) -> None:
    net = harness.devnet(accounts=20, seed=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    database = harness.tmp_path / DATABASE
    first = harness.start_keeper(net, net.roles.keeper, "first", database_path=DATABASE)
    wait_for_log(first, "keeper.following")
    start_block = w3.eth.block_number

    # Killed with its liquidations in the pool, restarted before they are mined.
    stop_mining(w3)
    crash_block = crash_in_own_block(net, "WETH", -3000)
    sunk = liquidatable_at(net, crash_block)
    assert len(sunk) >= 2, f"the crash should sink at least 2 accounts, sank {sunk}"
    keys = {wait_for_account_log(first, "dispatcher.sent", account)["key"] for account in sunk}
    _kill(first)
    waiting = pending_of(w3, keeper_address)
    assert len(waiting) == len(keys), waiting

    second = harness.start_keeper(net, net.roles.keeper, "second", database_path=DATABASE)
    resumed = wait_for_log(second, "keeper.resuming")
    assert resumed["block"] == crash_block
    for account in sunk:
        wait_for_account_log(second, "journal.adopted", account)
    wait_for_log(second, "keeper.following")
    assert matching(second.entries(), "dispatcher.sent") == [], "sent again after the restart"
    mine(w3)
    for account in sunk:
        wait_for_account_log(second, "liquidation.included", account)
    assert liquidated_accounts(net, crash_block) == sunk.keys()

    # Killed with its liquidations in the pool, which are mined while it is down.
    second_crash = crash_in_own_block(net, "WETH", -3000)
    sunk_later = liquidatable_at(net, second_crash)
    assert sunk_later, "the second crash should sink more accounts"
    for account in sunk_later:
        wait_for_account_log(second, "dispatcher.sent", account)
    _kill(second)
    mined_block = mine(w3)
    assert liquidated_accounts(net, mined_block) == sunk_later.keys()

    third = harness.start_keeper(net, net.roles.keeper, "third", database_path=DATABASE)
    for account in sunk_later:
        wait_for_account_log(third, "journal.found_mined", account, status="included")
    wait_for_log(third, "keeper.following")
    assert matching(third.entries(), "journal.adopted") == []
    mine(w3)
    end_block = mine(w3)
    wait_until(
        lambda: checkpointed_block(database) == end_block,
        what=f"the keeper to process block {end_block}",
        source=third,
    )
    assert matching(third.entries(), "dispatcher.sent") == [], "sent again after the restart"
    assert third.stop() == 0

    verdict = assert_fault_criteria(
        net, keeper_address, start_block=start_block, snapshot=checkpoint_snapshot(database, net)
    )
    assert verdict.keeper_liquidations.keys() == sunk.keys() | sunk_later.keys()
    assert_nonces_clean(w3, keeper_address, mined_transactions(w3, keeper_address))
