"""The keeper's HTTP side on a real devnet: what /metrics, /healthz and /readyz say must be what
the chain says, in the catalogue's names, and a SIGTERM must end the process cleanly in time."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from web3 import Web3

from keeper.devnet.anvil import free_port
from keeper.devnet.controls import latest_answer, move_price, refresh_feeds
from keeper.devnet.network import Devnet
from tests.keeper.helpers import (
    Harness,
    KeeperRun,
    batch_liquidator,
    matching,
    mine,
    open_accounts,
    rpc,
    stop_mining,
    wait_for_log,
    wait_until,
)
from tests.ops.scrape import Response, catalogue, families, get, reachable, total, value

pytestmark = pytest.mark.chain

# Series whose labels are only known once something happens (an RPC error of some kind).
_APPEAR_ON_FIRST_EVENT = {"keeper_rpc_errors_total", "keeper_liquidations_dropped_total"}


def start_ready_keeper(harness: Harness, net: Devnet) -> tuple[KeeperRun, str]:
    port = free_port()
    keeper = harness.start_keeper(net, net.roles.keeper, metrics_port=port)
    base = f"http://127.0.0.1:{port}"

    def ready() -> Response | None:
        response = reachable(f"{base}/readyz")
        return response if response is not None and response.status == 200 else None

    wait_until(ready, what="/readyz to answer 200", source=keeper)
    return keeper, base


def liquidations_by(w3: Web3, net: Devnet, liquidators: set[str]) -> list[dict[str, int]]:
    found = []
    for market in net.deployment.markets:
        manager = net.deployment.contract(w3, f"CreditManager.{market}")
        for event in manager.events.CreditAccountLiquidated.get_logs(from_block=0):
            if event["args"]["liquidator"] in liquidators:
                found.append(dict(event["args"]))
    return found


def test_metrics_after_a_crash_match_the_chain_and_the_catalogue(harness: Harness) -> None:
    net = harness.devnet(accounts=20, block_time=1)
    keeper, base = start_ready_keeper(harness, net)

    move_price(net.w3, net.deployment, "WETH", -3_000, net.roles.deployer.address)
    wait_for_log(keeper, "liquidation.included")
    wait_until(
        lambda: total(get(f"{base}/metrics").body, "keeper_liquidatable_accounts") == 0,
        what="no account left below Hf 1 in the metrics",
        source=keeper,
    )
    # The devnet keeper liquidates through its BatchLiquidator: the manager names that.
    liquidated = liquidations_by(net.w3, net, {keeper.address, batch_liquidator(net)})
    wait_until(
        lambda: (
            total(get(f"{base}/metrics").body, "keeper_liquidations_succeeded_total")
            == len(liquidated)
        ),
        what="every on-chain liquidation counted",
        source=keeper,
    )
    exposition = get(f"{base}/metrics").body

    exported = families(exposition)
    documented = catalogue()
    assert set(exported) <= set(documented), "undocumented metrics"
    assert set(documented) - set(exported) <= _APPEAR_ON_FIRST_EVENT
    assert {name: documented[name] for name in exported} == exported
    assert len(liquidated) >= 1
    assert total(exposition, "keeper_liquidations_attempted_total") == len(liquidated)
    assert total(exposition, "keeper_credit_accounts") == len(open_accounts(net))
    assert total(exposition, "keeper_credit_accounts_by_health_factor") == len(open_accounts(net))
    premium_wei = sum(event["totalValue"] - event["amountPaid"] for event in liquidated)
    usdc_decimals = 6
    assert total(exposition, "keeper_premium_earned_total") == pytest.approx(
        premium_wei / 10**usdc_decimals
    )
    assert total(exposition, "keeper_gas_spent_native_total") > 0
    processed = value(exposition, "keeper_last_processed_block")
    assert processed is not None
    assert processed <= net.w3.eth.block_number
    assert value(exposition, "keeper_ready") == 1
    assert value(exposition, "keeper_websocket_connected") == 1
    endpoint = f"http://127.0.0.1:{net.node.port}"
    sent = value(
        exposition, "keeper_rpc_requests_total", method="eth_sendRawTransaction", endpoint=endpoint
    )
    assert sent is not None
    liquidation_sends = [
        entry
        for entry in matching(keeper.entries(), "dispatcher.sent")
        if entry["key"].startswith("liquidate:")
    ]
    assert sent >= len(liquidation_sends) >= 1

    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    healthz = get(f"{base}/healthz")
    assert healthz.status == 200
    assert {check["name"] for check in healthz.json()["checks"]} == {"daemon", "event_loop"}


def test_readiness_fails_and_names_the_feeds_when_prices_go_stale(harness: Harness) -> None:
    net = harness.devnet(accounts=4, block_time=1)
    keeper, base = start_ready_keeper(harness, net)

    rpc(net.w3, "evm_increaseTime", 4 * 3600)  # past every feed's 3 h staleness period
    stale_block = mine(net.w3)

    def not_ready() -> Response | None:
        response = get(f"{base}/readyz")
        return response if response.status == 503 else None

    response = wait_until(not_ready, what="/readyz to answer 503", source=keeper)
    checks = {check["name"]: check for check in response.json()["checks"]}
    assert not checks["feeds_fresh"]["ok"]
    token_addresses = {net.deployment.address(symbol) for symbol in net.deployment.tokens}
    assert all(token in checks["feeds_fresh"]["detail"] for token in token_addresses)
    assert checks["backfill"]["ok"]
    exposition = get(f"{base}/metrics").body
    assert value(exposition, "keeper_ready") == 0
    assert total(exposition, "keeper_price_feed_stale") == len(net.deployment.tokens)
    assert wait_for_log(keeper, "feed.unusable")["token"] in token_addresses

    refresh_feeds(net.w3, net.deployment, net.roles.deployer.address)
    wait_until(
        lambda: get(f"{base}/readyz").status == 200,
        what="/readyz to recover once the feeds are re-published",
        source=keeper,
    )
    assert net.w3.eth.block_number > stale_block


def test_sigterm_with_a_liquidation_in_flight_stops_within_ten_seconds(harness: Harness) -> None:
    net = harness.devnet(accounts=20, block_time=1)
    keeper, _ = start_ready_keeper(harness, net)
    stop_mining(net.w3)
    feed = net.deployment.contract(net.w3, "PriceFeed.WETH")
    crashed = latest_answer(net.w3, net.deployment, "WETH") * 7 // 10
    feed.functions.updateAnswer(crashed).transact({"from": net.roles.deployer.address})
    mine(net.w3)  # the crash block; the keeper's liquidations then wait in the pool

    def liquidation_sent() -> dict[str, Any] | None:
        sent = matching(keeper.entries(), "dispatcher.sent")
        liquidations = [entry for entry in sent if entry["key"].startswith("liquidate:")]
        return liquidations[0] if liquidations else None

    sent = wait_until(liquidation_sent, what="a liquidation sent", source=keeper)

    started = time.monotonic()
    exit_code = keeper.stop()
    took_s = time.monotonic() - started

    assert exit_code == 0
    assert took_s < 10, f"took {took_s:.1f} s"
    left = matching(keeper.entries(), "dispatcher.left_pending")
    assert sent["tx_hash"] in {hash_ for entry in left for hash_ in entry["tx_hashes"]}
    assert matching(keeper.entries(), "keeper.stopped", reason="signal")
    # Left for the chain: it is still in the pool and gets mined.
    mine(net.w3)
    receipt = net.w3.eth.get_transaction_receipt(sent["tx_hash"])
    assert receipt["status"] == 1
