"""A real Prometheus (Debian's package, on loopback) scrapes a running keeper with the shipped
alert rules loaded: the keeper's numbers arrive in queries, and every rule evaluates cleanly
against the real series."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keeper.devnet.anvil import free_port
from tests.keeper.helpers import Harness, open_accounts, wait_until
from tests.ops.scrape import get, reachable
from tests.ops.test_ops_live import start_ready_keeper

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


class Prometheus:
    """`prometheus` on a free loopback port with its own config and data dir."""

    def __init__(self, workdir: Path, scrape_target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: `make test` installs it (apt-get install prometheus)"
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML: no YAML writer needed
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERT_RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "asgard-keeper",
                            "static_configs": [{"targets": [scrape_target]}],
                        }
                    ],
                }
            )
        )
        self._log = (workdir / "prometheus.log").open("wb")
        self._log_path = workdir / "prometheus.log"
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        response = get(f"{self.url}/api/v1/{path}{query}")
        assert response.status == 200, response.body
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=promql)["result"]
        return result

    def log_tail(self) -> str:
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    yield started
    for server in started:
        server.stop()


def test_a_real_prometheus_scrapes_the_keeper_and_evaluates_every_alert_rule(
    harness: Harness, tmp_path: Path, prometheus_for: list[Prometheus]
) -> None:
    net = harness.devnet(accounts=6, block_time=1)
    keeper, base = start_ready_keeper(harness, net)
    server = Prometheus(tmp_path, base.removeprefix("http://"))
    prometheus_for.append(server)
    wait_until(
        lambda: (r := reachable(f"{server.url}/-/ready")) is not None and r.status == 200,
        what=f"prometheus to be ready\n{server.log_tail()}",
    )

    up = wait_until(
        lambda: server.query('up{job="asgard-keeper"} == 1'),
        what="prometheus to scrape the keeper",
    )
    assert up[0]["metric"]["job"] == "asgard-keeper"
    accounts = wait_until(
        lambda: server.query("sum(keeper_credit_accounts)"),
        what="keeper_credit_accounts in prometheus",
    )
    assert float(accounts[0]["value"][1]) == len(open_accounts(net))
    processed = server.query("keeper_last_processed_block")
    assert 0 < float(processed[0]["value"][1]) <= net.w3.eth.block_number

    def rules_evaluated() -> list[dict[str, Any]] | None:
        rules = [rule for group in server.api("rules")["groups"] for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None

    rules = wait_until(rules_evaluated, what="every alert rule evaluated")
    assert all(rule["health"] == "ok" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"
    ]
    firing = [rule["name"] for rule in rules if rule["state"] == "firing"]
    assert firing == [], f"a healthy keeper fires no alert: {firing}"
    keeper.check_alive()
