"""deploy/grafana: the provisioned dashboard is valid JSON Grafana can load without plugins, every
query is PromQL that reads only documented metrics, every documented metric is on it, and the
provisioning points at the right data source and directory."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from tests.deploy.helpers import (
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    GRAFANA_DIR,
    contract_metrics,
    dashboard_expressions,
    dashboard_panels,
    load_json,
    load_yaml,
    promtool,
    scan_promql,
    series_names,
    substitute_grafana_variables,
    unknown_names,
)

# Panel types that ship with Grafana: the dashboard must need no plugin.
BUILTIN_PANELS = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text"}
HISTOGRAMS = (
    "keeper_liquidation_send_latency_seconds",
    "keeper_liquidation_inclusion_latency_seconds",
    "keeper_liquidation_inclusion_blocks",
)


def _dashboard() -> dict[str, Any]:
    dashboard = load_json(DASHBOARD)
    assert isinstance(dashboard, dict)
    return dashboard


def _datasource() -> dict[str, Any]:
    (source,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert isinstance(source, dict)
    return source


def test_the_dashboard_is_a_provisionable_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "asgard-keeper"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None  # provisioning assigns the id
    # Import-time inputs (${DS_...}) would leave a provisioned dashboard without data.
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard


def test_the_panels_are_builtin_distinct_and_inside_the_grid() -> None:
    panels = list(dashboard_panels(_dashboard()))
    assert len(panels) >= 30
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in BUILTIN_PANELS, panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']!r} has no query"


def test_every_panel_queries_the_provisioned_data_source() -> None:
    uid = _datasource()["uid"]
    for panel in dashboard_panels(_dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == uid, panel["title"]


def test_the_dashboard_reads_only_documented_metrics() -> None:
    exprs = dashboard_expressions(_dashboard())
    assert len(exprs) >= 40
    assert unknown_names(exprs, series_names(contract_metrics())) == {}


def test_every_documented_metric_is_on_the_dashboard() -> None:
    used: set[str] = set()
    for expr in dashboard_expressions(_dashboard()).values():
        used |= scan_promql(expr).metrics
    missing = [
        metric.name
        for metric in contract_metrics().values()
        if not any(name == metric.name or name.startswith(metric.name + "_") for name in used)
    ]
    assert missing == []


def test_latency_histograms_show_p50_and_p99_from_buckets() -> None:
    exprs = list(dashboard_expressions(_dashboard()).values())
    for histogram in HISTOGRAMS:
        for quantile in ("0.5", "0.99"):
            assert any(
                expr.startswith(f"histogram_quantile({quantile},") and f"{histogram}_bucket" in expr
                for expr in exprs
            ), f"no p{quantile} of {histogram}"
    assert any(
        expr.startswith("histogram_quantile(0.99,")
        and "keeper_rpc_request_duration_seconds_bucket" in expr
        and "method" in expr
        for expr in exprs
    )


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses recording rules without a server: one rule per dashboard query.
    exprs = dashboard_expressions(_dashboard())
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
        for i, expr in enumerate(exprs.values())
    ]
    assert all("$" not in rule["expr"] for rule in rules), "a Grafana variable left unreplaced"
    path = tmp_path / "dashboard-queries.json"  # JSON is YAML: promtool reads it
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_the_provisioning_points_at_prometheus_and_the_mounted_dashboards() -> None:
    source = _datasource()
    assert source["type"] == "prometheus"
    compose = load_yaml(COMPOSE)
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "asgard-keeper.yml")[
        "providers"
    ]
    container_path = PurePosixPath(provider["options"]["path"])
    mounts = {
        PurePosixPath(target): (COMPOSE.parent / source_dir).resolve()
        for source_dir, target, *_ in (
            volume.split(":") for volume in compose["services"]["grafana"]["volumes"]
        )
    }
    assert mounts[container_path] == DASHBOARD.parent
    home = PurePosixPath(
        compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    )
    assert home.parent == container_path
    assert (DASHBOARD.parent / home.name).is_file()
    assert mounts[PurePosixPath("/etc/grafana/provisioning")] == GRAFANA_DIR / "provisioning"
    assert (DEPLOY / "grafana" / "provisioning" / "datasources").is_dir()
