"""The keeper under test: the real `keeper run` in its own process, watched from outside.

Everything measured comes from where an operator would look: its JSON log lines (timings the
keeper reports about itself), its Prometheus endpoint (requests it sent), and /proc (CPU and
memory the kernel charged it), so the harness adds nothing to the process it measures.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from keeper.devnet.anvil import DevKey, free_port
from keeper.devnet.keeper_config import KeeperProcess, keeper_config_toml
from keeper.devnet.manifest import Manifest

LogLine = dict[str, Any]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class KeeperFailedError(RuntimeError):
    """The keeper exited, or a wait for one of its log lines ran out."""


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """CPU seconds charged to a process (user + system) and its resident memory."""

    cpu_s: float
    rss_bytes: int


def process_usage(pid: int) -> ProcessUsage:
    """Read from /proc: exact to the kernel's clock tick (10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return ProcessUsage((user_ticks + system_ticks) / _CLOCK_TICKS, resident_pages * _PAGE_SIZE)


class KeeperUnderTest:
    """One `keeper run` with a fresh or reused database in `workdir`; stopped by SIGTERM."""

    def __init__(self, manifest: Manifest, key: DevKey, workdir: Path) -> None:
        self._manifest = manifest
        self._key = key
        self._workdir = workdir
        self._process: KeeperProcess | None = None
        self._log_path = workdir / "keeper.log"
        self._read_offset = 0
        self._lines: list[LogLine] = []
        self.metrics_port = free_port()
        self.started_at = 0.0

    def start(self) -> None:
        """Starts the process; `started_at` (monotonic) is when it was spawned."""
        config = self._workdir / "keeper.toml"
        config.write_text(
            keeper_config_toml(
                self._manifest,
                metrics_port=self.metrics_port,
                database_path="keeper.sqlite",
            )
        )
        self._read_offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        self._lines = []
        self.started_at = time.monotonic()
        self._process = KeeperProcess(
            config, self._key, log_path=self._log_path, extra_args=("--log-format", "json")
        )

    def stop(self) -> int:
        if self._process is None:
            return 0
        code = self._process.stop(timeout_s=30)
        self._process = None
        return code

    @property
    def pid(self) -> int:
        if self._process is None:
            raise KeeperFailedError("the keeper is not running")
        return self._process.pid

    def usage(self) -> ProcessUsage:
        return process_usage(self.pid)

    def lines(self) -> list[LogLine]:
        """Every JSON log line since the last `start`, read incrementally."""
        with self._log_path.open("rb") as log:
            log.seek(self._read_offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1
        self._read_offset += complete
        for raw in chunk[:complete].splitlines():
            try:
                self._lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue  # a non-JSON line (a warning printed by a library)
        return self._lines

    def wait_for(
        self, event: str, *, where: Callable[[LogLine], bool] = lambda _: True, timeout_s: float
    ) -> LogLine:
        """The first line of `event` (since start) matching `where`; fails when the keeper
        exits or `timeout_s` passes, with the tail of its log."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines():
                if line.get("event") == event and where(line):
                    return line
            if self._process is not None and self._process.poll() is not None:
                raise KeeperFailedError(
                    f"the keeper exited while waiting for {event}" + self.tail()
                )
            if time.monotonic() > deadline:
                raise KeeperFailedError(f"no {event} within {timeout_s:.0f} s" + self.tail())
            time.sleep(0.02)

    def events(self, event: str) -> Iterator[LogLine]:
        return (line for line in self.lines() if line.get("event") == event)

    def tail(self, count: int = 15) -> str:
        lines = self._log_path.read_text(errors="replace").splitlines()[-count:]
        return "\n  keeper log:\n  " + "\n  ".join(lines)

    def rpc_requests(self) -> dict[str, float]:
        """`keeper_rpc_requests_total` per method (summed over endpoints)."""
        by_method: dict[str, float] = {}
        for name, labels, value in self._samples():
            if name == "keeper_rpc_requests_total":
                by_method[labels["method"]] = by_method.get(labels["method"], 0.0) + value
        return by_method

    def last_block(self) -> int:
        """The last block the keeper has processed (`keeper_last_processed_block`)."""
        for name, _, value in self._samples():
            if name == "keeper_last_processed_block":
                return int(value)
        raise KeeperFailedError("the keeper exports no keeper_last_processed_block")

    def _samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                yield sample.name, sample.labels, sample.value
