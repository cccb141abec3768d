"""The observer side of `KeeperMetrics`: each report lands in the series the catalogue names,
with the units it promises (no chain)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from keeper.execution.dispatcher import TxOutcome, TxRequest, TxResult
from keeper.execution.observer import LiquidationReport
from keeper.ops.metrics import KeeperMetrics

MANAGER = "0x0B306BF915C4d645ff596e518fAf3F9669b97016"
USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
LIQUIDATION = TxRequest("liquidate:0xabc", MANAGER, "0x", 300_000)
APPROVAL = TxRequest(f"approve:{MANAGER}", USDC, "0x", 60_000)


def value(metrics: KeeperMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def receipt(block: int, gas_used: int, price_wei: int, status: int = 1) -> dict[str, str]:
    return {
        "blockNumber": hex(block),
        "gasUsed": hex(gas_used),
        "effectiveGasPrice": hex(price_wei),
        "status": hex(status),
    }


def report(
    result: TxResult,
    *,
    trigger_block: int,
    inclusion_block: int | None,
    accounts: int = 1,
    liquidated: int | None = None,
) -> LiquidationReport:
    """A report of a transaction of `accounts` accounts; by default it liquidated them all when
    included, none otherwise."""
    if liquidated is None:
        liquidated = accounts if result.outcome is TxOutcome.INCLUDED else 0
    return LiquidationReport(
        manager=MANAGER,
        underlying=USDC,
        result=result,
        trigger_block=trigger_block,
        head_received_at=100.0,
        inclusion_block=inclusion_block,
        accounts=accounts,
        liquidated=liquidated,
        premium=Decimal("27.5") * liquidated,
    )


def test_an_included_liquidation_counts_success_premium_gas_and_latencies() -> None:
    metrics = KeeperMetrics()
    result = TxResult(
        LIQUIDATION,
        TxOutcome.INCLUDED,
        receipt=receipt(block=130, gas_used=200_000, price_wei=5 * 10**9),
        sent_at=100.02,
        finished_at=101.0,
    )
    metrics.liquidation_attempted(MANAGER, 1)
    metrics.transaction_finished(result)
    metrics.liquidation_finished(report(result, trigger_block=129, inclusion_block=130))

    assert value(metrics, "keeper_liquidations_attempted_total", manager=MANAGER) == 1
    assert value(metrics, "keeper_liquidations_succeeded_total", manager=MANAGER) == 1
    premium = value(metrics, "keeper_premium_earned_total", manager=MANAGER, underlying=USDC)
    assert premium == 27.5
    gas = value(metrics, "keeper_gas_spent_native_total", purpose="liquidation")
    assert gas == pytest.approx(200_000 * 5e9 / 1e18)
    assert (
        value(metrics, "keeper_transactions_total", purpose="liquidation", outcome="included") == 1
    )
    assert value(metrics, "keeper_liquidation_send_latency_seconds_sum") == pytest.approx(0.02)
    assert value(metrics, "keeper_liquidation_inclusion_latency_seconds_sum") == pytest.approx(0.98)
    assert value(metrics, "keeper_liquidation_inclusion_blocks_bucket", le="1.0") == 1
    assert value(metrics, "keeper_liquidation_inclusion_blocks_bucket", le="0.0") == 0


def test_a_batch_counts_accounts_not_transactions_and_its_skips_as_dropped() -> None:
    metrics = KeeperMetrics()
    batch = TxRequest("liquidate:0xA,0xB,0xC", MANAGER, "0x", 900_000)
    result = TxResult(
        batch,
        TxOutcome.INCLUDED,
        receipt=receipt(block=130, gas_used=600_000, price_wei=10**9),
        sent_at=100.01,
        finished_at=101.0,
    )
    metrics.liquidation_attempted(MANAGER, 3)
    metrics.transaction_finished(result)
    metrics.liquidation_finished(
        report(result, trigger_block=129, inclusion_block=130, accounts=3, liquidated=2)
    )

    assert value(metrics, "keeper_liquidations_attempted_total", manager=MANAGER) == 3
    assert value(metrics, "keeper_liquidations_succeeded_total", manager=MANAGER) == 2
    dropped = value(metrics, "keeper_liquidations_dropped_total", manager=MANAGER, reason="skipped")
    assert dropped == 1
    premium = value(metrics, "keeper_premium_earned_total", manager=MANAGER, underlying=USDC)
    assert premium == 55.0
    assert (
        value(metrics, "keeper_transactions_total", purpose="liquidation", outcome="included") == 1
    )
    assert value(metrics, "keeper_liquidation_send_latency_seconds_count") == 1


def test_an_unmined_batch_drops_every_account_it_covered() -> None:
    metrics = KeeperMetrics()
    batch = TxRequest("liquidate:0xA,0xB", MANAGER, "0x", 600_000)
    result = TxResult(batch, TxOutcome.CANCELLED, sent_at=100.1, finished_at=103.0)
    metrics.liquidation_finished(
        report(result, trigger_block=129, inclusion_block=None, accounts=2)
    )

    dropped = value(
        metrics, "keeper_liquidations_dropped_total", manager=MANAGER, reason="cancelled"
    )
    assert dropped == 2
    assert value(metrics, "keeper_liquidations_succeeded_total", manager=MANAGER) is None


def test_a_reverted_liquidation_counts_as_reverted_and_still_costs_gas() -> None:
    metrics = KeeperMetrics()
    result = TxResult(
        LIQUIDATION,
        TxOutcome.REVERTED,
        receipt=receipt(block=131, gas_used=50_000, price_wei=10**9, status=0),
        sent_at=100.1,
        finished_at=102.0,
    )
    metrics.transaction_finished(result)
    metrics.liquidation_finished(report(result, trigger_block=129, inclusion_block=131))

    assert value(metrics, "keeper_liquidations_reverted_total", manager=MANAGER) == 1
    assert value(metrics, "keeper_liquidations_succeeded_total", manager=MANAGER) is None
    assert value(metrics, "keeper_premium_earned_total", manager=MANAGER, underlying=USDC) is None
    gas = value(metrics, "keeper_gas_spent_native_total", purpose="liquidation")
    assert gas == pytest.approx(50_000 * 1e9 / 1e18)


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (TxOutcome.CANCELLED, "cancelled"),
        (TxOutcome.NOT_SENT, "not_sent"),
        (TxOutcome.NONCE_TAKEN, "nonce_taken"),
    ],
)
def test_a_liquidation_that_ends_unmined_is_dropped_with_its_reason(
    outcome: TxOutcome, reason: str
) -> None:
    metrics = KeeperMetrics()
    result = TxResult(LIQUIDATION, outcome, sent_at=None, finished_at=101.0)
    metrics.liquidation_finished(report(result, trigger_block=129, inclusion_block=None))

    assert value(metrics, "keeper_liquidations_dropped_total", manager=MANAGER, reason=reason) == 1
    assert value(metrics, "keeper_liquidation_send_latency_seconds_count") == 0
    assert value(metrics, "keeper_liquidation_inclusion_latency_seconds_count") == 0


def test_refusals_replacements_and_rpc_requests_are_counted_by_their_labels() -> None:
    metrics = KeeperMetrics()
    metrics.liquidation_dropped(MANAGER, "unprofitable")
    metrics.transaction_replaced(LIQUIDATION, cancel=False)
    metrics.transaction_replaced(APPROVAL, cancel=False)
    metrics.rpc_request("eth_call", "http://node:8545", 0.004, None)
    metrics.rpc_request("eth_call", "http://node:8545", 0.2, "json_rpc")
    metrics.rpc_request("eth_getLogs", "http://node:8545", 1.5, "rate_limited")

    dropped = value(
        metrics, "keeper_liquidations_dropped_total", manager=MANAGER, reason="unprofitable"
    )
    assert dropped == 1
    assert value(metrics, "keeper_transaction_replacements_total", purpose="liquidation") == 1
    assert value(metrics, "keeper_transaction_replacements_total", purpose="approval") == 1
    node = "http://node:8545"
    assert value(metrics, "keeper_rpc_requests_total", method="eth_call", endpoint=node) == 2
    assert (
        value(metrics, "keeper_rpc_errors_total", method="eth_call", endpoint=node, kind="json_rpc")
        == 1
    )
    assert (
        value(
            metrics,
            "keeper_rpc_errors_total",
            method="eth_getLogs",
            endpoint=node,
            kind="rate_limited",
        )
        == 1
    )
    assert value(metrics, "keeper_rpc_request_duration_seconds_count", method="eth_call") == 2


def test_build_info_names_the_versions_running() -> None:
    metrics = KeeperMetrics()
    samples = [
        sample
        for family in metrics.registry.collect()
        if family.name == "keeper_build_info"
        for sample in family.samples
    ]
    assert len(samples) == 1
    assert samples[0].value == 1
    assert set(samples[0].labels) == {"version", "python_version", "web3_version"}
    assert all(samples[0].labels.values())
