"""`keeper devnet` as a user runs it: a real process, its output, its levers, its clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KEEPER = [sys.executable, "-m", "keeper"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\s", re.MULTILINE)


def keeper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEEPER, *args], capture_output=True, text=True, env=ENV, timeout=60, check=False
    )


class RunningDevnet:
    def __init__(self, process: subprocess.Popen[str], manifest: Path, banner: str) -> None:
        self.process = process
        self.manifest = manifest
        self.banner = banner

    @property
    def anvil_pid(self) -> int:
        match = re.search(r"anvil pid (\d+)", self.banner)
        assert match, self.banner
        return int(match.group(1))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    manifest = tmp_path_factory.mktemp("devnet") / "manifest.json"
    process = subprocess.Popen(
        [*KEEPER, "devnet", "--accounts", "6", "--seed", "3", "--manifest", str(manifest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("stop:"):
            break
    banner = "".join(lines)
    try:
        assert "stop:" in banner, f"devnet did not come up:\n{banner}"
        yield RunningDevnet(process, manifest, banner)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_banner_lists_contracts_and_seeded_accounts_by_health(running: RunningDevnet) -> None:
    assert "devnet up in" in running.banner
    assert re.search(r"CreditManager\.USDC\s+0x[0-9a-fA-F]{40}", running.banner)
    assert "Multicall3               0xcA11bde05977b3631167028862bE2a173976CA11" in running.banner
    assert len(ADDRESS.findall(running.banner)) == 6
    health = [float(h) for h in re.findall(r"\s(\d+\.\d{4})\s*$", running.banner, re.MULTILINE)]
    assert health == sorted(health)
    assert running.manifest.exists()


def test_accounts_lists_the_same_accounts(running: RunningDevnet) -> None:
    result = keeper("devnet", "accounts", "--manifest", str(running.manifest))
    assert result.returncode == 0, result.stderr
    assert sorted(ADDRESS.findall(result.stdout)) == sorted(ADDRESS.findall(running.banner))


def test_a_price_crash_reports_accounts_below_one(running: RunningDevnet) -> None:
    result = keeper(
        "devnet", "price", "WETH", "--change", "-45%", "--manifest", str(running.manifest)
    )
    assert result.returncode == 0, result.stderr
    assert "WETH: 3,000.00 USD -> 1,650.00 USD" in result.stdout
    below = re.search(r"(\d+) of 6 accounts now below Hf 1", result.stdout)
    assert below, result.stdout
    listed = keeper("devnet", "accounts", "--manifest", str(running.manifest))
    assert listed.stdout.count("LIQUIDATABLE") == int(below.group(1))


def test_a_price_can_be_set_in_usd(running: RunningDevnet) -> None:
    result = keeper(
        "devnet", "price", "wbtc", "--set", "45000.5", "--manifest", str(running.manifest)
    )
    assert result.returncode == 0, result.stderr
    assert "45,000.50 USD" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["price", "DOGE", "--set", "1"],
            "'DOGE': unknown token: the devnet has USDC, WETH",
        ),
        (["price", "WETH", "--change", "abc"], "'abc' is not a percentage"),
        (["price", "WETH", "--change", "-100%"], "would make the price zero"),
        (["price", "WETH", "--set", "-3"], "must be a positive number"),
        (["--accounts", "-3"], "must be a whole number >= 0"),
    ],
)
def test_bad_input_exits_2_with_the_fix_and_no_traceback(
    running: RunningDevnet, args: list[str], message: str
) -> None:
    result = keeper("devnet", *args, "--manifest", str(running.manifest))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_manifest_says_how_to_start_a_devnet(tmp_path: Path) -> None:
    result = keeper("devnet", "accounts", "--manifest", str(tmp_path / "none.json"))
    assert result.returncode == 2
    assert "start one with 'keeper devnet'" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_teaches_the_commands() -> None:
    top = keeper("--help")
    assert top.returncode == 0
    assert "keeper devnet price WETH --change -30%" in top.stdout
    devnet_help = keeper("devnet", "--help")
    for option in ("--accounts", "--seed", "--block-time", "--heartbeat", "--manifest"):
        assert option in devnet_help.stdout


def test_interrupt_stops_anvil_and_removes_the_manifest(running: RunningDevnet) -> None:
    anvil_pid = running.anvil_pid
    running.process.send_signal(signal.SIGINT)
    rest, _ = running.process.communicate(timeout=15)
    assert running.process.returncode == 0
    assert "devnet stopped" in rest
    assert not running.manifest.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(anvil_pid, 0)
