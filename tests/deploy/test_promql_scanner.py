"""The PromQL scanner the other deploy tests rely on finds metric names and only metric names."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import (
    Metric,
    contract_metrics,
    scan_promql,
    series_names,
    substitute_grafana_variables,
    unknown_names,
)


@pytest.mark.parametrize(
    ("expr", "metrics", "functions"),
    [
        ('up{job="asgard-keeper"} == 0', {"up"}, set()),
        (
            'up{job="asgard-keeper"} == 0 or absent(up{job="asgard-keeper"})',
            {"up"},
            {"absent"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, method) "
            '(rate(keeper_rpc_request_duration_seconds_bucket{instance=~"$instance"}[5m])))',
            {"keeper_rpc_request_duration_seconds_bucket"},
            {"histogram_quantile", "sum", "rate"},
        ),
        (
            'sum(rate(a_total{kind!="json_rpc"}[$__rate_interval])) by (endpoint)'
            " / on (endpoint) group_left (method) b_total offset 5m",
            {"a_total", "b_total"},
            {"sum", "rate"},
        ),
        (
            'label_replace(time() - keeper_head_received_timestamp_seconds > 60, "condition", '
            '"no_new_head", "", "")',
            {"keeper_head_received_timestamp_seconds"},
            {"label_replace", "time"},
        ),
        # Label values that look like metric names, braces inside strings.
        ('x{a="b{c}", d=~"up|rate(y)"} > bool 1e3', {"x"}, set()),
    ],
)
def test_the_scanner_finds_metric_names_and_functions(
    expr: str, metrics: set[str], functions: set[str]
) -> None:
    scan = scan_promql(expr)
    assert scan.metrics == metrics
    assert scan.functions == functions


@pytest.mark.parametrize("expr", ["up{job='x'", "up}", "sum by (le", "up # comment", "$x + 1"])
def test_the_scanner_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(ValueError, match=r"PromQL|unbalanced|unclosed"):
        scan_promql(expr)


def test_unknown_names_reports_misspelt_metrics_and_functions() -> None:
    allowed = frozenset({"keeper_ready", "up"})
    problems = unknown_names(
        {"ok": "keeper_ready == 0", "bad": "rte(keeper_redy[5m]) + up"}, allowed
    )
    assert problems == {"bad": ["keeper_redy", "rte()"]}


def test_histograms_are_only_readable_through_their_series() -> None:
    text = (
        "| name | type | labels | meaning |\n|---|---|---|---|\n"
        "| `a_seconds` | histogram | | x |\n| `b_total` | counter | `m` | y |\n"
    )
    metrics = contract_metrics(text)
    assert metrics == {
        "a_seconds": Metric("a_seconds", "histogram"),
        "b_total": Metric("b_total", "counter"),
    }
    assert series_names(metrics) == {
        "up",
        "a_seconds_bucket",
        "a_seconds_sum",
        "a_seconds_count",
        "b_total",
    }


def test_grafana_variables_are_replaced_by_valid_promql() -> None:
    assert (
        substitute_grafana_variables(
            'rate(x{instance=~"$instance", manager=~"$manager"}[$__rate_interval])'
        )
        == 'rate(x{instance=~".*", manager=~".*"}[1m])'
    )
