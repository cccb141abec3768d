"""Running `keeper` operator commands as real processes, and reading the truth from the chain."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.types import BlockIdentifier

from keeper.devnet.keeper_config import KEY_ENV
from keeper.devnet.network import Devnet
from tests.keeper.helpers import crash, health_factor, managers, open_accounts

WAD = 10**18


@dataclass(frozen=True, slots=True)
class Operator:
    net: Devnet
    config: Path

    @property
    def signer(self) -> str:
        return self.net.roles.keeper.address

    def run(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`python -m keeper <args>` with the keeper's key in its environment variable; every
        run is checked for what must never happen: the key in the output, a traceback, a
        progress line when stderr is not a terminal."""
        key = self.net.roles.keeper.private_key
        result = subprocess.run(
            [sys.executable, "-m", "keeper", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, KEY_ENV: key} if env is None else env,
            timeout=120,
            check=False,
        )
        output = result.stdout + result.stderr
        assert key.removeprefix("0x").lower() not in output.lower(), "the signer's key was printed"
        assert "Traceback" not in output, output
        assert "back-fill:" not in output, "progress written to a non-terminal"
        return result

    def run_all(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Commands that only read the chain, as concurrent processes (each costs seconds of
        imports alone)."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: self.run(*args), commands))

    def nonce(self) -> int:
        return self.net.w3.eth.get_transaction_count(
            Web3.to_checksum_address(self.signer), "pending"
        )


def hf_text(wad: int) -> str:
    """A WAD health factor floored to 4 places, computed independently of the keeper's code."""
    return f"{wad // WAD}.{wad % WAD // 10**14:04d}"


def views(net: Devnet, account: str, market: str, block: BlockIdentifier) -> dict[str, Any]:
    """The CreditManager's own figures for `account` at `block`."""
    manager = managers(net)[market].functions
    principal, interest, fee = manager.calcDebt(account).call(block_identifier=block)
    total_value, weighted_value = manager.calcTotalValue(account).call(block_identifier=block)
    return {
        "health_factor_wad": health_factor(net, market, account, block),
        "total_value": total_value,
        "weighted_value": weighted_value,
        "principal": principal,
        "interest": interest,
        "fee": fee,
        "owner": manager.creditAccountInfo(account).call(block_identifier=block)[0],
        "liquidatable": manager.isLiquidatable(account).call(block_identifier=block),
    }


def by_health(net: Devnet, block: BlockIdentifier = "latest") -> list[tuple[int, str, str]]:
    """(health factor, account, market) of every open account, lowest first, from the views."""
    return sorted(
        (health_factor(net, market, account, block), account, market)
        for account, market in open_accounts(net, block).items()
    )


def crash_weth(net: Devnet) -> list[tuple[int, str, str]]:
    """WETH -30 %: returns the accounts the contracts then call liquidatable, lowest first."""
    crash(net, "WETH", -3_000)
    below = [entry for entry in by_health(net) if entry[0] < WAD]
    assert below, "the crash should sink at least one account"
    return below


def tx_line(stdout: str) -> tuple[str, int]:
    """The hash and block of `liquidated: tx 0x… included in block N`."""
    match = re.search(r"liquidated: tx (0x[0-9a-f]{64}) included in block (\d+)", stdout)
    assert match, stdout
    return match.group(1), int(match.group(2))
