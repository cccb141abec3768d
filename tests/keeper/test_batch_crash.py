"""Thirty accounts under at once, liquidated by two BatchLiquidator transactions in the next block.

The keeper runs as an operator runs it (`keeper run`, metrics served), with the devnet's
BatchLiquidator and the default `batch_size` of 25. Thirty accounts of the USDC market hold 4 WETH
against 10,000 USDC of debt (Hf 1.02 at 3,000 USD); mining stops, a 5 % WETH drop is mined alone
(Hf 0.97 for all thirty), and the keeper's transactions wait in the pool until the test mines the
next block. That block must hold exactly the keeper's two batches, of 25 and 5 accounts (the gas
limits the keeper derived from one `eth_call` each let both in), and its log lines and metrics
must count thirty accounts, not two transactions.
"""

from __future__ import annotations

from typing import Any

import pytest

from keeper.devnet.anvil import free_port
from keeper.devnet.network import Devnet
from keeper.devnet.tx import send
from tests.contracts.helpers import freeze_interest, open_account, token_address, units
from tests.keeper.helpers import (
    Harness,
    KeeperRun,
    assert_nonces_clean,
    batch_liquidator,
    check_keeper_transactions,
    crash_in_own_block,
    liquidatable_at,
    liquidations,
    manager_of,
    matching,
    mine,
    mined_transactions,
    stop_mining,
    wait_for_log,
    wait_until,
)
from tests.ops.scrape import get, value

pytestmark = pytest.mark.chain

ACCOUNTS = 30
BATCHES = (25, 5)  # DEFAULT_BATCH_SIZE, then the rest
DEBT_USDC = 10_000


def _open_near_one(net: Devnet) -> str:
    """An account owing 10,000 USDC and holding only 4 WETH: Hf 1.02 at 3,000 USD per WETH."""
    borrower = net.roles.borrowers[0].address
    debt = units(net, "USDC", DEBT_USDC)
    opened = open_account(net, borrower, debt, units(net, "WETH", 4), collateral_symbol="WETH")
    send(
        net.w3,
        manager_of(net, "USDC").functions.withdrawCollateral(
            opened.address, token_address(net, "USDC"), debt, borrower
        ),
        borrower,
    )
    return opened.address


def _liquidation_sends(keeper: KeeperRun) -> list[dict[str, Any]]:
    return [
        entry
        for entry in matching(keeper.entries(), "dispatcher.sent")
        if entry["key"].startswith("liquidate:")
    ]


def test_thirty_accounts_go_in_two_batches_in_the_next_block(harness: Harness) -> None:
    net = harness.devnet(accounts=0)
    w3, keeper_address = net.w3, net.roles.keeper.address
    freeze_interest(net)
    opened = {_open_near_one(net) for _ in range(ACCOUNTS)}
    port = free_port()
    keeper = harness.start_keeper(net, net.roles.keeper, metrics_port=port)
    wait_for_log(keeper, "keeper.following")

    stop_mining(w3)
    crash_block = crash_in_own_block(net, "WETH", -500)
    below = liquidatable_at(net, crash_block)
    assert below.keys() == opened
    sent = wait_until(
        lambda: _liquidation_sends(keeper) if len(_liquidation_sends(keeper)) == 2 else None,
        what="both batches sent",
        source=keeper,
    )
    assert sorted(len(entry["key"].split(",")) for entry in sent) == sorted(BATCHES)
    sent_hashes = {entry["tx_hash"] for entry in sent}
    next_block = mine(w3)

    found = liquidations(net, crash_block)
    assert {f.account for f in found} == opened
    assert {f.block for f in found} == {next_block}
    assert {f.tx_hash for f in found} == sent_hashes
    assert {f.liquidator for f in found} == {batch_liquidator(net)}
    txs = mined_transactions(w3, keeper_address, crash_block)
    assert {(tx.block, tx.tx_hash) for tx in txs} == {(next_block, h) for h in sent_hashes}
    activity = check_keeper_transactions(
        net, keeper_address, mined_transactions(w3, keeper_address)
    )
    assert activity.liquidations.keys() == opened
    assert not activity.skipped
    assert_nonces_clean(w3, keeper_address, mined_transactions(w3, keeper_address))

    included = [
        wait_for_log(keeper, "liquidation.included", tx_hash=tx_hash) for tx_hash in sent_hashes
    ]
    assert sorted(line["accounts"] for line in included) == sorted(BATCHES)
    assert {a for line in included for a in line["liquidated"]} == opened
    for line in included:
        assert line["skipped"] == []
        assert line["trigger_block"] == crash_block
        assert line["block"] == next_block
        assert 0 < line["sent_after_head_ms"] < 10_000
        print(
            f"head {crash_block} -> batch of {line['accounts']} accepted: "
            f"{line['sent_after_head_ms']} ms"
        )
    assert len(_liquidation_sends(keeper)) == 2

    manager = manager_of(net, "USDC").address
    metrics = f"http://127.0.0.1:{port}/metrics"

    def succeeded() -> float | None:
        return value(get(metrics).body, "keeper_liquidations_succeeded_total", manager=manager)

    assert wait_until(succeeded, what="the liquidations counted", source=keeper) == ACCOUNTS
    exposition = get(metrics).body
    assert value(exposition, "keeper_liquidations_attempted_total", manager=manager) == ACCOUNTS
    assert (
        value(exposition, "keeper_transactions_total", purpose="liquidation", outcome="included")
        == 2
    )
    premium_units = sum(
        event["args"]["totalValue"] - event["args"]["amountPaid"]
        for event in manager_of(net, "USDC").events.CreditAccountLiquidated.get_logs(
            from_block=next_block, to_block=next_block
        )
    )
    earned = value(
        exposition,
        "keeper_premium_earned_total",
        manager=manager,
        underlying=token_address(net, "USDC"),
    )
    assert earned == pytest.approx(premium_units / 10**6)
    keeper.check_alive()
    assert keeper.stop() == 0
