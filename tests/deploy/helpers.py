"""What the deploy/ tests share: paths, file loaders, promtool, the metrics contract of
docs/metrics.md, and a small PromQL scanner that lists the metric names an expression reads.

The scanner is deliberately strict: a character it does not know is an error, so an expression it
cannot read fails the tests instead of passing with names left unchecked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "asgard-keeper.json"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DEPLOY_README = DEPLOY / "README.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
DOCKERFILE = ROOT / "Dockerfile"

JOB = "asgard-keeper"
METRICS_PORT = 9108


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


# ------------------------------------------------------------------------------------ promtool


def promtool(*args: str, cwd: Path) -> str:
    """Runs promtool and returns its output; fails the test with that output if it fails."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool not found on PATH: apt-get install prometheus (make test installs it)",
            pytrace=False,
        )
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# ---------------------------------------------------------------------------- metrics contract


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    type: str


_TABLE_ROW = re.compile(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*([a-z]+)\s*\|")


def contract_metrics(text: str | None = None) -> dict[str, Metric]:
    """The metrics table of docs/metrics.md: first column a backticked name, second its type."""
    source = METRICS_DOC.read_text() if text is None else text
    metrics: dict[str, Metric] = {}
    for line in source.splitlines():
        match = _TABLE_ROW.match(line.strip())
        if match:
            name, kind = match.groups()
            assert kind in ("gauge", "counter", "histogram"), f"{name}: unknown type {kind!r}"
            assert name not in metrics, f"{name} is listed twice in docs/metrics.md"
            metrics[name] = Metric(name, kind)
    return metrics


# Series PromQL may read besides the keeper's: Prometheus' own per-target `up`.
EXTRA_SERIES = frozenset({"up"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names(metrics: dict[str, Metric]) -> frozenset[str]:
    """Every series name a query may use: gauges and counters as named, histograms only through
    their _bucket/_sum/_count series (the bare name of a histogram selects nothing)."""
    names: set[str] = set(EXTRA_SERIES)
    for metric in metrics.values():
        if metric.type == "histogram":
            names.update(metric.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(metric.name)
    return frozenset(names)


# ----------------------------------------------------------------------------- PromQL scanning

PROMQL_FUNCTIONS = frozenset(
    {
        "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
        "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week",
        "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_count",
        "histogram_fraction", "histogram_quantile", "histogram_sum", "holt_winters", "hour",
        "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
        "log10", "log2", "max_over_time", "min_over_time", "minute", "month", "predict_linear",
        "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn",
        "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time",
        "time", "timestamp", "vector", "year",
    }
)  # fmt: skip
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile",
    }
)  # fmt: skip
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset"}

_TOKENS = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(),{}])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Scan:
    metrics: frozenset[str]
    functions: frozenset[str]


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(expr):
        match = _TOKENS.match(expr, position)
        if match is None:
            raise ValueError(
                f"cannot read PromQL at {expr[position : position + 20]!r} in {expr!r}"
            )
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            yield kind, match.group()


def scan_promql(expr: str) -> Scan:
    """The metric names and the functions/aggregations `expr` uses. Label names (inside {...},
    by/without/on/ignoring/group_left/group_right lists) are not metric names."""
    tokens = list(_tokens(expr))
    metrics: set[str] = set()
    functions: set[str] = set()
    braces = 0
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
            if braces < 0:
                raise ValueError(f"unbalanced }} in {expr!r}")
        elif kind == "ident" and braces == 0:
            if text in _LABEL_LIST_KEYWORDS and following == "(":
                close = next(
                    (i for i in range(index + 2, len(tokens)) if tokens[i][1] == ")"), None
                )
                if close is None:
                    raise ValueError(f"unclosed label list after {text} in {expr!r}")
                index = close
            elif text in AGGREGATIONS:
                functions.add(text)
            elif text in _KEYWORDS:
                pass
            elif following == "(":
                functions.add(text)
            else:
                metrics.add(text)
        index += 1
    if braces:
        raise ValueError(f"unbalanced {{ in {expr!r}")
    return Scan(frozenset(metrics), frozenset(functions))


def unknown_names(exprs: dict[str, str], allowed: frozenset[str]) -> dict[str, list[str]]:
    """{where: [names not in allowed]} over every expression, plus unknown PromQL functions."""
    problems: dict[str, list[str]] = {}
    for where, expr in exprs.items():
        scan = scan_promql(expr)
        bad = sorted(scan.metrics - allowed) + [
            f"{name}()" for name in sorted(scan.functions - PROMQL_FUNCTIONS - AGGREGATIONS)
        ]
        if bad:
            problems[where] = bad
    return problems


# --------------------------------------------------------------------------------- alert rules


def rule_expressions(groups: list[dict[str, Any]]) -> dict[str, str]:
    """{rule name: expr} of every alerting and recording rule in `groups`."""
    return {
        str(rule.get("alert") or rule.get("record")): str(rule["expr"])
        for group in groups
        for rule in group["rules"]
    }


# ----------------------------------------------------------------------------------- dashboard

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "$manager": ".*",
}


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """{where: PromQL} for every panel target and every query variable (label_values(expr, l)
    contributes expr)."""
    exprs: dict[str, str] = {}
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} target {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", text)
        exprs[f"variable {variable['name']!r}"] = match.group(1) if match else text
    return exprs


def substitute_grafana_variables(expr: str) -> str:
    """`expr` with the dashboard's variables replaced by values Prometheus accepts."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr
