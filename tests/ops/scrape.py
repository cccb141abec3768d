"""Reading a running keeper's HTTP side the way Prometheus and a kubelet do, and the catalogue
of metrics it promises (docs/metrics.md)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, timeout_s: float = 5.0) -> Response:
    """GET without raising on 503: readiness answers with it on purpose."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Response(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read().decode())


def reachable(url: str) -> Response | None:
    try:
        return get(url, timeout_s=1.0)
    except OSError:
        return None


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value for every sample in a text exposition."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def families(exposition: str) -> dict[str, str]:
    """Family name as documented (counters with `_total`) -> type, for the keeper's own."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        if name.startswith("keeper_"):
            found[name] = family.type
    return found


def catalogue() -> dict[str, str]:
    """Name -> type of every metric docs/metrics.md lists."""
    rows = re.findall(
        r"^\| `(keeper_[a-z0-9_]+)` \| (gauge|counter|histogram) \|", CATALOGUE.read_text(), re.M
    )
    return dict(rows)


def value(exposition: str, name: str, **labels: str) -> float | None:
    return samples(exposition).get((name, frozenset(labels.items())))


def total(exposition: str, name: str) -> float:
    """Sum of a metric's samples over all label sets."""
    return sum(v for (sample, _), v in samples(exposition).items() if sample == name)
