"""RPC endpoint metrics: the failover counter fed by the RpcClient's reports, and the gauges read
from its endpoint statuses at scrape time, in the catalogue's names and types (no chain)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import Metric

from keeper.chain.endpoints import EndpointState, EndpointStatus
from keeper.ops.metrics import KeeperMetrics, endpoint_metrics
from tests.ops.scrape import catalogue

PRIMARY = "https://eth.example.com/..."
BACKUP = "http://10.0.0.5:8545"


def samples(families: Sequence[Metric]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in families
        for sample in family.samples
    }


def test_each_set_aside_counts_once_per_endpoint_and_reason() -> None:
    metrics = KeeperMetrics()

    metrics.rpc_endpoint_set_aside(PRIMARY, "transport")
    metrics.rpc_endpoint_set_aside(PRIMARY, "transport")
    metrics.rpc_endpoint_set_aside(BACKUP, "stalled")

    def value(endpoint: str, reason: str) -> float | None:
        labels = {"endpoint": endpoint, "reason": reason}
        return metrics.registry.get_sample_value("keeper_rpc_failovers_total", labels)

    assert value(PRIMARY, "transport") == 2
    assert value(BACKUP, "stalled") == 1
    assert value(BACKUP, "transport") is None


def test_endpoint_gauges_show_state_and_preference_of_each_endpoint() -> None:
    statuses = [
        EndpointStatus(PRIMARY, EndpointState.RATE_LIMITED, preferred=False, head=None),
        EndpointStatus(BACKUP, EndpointState.UP, preferred=True, head=120),
    ]

    found = samples(endpoint_metrics(statuses))

    assert found[("keeper_rpc_endpoint_up", (PRIMARY,))] == 0
    assert found[("keeper_rpc_endpoint_up", (BACKUP,))] == 1
    assert found[("keeper_rpc_endpoint_preferred", (PRIMARY,))] == 0
    assert found[("keeper_rpc_endpoint_preferred", (BACKUP,))] == 1
    primary_states = {
        labels[1]: value
        for (name, labels), value in found.items()
        if name == "keeper_rpc_endpoint_state" and labels[0] == PRIMARY
    }
    # Every state has a series, so a query for any of them never finds nothing.
    assert primary_states == {state.value: 0 for state in EndpointState} | {"rate_limited": 1}


def test_endpoint_metrics_are_in_the_catalogue_with_their_types() -> None:
    documented = catalogue()
    status = EndpointStatus(BACKUP, EndpointState.UP, preferred=True, head=None)

    gauges = {family.name for family in endpoint_metrics([status])}

    assert {documented.get(name) for name in gauges} == {"gauge"}
    assert documented["keeper_rpc_failovers_total"] == "counter"
