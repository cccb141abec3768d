"""Scenario 3: the primary RPC endpoint is down for 30 s while a backup is up.

The keeper polls for heads over HTTP, so everything it does (heads, logs, simulations, sends,
receipts) has to move to the backup as soon as the primary stops answering. A crash at the start
of the outage must be liquidated within a few blocks through the backup; once the primary is back
the keeper must return to it, and a second crash must be liquidated through the primary.

A primary that refuses connections is the common case. One that accepts them and never answers
(a hung node) is covered too, and is expected to fail until the keeper stops waiting out its
10 s request timeout on the hung endpoint (see the mark).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from keeper.chain.rpc import redact_url
from tests.faults.criteria import assert_fault_criteria
from tests.faults.failover import (
    assert_on_time,
    sleep_until,
    start_polling_keeper,
    stop_and_snapshot,
    wait_liquidated,
)
from tests.faults.proxy import FaultProxy
from tests.keeper.helpers import (
    Harness,
    assert_nonces_clean,
    crash,
    liquidatable_at,
    mined_transactions,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

OUTAGE_S = 30.0
# The keeper asks every endpoint for its head each 5 s, so a primary that answers again is back
# within that, plus a request's round trip.
RETURN_S = 10.0


@pytest.mark.parametrize(
    "go_down",
    [
        pytest.param(FaultProxy.refuse, id="refusing"),
        pytest.param(FaultProxy.swallow, id="hung"),
    ],
)
def test_primary_down_for_30s_the_keeper_liquidates_through_the_backup_and_returns(
    harness: Harness,
    proxies: Callable[[int], FaultProxy],
    go_down: Callable[[FaultProxy], None],
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    primary, backup = proxies(net.node.port), proxies(net.node.port)
    primary_label = redact_url(primary.http_url)
    keeper = start_polling_keeper(harness, net, primary, [backup])
    run = keeper.run
    start_block = w3.eth.block_number

    go_down(primary)
    outage_ends = time.monotonic() + OUTAGE_S
    crash_block = crash(net, "WETH", -3_000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"
    # Bounded by the outage: only what is mined while the primary is down proves the failover.
    during = wait_liquidated(run, net, below, crash_block, timeout_s=outage_ends - time.monotonic())
    assert_on_time(during, crash_block)
    down = wait_for_log(run, "rpc.endpoint_down", endpoint=primary_label)
    assert down["reason"] == "transport"
    sent_before_return = keeper.answered(primary)["eth_sendRawTransaction"]
    sleep_until(outage_ends)

    primary.passthrough()
    up = wait_for_log(run, "rpc.endpoint_up", endpoint=primary_label, timeout_s=RETURN_S)
    assert up["was"] == "down"
    logs_before = keeper.answered(primary)["eth_getLogs"]
    wait_until(
        lambda: keeper.answered(primary)["eth_getLogs"] > logs_before,
        what="the primary to serve the keeper's log queries again",
        source=run,
    )
    backup_before = keeper.answered(backup)
    second_block = crash(net, "WBTC", -2_500)
    sunk = liquidatable_at(net, second_block)
    assert sunk, "the second crash should sink an account"
    after = wait_liquidated(run, net, sunk, second_block)
    assert_on_time(after, second_block)
    keeper.assert_only_probed(backup, since=backup_before)
    sent = keeper.answered(primary)["eth_sendRawTransaction"] - sent_before_return
    assert sent >= len(sunk), f"{sent} sends reached the primary for {len(sunk)} liquidations"

    snapshot = stop_and_snapshot(net, keeper)
    verdict = assert_fault_criteria(net, keeper_address, start_block=start_block, snapshot=snapshot)
    assert verdict.keeper_liquidations.keys() == below.keys() | sunk.keys()
    assert_nonces_clean(w3, keeper_address, mined_transactions(w3, keeper_address))
