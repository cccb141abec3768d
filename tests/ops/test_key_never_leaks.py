"""The signer's key never leaves the process: a keeper run with a known key, through start-up, a
liquidation, metrics and health scrapes, a stop, and the operator commands and bad-input errors
around it, emits nothing that contains the key in any spelling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.devnet.controls import move_price
from keeper.devnet.keeper_config import KEY_ENV
from tests.keeper.helpers import Harness, wait_for_log
from tests.ops.scrape import get
from tests.ops.test_ops_live import start_ready_keeper

pytestmark = pytest.mark.chain


def spellings(private_key: str) -> list[str]:
    digits = private_key.removeprefix("0x").lower()
    return [digits, digits.upper(), str(int(digits, 16))]


def keeper_command(*args: str, key: str, stdin: str = "") -> str:
    """Output (stdout + stderr) of `python -m keeper ARGS` with the key in the environment."""
    result = subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, KEY_ENV: key},
        timeout=120,
        check=False,
    )
    return result.stdout + result.stderr


def test_nothing_the_keeper_emits_contains_its_key(harness: Harness, tmp_path: Path) -> None:
    net = harness.devnet(accounts=20, block_time=1)
    key = net.roles.keeper.private_key
    keeper, base = start_ready_keeper(harness, net)
    move_price(net.w3, net.deployment, "WETH", -3_000, net.roles.deployer.address)
    included = wait_for_log(keeper, "liquidation.included")
    account = included["liquidated"][0]
    emitted = [
        get(f"{base}/metrics").body,
        get(f"{base}/healthz").body,
        get(f"{base}/readyz").body,
    ]
    assert keeper.stop() == 0
    emitted.append(keeper.log_path.read_text())

    config = tmp_path / "keeper.toml"
    emitted += [
        keeper_command("check-config", "--config", str(config), key=key),
        keeper_command("accounts", "--config", str(config), "--json", key=key),
        keeper_command("account", account, "--config", str(config), key=key),
        keeper_command("liquidate", account, "--config", str(config), "--dry-run", key=key),
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text().replace("[liquidation]", "[liquidation]\nbogus = 1"))
    emitted.append(keeper_command("run", "--config", str(broken), key=key))
    emitted.append(keeper_command("run", "--config", str(config), key=key[:-2]))  # malformed key

    everything = "\n".join(emitted)
    assert net.roles.keeper.address in everything, "the scan must cover real output"
    assert "bogus" in everything
    for spelling in spellings(key):
        assert spelling not in everything
