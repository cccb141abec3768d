"""The committed ABI + bytecode artifacts are what the committed Solidity compiles to.

The check itself is proven able to fail: a copy of the sources with one function added must be
reported stale against the unchanged artifacts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from keeper.protocol.artifacts import artifact_names, load_artifact

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_CONTRACTS = {
    "BatchLiquidator",
    "BulkAccountOpener",
    "CreditAccount",
    "CreditManager",
    "LendingPool",
    "Multicall3",
    "OracleSwapAdapter",
    "PriceFeed",
    "PriceOracle",
    "TestToken",
}


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(root / "contracts" / "build.mjs"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_artifacts_match_the_sources() -> None:
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr
    assert f"artifacts match sources ({len(EXPECTED_CONTRACTS)} contracts)" in result.stdout


def test_a_changed_source_is_reported_stale(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    shutil.copytree(
        ROOT / "keeper" / "protocol" / "artifacts", tmp_path / "keeper/protocol/artifacts"
    )
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    source = tmp_path / "contracts" / "src" / "Multicall3.sol"
    text = source.read_text()
    closing = text.rindex("}")
    source.write_text(text[:closing] + "    function added() external {}\n}\n")

    result = _check(tmp_path)

    assert result.returncode == 1
    assert "stale artifacts: Multicall3" in result.stderr


@pytest.mark.parametrize("name", sorted(EXPECTED_CONTRACTS))
def test_every_deployable_contract_has_abi_and_bytecode(name: str) -> None:
    artifact = load_artifact(name)
    assert artifact.abi, f"{name} has an empty ABI"
    for code in (artifact.bytecode, artifact.deployed_bytecode):
        assert code.startswith("0x")
        assert len(code) > len("0x")


def test_no_artifact_without_a_deployable_source() -> None:
    assert set(artifact_names()) == EXPECTED_CONTRACTS
