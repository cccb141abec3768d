"""Prometheus metrics: counters and histograms fed by the stages' observer calls, and gauges read
from the keeper's live state at scrape time.

Gauges are not pushed from the pipeline: a scrape reads the state the keeper acts on (progress,
books, prices, funding), so a metric cannot drift from the truth or cost anything between
scrapes. `docs/metrics.md` is the catalogue; a test holds the two equal.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from importlib.metadata import version

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keeper.chain.endpoints import EndpointState, EndpointStatus, SetAsideReason
from keeper.daemon import REJECTED_INPUTS, Keeper, Pipeline
from keeper.execution.dispatcher import TxOutcome, TxRequest, TxResult
from keeper.execution.observer import LiquidationReport
from keeper.risk.monitor import RiskMonitor
from keeper.risk.summary import HealthCensus, MarketHealth
from keeper.state.store import ProtocolState

_WEI_PER_NATIVE = Decimal(10**18)
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BLOCK_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50)
_RPC_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# Outcomes of a liquidation transaction that leave the account to someone else (or to later).
_DROPPED_OUTCOMES = {
    TxOutcome.CANCELLED: "cancelled",
    TxOutcome.NOT_SENT: "not_sent",
    TxOutcome.NONCE_TAKEN: "nonce_taken",
}
# An account of an included batch that the batch did not liquidate (its liquidation reverted
# inside it: a competitor was first, or it recovered).
_SKIPPED = "skipped"
_PURPOSES = ("liquidation", "approval")
# The health census counts this many accounts between two turns of the event loop: ~1.5 ms.
CENSUS_SLICE_ACCOUNTS = 1_000


def _purpose(request: TxRequest) -> str:
    return "liquidation" if request.key.startswith("liquidate:") else "approval"


class KeeperMetrics:
    """Every metric of one keeper process, in its own registry; implements `KeeperObserver`."""

    def __init__(self) -> None:
        # `_created` series double every counter and histogram, and no alert or panel uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._state: _StateCollector | None = None
        for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(default)
        registry = self.registry
        self.build_info = Gauge(
            "keeper_build_info",
            "Always 1; the labels say what runs.",
            ["version", "python_version", "web3_version"],
            registry=registry,
        )
        self.build_info.labels(
            version("asgard-keeper"), platform.python_version(), version("web3")
        ).set(1)
        self.event_loop_lag = Gauge(
            "keeper_event_loop_lag_seconds",
            "How late the event loop ran a 0.5 s timer, last measurement.",
            registry=registry,
        )
        self.liquidations_attempted = Counter(
            "keeper_liquidations_attempted",
            "Accounts handed to the dispatcher for liquidation (a batch counts each account).",
            ["manager"],
            registry=registry,
        )
        self.liquidations_succeeded = Counter(
            "keeper_liquidations_succeeded",
            "Accounts liquidated by the keeper's mined transactions.",
            ["manager"],
            registry=registry,
        )
        self.liquidations_reverted = Counter(
            "keeper_liquidations_reverted",
            "Accounts whose liquidation transaction was mined with status 0 (gas spent).",
            ["manager"],
            registry=registry,
        )
        self.liquidations_dropped = Counter(
            "keeper_liquidations_dropped",
            "Accounts below Hf 1 not liquidated, by reason (once per account and reason).",
            ["manager", "reason"],
            registry=registry,
        )
        self.premium_earned = Counter(
            "keeper_premium_earned",
            "Liquidation premium of included liquidations, whole underlying tokens, before gas.",
            ["manager", "underlying"],
            registry=registry,
        )
        self.send_latency = Histogram(
            "keeper_liquidation_send_latency_seconds",
            "Head received -> liquidation accepted by the node.",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.inclusion_latency = Histogram(
            "keeper_liquidation_inclusion_latency_seconds",
            "Liquidation accepted by the node -> its receipt seen.",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.inclusion_blocks = Histogram(
            "keeper_liquidation_inclusion_blocks",
            "Blocks from the block that triggered a liquidation to the block that included it.",
            buckets=_BLOCK_BUCKETS,
            registry=registry,
        )
        self.transactions = Counter(
            "keeper_transactions",
            "Transactions finished, by purpose and outcome.",
            ["purpose", "outcome"],
            registry=registry,
        )
        self.replacements = Counter(
            "keeper_transaction_replacements",
            "Fee-bumped replacements (including cancels).",
            ["purpose"],
            registry=registry,
        )
        self.gas_spent = Counter(
            "keeper_gas_spent_native",
            "Gas paid by mined transactions (gasUsed x effectiveGasPrice), whole native coins.",
            ["purpose"],
            registry=registry,
        )
        self.rpc_requests = Counter(
            "keeper_rpc_requests",
            "JSON-RPC requests sent (each retry counts).",
            ["method", "endpoint"],
            registry=registry,
        )
        self.rpc_errors = Counter(
            "keeper_rpc_errors",
            "Failed JSON-RPC requests by kind (json_rpc: an error answer such as a revert).",
            ["method", "endpoint", "kind"],
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "keeper_rpc_request_duration_seconds",
            "JSON-RPC request round trip.",
            ["method"],
            buckets=_RPC_BUCKETS_S,
            registry=registry,
        )
        self.rpc_failovers = Counter(
            "keeper_rpc_failovers",
            "Times an RPC endpoint was set aside (requests went to the next one), by reason.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.inputs_rejected = Counter(
            "keeper_inputs_rejected",
            "Data the keeper refused to act on (bad prices, inconsistent node answers), by kind.",
            ["kind"],
            registry=registry,
        )
        self.reorgs = Counter(
            "keeper_reorgs", "Chain reorganisations the keeper rolled back.", registry=registry
        )
        self.reorged_blocks = Counter(
            "keeper_reorged_blocks",
            "Processed blocks that reorganisations replaced (rolled back and re-read).",
            registry=registry,
        )

    def watch(self, keeper: Keeper, ready: Callable[[], bool], min_native_wei: int) -> None:
        """Exports `keeper`'s live state at every scrape; `ready` is the readiness verdict."""
        self._state = _StateCollector(keeper, ready, min_native_wei, self._zero_series)
        self.registry.register(self._state)

    async def take_census(self) -> None:
        """Counts the accounts per health-factor range at the last processed block, if not yet
        counted, yielding to the event loop between slices of accounts; a scrape awaits it
        before the registry is read."""
        if self._state is not None:
            await self._state.take_census()

    def _zero_series(self, pipeline: Pipeline) -> None:
        """Starts every series whose labels are known once the markets are, at 0: `increase()`
        and `rate()` need a sample from before the first event to see it."""
        for purpose in _PURPOSES:
            self.replacements.labels(purpose)
            self.gas_spent.labels(purpose)
            for outcome in TxOutcome:
                self.transactions.labels(purpose, outcome.value)
        for kind in REJECTED_INPUTS:
            self.inputs_rejected.labels(kind)
        for status in pipeline.rpc.endpoints():
            for reason in SetAsideReason:
                self.rpc_failovers.labels(status.endpoint, reason.value)
        for manager, market in pipeline.state.markets.items():
            self.liquidations_attempted.labels(manager)
            self.liquidations_succeeded.labels(manager)
            self.liquidations_reverted.labels(manager)
            self.premium_earned.labels(manager, market.underlying)

    # ------------------------------------------------------------------ RpcObserver

    def rpc_request(
        self, method: str, endpoint: str, duration_s: float, error_kind: str | None
    ) -> None:
        self.rpc_requests.labels(method, endpoint).inc()
        self.rpc_duration.labels(method).observe(duration_s)
        if error_kind is not None:
            self.rpc_errors.labels(method, endpoint, error_kind).inc()

    def rpc_endpoint_set_aside(self, endpoint: str, reason: str) -> None:
        self.rpc_failovers.labels(endpoint, reason).inc()

    # ------------------------------------------------------------------ the daemon's own

    def input_rejected(self, kind: str) -> None:
        self.inputs_rejected.labels(kind).inc()

    def chain_reorganised(self, depth: int) -> None:
        self.reorgs.inc()
        self.reorged_blocks.inc(depth)

    # ------------------------------------------------------------------ ExecutionObserver

    def transaction_finished(self, result: TxResult) -> None:
        purpose = _purpose(result.request)
        self.transactions.labels(purpose, result.outcome.value).inc()
        receipt = result.receipt
        if receipt is not None and "gasUsed" in receipt and "effectiveGasPrice" in receipt:
            paid_wei = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
            self.gas_spent.labels(purpose).inc(float(paid_wei / _WEI_PER_NATIVE))

    def transaction_replaced(self, request: TxRequest, *, cancel: bool) -> None:
        self.replacements.labels(_purpose(request)).inc()

    def liquidation_attempted(self, manager: str, accounts: int) -> None:
        self.liquidations_attempted.labels(manager).inc(accounts)

    def liquidation_dropped(self, manager: str, reason: str) -> None:
        self.liquidations_dropped.labels(manager, reason).inc()

    def liquidation_finished(self, report: LiquidationReport) -> None:
        result = report.result
        if result.sent_at is not None:
            self.send_latency.observe(max(result.sent_at - report.head_received_at, 0.0))
        if result.outcome is TxOutcome.INCLUDED:
            self.liquidations_succeeded.labels(report.manager).inc(report.liquidated)
            self.premium_earned.labels(report.manager, report.underlying).inc(float(report.premium))
            skipped = report.accounts - report.liquidated
            if skipped:
                self.liquidations_dropped.labels(report.manager, _SKIPPED).inc(skipped)
        elif result.outcome is TxOutcome.REVERTED:
            self.liquidations_reverted.labels(report.manager).inc(report.accounts)
        else:
            self.liquidations_dropped.labels(report.manager, _DROPPED_OUTCOMES[result.outcome]).inc(
                report.accounts
            )
        if (
            result.outcome in (TxOutcome.INCLUDED, TxOutcome.REVERTED)
            and result.sent_at is not None
        ):
            self.inclusion_latency.observe(max(result.finished_at - result.sent_at, 0.0))
            if report.inclusion_block is not None:
                self.inclusion_blocks.observe(report.inclusion_block - report.trigger_block)


class _StateCollector(Collector):
    """Gauges computed from the keeper's state when Prometheus scrapes."""

    def __init__(
        self,
        keeper: Keeper,
        ready: Callable[[], bool],
        min_native_wei: int,
        on_pipeline: Callable[[Pipeline], None],
    ) -> None:
        self._keeper = keeper
        self._ready = ready
        self._min_native_wei = min_native_wei
        self._on_pipeline: Callable[[Pipeline], None] | None = on_pipeline
        self._census = CensusTaker()

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with the markets; described when collected

    def collect(self) -> Iterator[Metric]:
        progress = self._keeper.progress
        now = time.time()
        yield _gauge("keeper_ready", "1 when every /readyz check passes.", int(self._ready()))
        yield _gauge(
            "keeper_backfill_complete",
            "1 once the history back-fill is done and the keeper follows new heads.",
            int(progress.backfilled),
        )
        yield _gauge(
            "keeper_chain_head_block",
            "Newest block number the node announced.",
            progress.head_block,
        )
        yield _gauge(
            "keeper_last_processed_block",
            "Newest block whose logs the keeper has applied.",
            progress.last_block,
        )
        yield _gauge(
            "keeper_head_lag_blocks",
            "Chain head minus last processed block.",
            max(progress.head_block - progress.last_block, 0),
        )
        yield _gauge(
            "keeper_head_lag_seconds",
            "Wall clock minus the timestamp of the last processed block.",
            now - progress.last_block_timestamp if progress.last_block_timestamp else 0,
        )
        yield _gauge(
            "keeper_head_received_timestamp_seconds",
            "Unix time at which the newest head arrived.",
            progress.head_received_at,
        )
        yield _gauge(
            "keeper_websocket_connected",
            "1 while heads arrive over the WebSocket, 0 while polling HTTP.",
            int(progress.websocket),
        )
        yield _gauge(
            "keeper_signer_native_balance_minimum",
            "[ops] min_native_balance: below it readiness fails.",
            float(self._min_native_wei / _WEI_PER_NATIVE),
        )
        if self._keeper.pipeline is not None:
            if self._on_pipeline is not None:
                self._on_pipeline(self._keeper.pipeline)
                self._on_pipeline = None
            yield from self._pipeline_metrics(now)
            yield from endpoint_metrics(self._keeper.pipeline.rpc.endpoints())

    def _pipeline_metrics(self, now: float) -> Iterator[Metric]:
        pipeline = self._keeper.pipeline
        assert pipeline is not None
        state, monitor, liquidator = pipeline.state, pipeline.monitor, pipeline.liquidator
        progress = self._keeper.progress

        accounts = _family("keeper_credit_accounts", "Credit Accounts tracked.", ["manager"])
        by_range = _family(
            "keeper_credit_accounts_by_health_factor",
            "Accounts per health-factor range.",
            ["manager", "range"],
        )
        liquidatable = _family(
            "keeper_liquidatable_accounts",
            "Accounts below Hf 1 at the last processed block.",
            ["manager"],
        )
        max_age = _family(
            "keeper_liquidatable_max_age_blocks",
            "Blocks the longest-waiting account below Hf 1 has been below it.",
            ["manager"],
        )
        lowest = _family(
            "keeper_lowest_health_factor",
            "Lowest health factor among priced accounts with debt.",
            ["manager"],
        )
        paused = _family(
            "keeper_market_paused", "1 while the CreditManager is paused.", ["manager"]
        )
        can_liquidate = _family(
            "keeper_can_liquidate",
            "1 when this signer may liquidate in the market now.",
            ["manager"],
        )
        oldest: dict[str, int] = {}
        below: dict[str, int] = {}
        for manager, since in progress.liquidatable_since.values():
            below[manager] = below.get(manager, 0) + 1
            oldest[manager] = max(oldest.get(manager, 0), progress.last_block - since + 1)
        for manager, market in state.markets.items():
            accounts.add_metric([manager], len(market.accounts))
            health = self._census.markets.get(manager)
            if health is not None:
                for label, count in health.accounts_by_range.items():
                    by_range.add_metric([manager, label], count)
                if health.lowest_health_factor_wad is not None:
                    lowest.add_metric([manager], health.lowest_health_factor_wad / 10**18)
            liquidatable.add_metric([manager], below.get(manager, 0))
            max_age.add_metric([manager], oldest.get(manager, 0))
            paused.add_metric([manager], int(market.paused))
            can_liquidate.add_metric([manager], int(liquidator.permission(manager).can_liquidate))
        yield from (accounts, by_range, liquidatable, max_age, lowest, paused, can_liquidate)

        labels = ["oracle", "token", "feed"]
        age = _family(
            "keeper_price_feed_age_seconds", "Wall clock minus the feed's updatedAt.", labels
        )
        stale = _family(
            "keeper_price_feed_stale", "1 when the oracle would refuse the price.", labels
        )
        threshold = _family(
            "keeper_price_feed_staleness_threshold_seconds",
            "The oracle's staleness period for the feed.",
            labels,
        )
        unusable = set(monitor.stale_prices())
        for (oracle, token), config in sorted(state.feed_configs.items()):
            price = state.prices[oracle].get(token)
            key = [oracle, token, config.feed]
            if price is not None:
                age.add_metric(key, now - price.updated_at)
            stale.add_metric(key, int(price is None or (oracle, token) in unusable))
            threshold.add_metric(key, config.staleness_period)
        yield from (age, stale, threshold)

        funding = liquidator.funding
        if funding is not None:
            yield _gauge(
                "keeper_signer_native_balance",
                "Signer's gas balance, whole native coins.",
                float(funding.native_wei / _WEI_PER_NATIVE),
            )
            balances = _family(
                "keeper_signer_underlying_balance",
                "Signer's balance of each market's underlying, whole tokens.",
                ["underlying"],
            )
            decimals = {
                market.underlying: state.prices[market.oracle][market.underlying].token_decimals
                for market in state.markets.values()
                if market.underlying in state.prices[market.oracle]
            }
            for token, amount in sorted(funding.underlying.items()):
                if token in decimals:
                    balances.add_metric([token], float(Decimal(amount).scaleb(-decimals[token])))
            yield balances
        yield _gauge(
            "keeper_skip_listed_accounts",
            "Accounts on the failure cooldown.",
            liquidator.skip_listed(),
        )
        yield _gauge(
            "keeper_transactions_in_flight",
            "Transactions queued or pending in the dispatcher.",
            pipeline.dispatcher.in_flight_count(),
        )

    async def take_census(self) -> None:
        pipeline, progress = self._keeper.pipeline, self._keeper.progress
        if pipeline is not None:
            await self._census.take(
                pipeline.state, pipeline.monitor, progress.last_block, progress.last_block_timestamp
            )


class CensusTaker:
    """The newest health census, taken at most once per processed block and shared by
    concurrent scrapes. At 100,000 accounts a census is ~150 ms of CPU: taken in one go, it
    would hold a new head for as long, so it yields to the event loop between slices."""

    def __init__(self, accounts_per_slice: int = CENSUS_SLICE_ACCOUNTS) -> None:
        self._accounts_per_slice = accounts_per_slice
        self._lock = asyncio.Lock()
        self.block: int | None = None  # the block of `markets`
        self.markets: dict[str, MarketHealth] = {}

    async def take(
        self, state: ProtocolState, monitor: RiskMonitor, block: int, timestamp: int
    ) -> None:
        async with self._lock:
            if self.block == block:
                return
            census = HealthCensus(state, monitor, timestamp)  # copies the books: ~8 ms at 100k
            finished = False
            while not finished:
                await asyncio.sleep(0)
                finished = census.advance(self._accounts_per_slice)
            self.block, self.markets = block, census.result()


def endpoint_metrics(statuses: Iterable[EndpointStatus]) -> list[GaugeMetricFamily]:
    """Each RPC endpoint's state as the client sees it now."""
    up = _family(
        "keeper_rpc_endpoint_up",
        "1 while the RPC endpoint serves requests, 0 while it is set aside.",
        ["endpoint"],
    )
    states = _family(
        "keeper_rpc_endpoint_state",
        "1 for the RPC endpoint's current state, 0 for the others.",
        ["endpoint", "state"],
    )
    preferred = _family(
        "keeper_rpc_endpoint_preferred",
        "1 for the RPC endpoint the next request goes to first.",
        ["endpoint"],
    )
    for status in statuses:
        up.add_metric([status.endpoint], int(status.state is EndpointState.UP))
        for state in EndpointState:
            states.add_metric([status.endpoint, state.value], int(status.state is state))
        preferred.add_metric([status.endpoint], int(status.preferred))
    return [up, states, preferred]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _family(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)
