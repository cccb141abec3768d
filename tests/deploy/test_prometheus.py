"""deploy/prometheus: the alert rules load, their unit tests pass, they read only the keeper's
documented metrics, every alert carries what an operator needs, and the compose Prometheus
config is valid. Also the metrics contract itself, as parsed from docs/metrics.md."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.helpers import (
    ALERTS,
    ALERTS_TEST,
    DEPLOY_README,
    JOB,
    K8S,
    METRICS_PORT,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    contract_metrics,
    load_yaml,
    promtool,
    rule_expressions,
    series_names,
    unknown_names,
)

EXPECTED_ALERTS = {
    "KeeperDown": "critical",
    "KeeperHeadStale": "critical",
    "KeeperLiquidationsStuck": "critical",
    "KeeperSignerBalanceLow": "critical",
    "KeeperFeedStale": "warning",
    "KeeperRpcErrorRateHigh": "warning",
    "KeeperNotReady": "critical",
    "KeeperLiquidationReverted": "warning",
    "KeeperCannotLiquidate": "warning",
    "KeeperRpcAllEndpointsDown": "critical",
    "KeeperRpcWrongChain": "critical",
    "KeeperRpcEndpointSetAside": "warning",
    "KeeperInputsRejected": "warning",
}


def _alerts() -> dict[str, dict[str, Any]]:
    groups = load_yaml(ALERTS)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_metrics_contract_parses() -> None:
    metrics = contract_metrics()
    assert len(metrics) >= 35
    assert metrics["keeper_ready"].type == "gauge"
    assert metrics["keeper_rpc_requests_total"].type == "counter"
    assert metrics["keeper_liquidation_send_latency_seconds"].type == "histogram"
    names = series_names(metrics)
    assert "keeper_rpc_request_duration_seconds_bucket" in names
    assert "keeper_rpc_request_duration_seconds" not in names


def test_promtool_checks_the_alert_rules() -> None:
    output = promtool("check", "rules", str(ALERTS), cwd=PROMETHEUS_DIR)
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in output


def test_the_alert_unit_tests_pass() -> None:
    # alerts.test.yml names alerts.yml relative to itself: run from its directory.
    output = promtool("test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
            for alert in check.get("exp_alerts") or []:
                # A firing case pins the severity and both annotations.
                assert alert["exp_labels"]["severity"] == EXPECTED_ALERTS[check["alertname"]]
                assert set(alert["exp_annotations"]) == {"summary", "description"}
    assert firing == set(EXPECTED_ALERTS), "alerts without a firing test"
    assert quiet == set(EXPECTED_ALERTS), "alerts without a not-firing test"


def test_the_alerts_are_the_expected_ones_with_severity_summary_and_description() -> None:
    alerts = _alerts()
    assert set(alerts) == set(EXPECTED_ALERTS)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] == EXPECTED_ALERTS[name], name
        annotations = rule["annotations"]
        assert len(annotations["summary"]) > 10, name
        # The description says what it means and what to do: more than a sentence.
        assert len(annotations["description"].split()) >= 30, name


def test_the_alerts_read_only_documented_metrics() -> None:
    exprs = rule_expressions(load_yaml(ALERTS)["groups"])
    assert len(exprs) == len(EXPECTED_ALERTS)
    assert unknown_names(exprs, series_names(contract_metrics())) == {}


def test_the_alerts_use_the_thresholds_of_the_runbook() -> None:
    alerts = _alerts()
    assert 'up{job="asgard-keeper"} == 0' in alerts["KeeperDown"]["expr"]
    assert 'absent(up{job="asgard-keeper"})' in alerts["KeeperDown"]["expr"]
    stuck = alerts["KeeperLiquidationsStuck"]["expr"]
    assert re.fullmatch(r"keeper_liquidatable_max_age_blocks > 5\s*", stuck)
    assert 'kind!="json_rpc"' in alerts["KeeperRpcErrorRateHigh"]["expr"]
    assert re.fullmatch(
        r"max by \(job, instance\) \(keeper_rpc_endpoint_up\) == 0\s*",
        alerts["KeeperRpcAllEndpointsDown"]["expr"],
    )
    assert re.fullmatch(
        r'keeper_rpc_endpoint_state\{state="wrong_chain"\} == 1\s*',
        alerts["KeeperRpcWrongChain"]["expr"],
    )
    # Set aside while another endpoint serves, and not for wrong_chain: the two critical alerts
    # above cover those, and a warning beside them would only be noise.
    set_aside = " ".join(alerts["KeeperRpcEndpointSetAside"]["expr"].split())
    assert "keeper_rpc_endpoint_up == 0" in set_aside
    assert 'unless on (job, instance, endpoint) keeper_rpc_endpoint_state{state="wrong_chain"}' in (
        set_aside
    )
    assert "max by (job, instance) (keeper_rpc_endpoint_up) == 1" in set_aside
    assert (
        alerts["KeeperInputsRejected"]["expr"].strip()
        == "sum by (job, instance, kind) (increase(keeper_inputs_rejected_total[30m])) >= 3"
    )
    assert {name: rule.get("for") for name, rule in alerts.items()} == {
        "KeeperDown": "1m",
        "KeeperHeadStale": "1m",
        "KeeperLiquidationsStuck": None,
        "KeeperSignerBalanceLow": "5m",
        "KeeperFeedStale": "2m",
        "KeeperRpcErrorRateHigh": "5m",
        "KeeperNotReady": "5m",
        "KeeperLiquidationReverted": None,
        "KeeperCannotLiquidate": "1m",
        "KeeperRpcAllEndpointsDown": "2m",
        "KeeperRpcWrongChain": None,
        "KeeperRpcEndpointSetAside": "10m",
        "KeeperInputsRejected": None,
    }


def test_every_alert_has_a_runbook_section() -> None:
    readme = DEPLOY_README.read_text()
    headings = set(re.findall(r"^#{3,4} (Keeper\w+)\s*$", readme, re.MULTILINE))
    assert headings >= set(EXPECTED_ALERTS), set(EXPECTED_ALERTS) - headings


def test_the_prometheus_rule_holds_the_same_groups_as_alerts_yml() -> None:
    rule = load_yaml(K8S / "prometheus-rule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load_yaml(ALERTS)["groups"]


def test_the_prometheus_rule_reads_only_documented_metrics() -> None:
    exprs = rule_expressions(load_yaml(K8S / "prometheus-rule.yaml")["spec"]["groups"])
    assert exprs
    assert unknown_names(exprs, series_names(contract_metrics())) == {}


@pytest.mark.parametrize("cwd", [PROMETHEUS_DIR, PROMETHEUS_DIR.parents[1]])
def test_promtool_checks_the_compose_prometheus_config(cwd: Any) -> None:
    # rule_files resolve relative to the config file, wherever promtool runs from.
    output = promtool("check", "config", str(PROMETHEUS_CONFIG), cwd=cwd)
    assert "SUCCESS: 1 rule files found" in output
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in output


def test_the_compose_prometheus_scrapes_the_keeper_job() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [ALERTS.name]
    (job,) = [c for c in config["scrape_configs"] if c["job_name"] == JOB]
    assert job["scrape_interval"] == "5s"
    assert job["static_configs"] == [{"targets": [f"keeper:{METRICS_PORT}"]}]
