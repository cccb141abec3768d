"""Scenario 4: an endpoint answers HTTP 429 (with `Retry-After: 1`) for a while, as a throttling
provider does, while a crash makes accounts liquidatable.

With a backup, the keeper must set the throttled primary aside after its retries (reason
`rate_limited`), leave it alone while it rests, liquidate on time through the backup and return to
the primary once the limit lifts. With the throttled endpoint as its only one, it can do nothing
until the limit lifts: it must retry with waits rather than in a tight loop, then liquidate
promptly, sending nothing twice.
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
    matching,
    mined_transactions,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.chain

# Long enough for the primary's first rest (5 s) to end inside the limit, so that its probe is
# refused and it rests again (10 s), ending ~3 s after the limit lifts.
LIMIT_WITH_BACKUP_S = 12.0
LIMIT_ALONE_S = 10.0
# Upper bound of the wait for a rested primary to serve again (the rest above, plus a probe).
RETURN_S = 15.0
# 429s the primary may answer while a backup serves: each of the keeper's three request loops
# (heads, dispatcher, endpoint check) tries it twice before it is set aside, then one probe per
# end of rest. Trying the primary first on every request would be ~10 refusals a second.
MAX_REFUSED_WITH_BACKUP = 8
# 429s per second a lone endpoint may answer: each request retries after 0.1, 0.2, 0.4 s (plus
# jitter) and a head poll waits 0.25 s after a failed one, so a few a second; retrying at once
# would be hundreds.
MAX_REFUSED_PER_S_ALONE = 10.0


def test_a_rate_limited_primary_is_set_aside_for_the_backup_and_used_again_after(
    harness: Harness, proxies: Callable[[int], FaultProxy]
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    primary, backup = proxies(net.node.port), proxies(net.node.port)
    primary_label = redact_url(primary.http_url)
    keeper = start_polling_keeper(harness, net, primary, [backup])
    run = keeper.run
    start_block = w3.eth.block_number

    primary.rate_limit()
    limit_ends = time.monotonic() + LIMIT_WITH_BACKUP_S
    crash_block = crash(net, "WETH", -3_000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"
    # Bounded by the limit: only what is mined while the primary refuses proves the failover.
    during = wait_liquidated(run, net, below, crash_block, timeout_s=limit_ends - time.monotonic())
    assert_on_time(during, crash_block)
    down = wait_for_log(run, "rpc.endpoint_down", endpoint=primary_label)
    assert down["reason"] == "rate_limited"
    sleep_until(limit_ends)
    refused = primary.rate_limited
    assert 0 < refused <= MAX_REFUSED_WITH_BACKUP, f"the primary answered 429 {refused} times"

    primary.passthrough()
    up = wait_for_log(run, "rpc.endpoint_up", endpoint=primary_label, timeout_s=RETURN_S)
    assert up["was"] == "rate_limited"
    logs_before = keeper.answered(primary)["eth_getLogs"]
    wait_until(
        lambda: keeper.answered(primary)["eth_getLogs"] > logs_before,
        what="the primary to serve the keeper's log queries again",
        source=run,
    )
    backup_before = keeper.answered(backup)
    served_from = keeper.answered(primary)["eth_getLogs"]
    wait_until(
        lambda: keeper.answered(primary)["eth_getLogs"] >= served_from + 2,
        what="two more blocks handled through the primary",
        source=run,
    )
    keeper.assert_only_probed(backup, since=backup_before)

    snapshot = stop_and_snapshot(net, keeper)
    verdict = assert_fault_criteria(net, keeper_address, start_block=start_block, snapshot=snapshot)
    assert verdict.keeper_liquidations.keys() == below.keys()
    assert_nonces_clean(w3, keeper_address, mined_transactions(w3, keeper_address))


def test_a_lone_rate_limited_endpoint_is_retried_with_waits_and_liquidates_once_it_lifts(
    harness: Harness, proxies: Callable[[int], FaultProxy]
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    w3, keeper_address = net.w3, net.roles.keeper.address
    only = proxies(net.node.port)
    label = redact_url(only.http_url)
    keeper = start_polling_keeper(harness, net, only)
    run = keeper.run
    start_block = w3.eth.block_number

    only.rate_limit()
    limit_starts = time.monotonic()
    crash_block = crash(net, "WETH", -3_000)
    below = liquidatable_at(net, crash_block)
    assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"
    sleep_until(limit_starts + LIMIT_ALONE_S)
    refused, limited_s = only.rate_limited, time.monotonic() - limit_starts
    lifted_block = w3.eth.block_number
    only.passthrough()
    assert refused <= MAX_REFUSED_PER_S_ALONE * limited_s, (
        f"{refused} requests refused in {limited_s:.1f} s"
    )
    retried = matching(run.entries(), "rpc.retrying", url=label, reason="HTTP 429")
    assert retried, "the keeper logged no retry of a 429"
    down = wait_for_log(run, "rpc.endpoint_down", endpoint=label)
    assert down["reason"] == "rate_limited"

    after = wait_liquidated(run, net, below, crash_block)
    assert_on_time(after, lifted_block)
    up = wait_for_log(run, "rpc.endpoint_up", endpoint=label)
    assert up["was"] == "rate_limited"

    snapshot = stop_and_snapshot(net, keeper)
    verdict = assert_fault_criteria(net, keeper_address, start_block=start_block, snapshot=snapshot)
    assert verdict.keeper_liquidations.keys() == below.keys()
    assert_nonces_clean(w3, keeper_address, mined_transactions(w3, keeper_address))
