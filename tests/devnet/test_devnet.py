"""The devnet: deployment, seeded health-factor spread, determinism, manifest, levers, cleanup."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

from keeper.devnet.controls import advance_time, move_price, refresh_feeds, reverted_after
from keeper.devnet.manifest import Manifest, ManifestError
from keeper.devnet.network import Devnet, running_devnet
from keeper.devnet.report import AccountView, read_accounts
from keeper.devnet.tx import revert_reason
from keeper.protocol.calls import MULTICALL3_ADDRESS
from keeper.risk.health import WAD

SEEDED = 16


@pytest.fixture(scope="module")
def seeded() -> Iterator[Devnet]:
    with running_devnet(accounts=SEEDED, seed=11) as net:
        yield net


@pytest.fixture
def seeded_chain(seeded: Devnet) -> Iterator[Devnet]:
    with reverted_after(seeded.w3):
        yield seeded


def _positions(views: list[AccountView]) -> dict[str, tuple[object, ...]]:
    """What seeding decides; interest, and so Hf, also depends on the wall-clock start time."""
    return {v.address: (v.owner, v.balances, v.principal, v.weighted_value) for v in views}


def test_every_contract_has_code_and_multicall3_is_canonical(seeded: Devnet) -> None:
    contracts = seeded.deployment.contracts
    assert contracts["Multicall3"] == MULTICALL3_ADDRESS
    for name, address in contracts.items():
        assert len(seeded.w3.eth.get_code(Web3.to_checksum_address(address))) > 0, (
            f"{name} at {address} has no code"
        )
    for market in ("USDC", "WETH"):
        assert f"CreditManager.{market}" in contracts
        assert f"LendingPool.{market}" in contracts


def test_seeded_accounts_are_open_and_spread_around_one(seeded: Devnet) -> None:
    views = read_accounts(seeded.w3, seeded.deployment)
    assert {v.address for v in views} == {a.address for a in seeded.accounts}
    assert len(views) == SEEDED
    health = sorted(v.health_factor_wad for v in views)
    assert health[0] >= WAD, "a seeded account starts liquidatable"
    assert any(h < 115 * WAD // 100 for h in health), "no account close to 1"
    assert any(h > 150 * WAD // 100 for h in health), "no comfortable account"
    assert {v.market for v in views} == {"USDC", "WETH"}


def test_seeded_accounts_land_near_their_target(seeded: Devnet) -> None:
    actual = {v.address: v.health_factor_wad for v in read_accounts(seeded.w3, seeded.deployment)}
    for account in seeded.accounts:
        target = account.target_health_factor_bps * WAD // 10_000
        assert abs(actual[account.address] - target) < target // 100, account


def test_the_same_seed_builds_the_same_accounts(seeded: Devnet) -> None:
    with running_devnet(accounts=SEEDED, seed=11) as again:
        assert again.accounts == seeded.accounts
        assert _positions(read_accounts(again.w3, again.deployment)) == (
            _positions(read_accounts(seeded.w3, seeded.deployment))
        )
    with running_devnet(accounts=4, seed=12) as other:
        assert [a.target_health_factor_bps for a in other.accounts] != [
            a.target_health_factor_bps for a in seeded.accounts[:4]
        ]


def test_a_crash_hurts_exactly_the_accounts_holding_the_token(seeded_chain: Devnet) -> None:
    w3, deployment = seeded_chain.w3, seeded_chain.deployment
    before = read_accounts(w3, deployment)
    old, new = move_price(w3, deployment, "WETH", -4_000, seeded_chain.roles.deployer.address)
    assert new == old * 6 // 10
    after = {v.address: v for v in read_accounts(w3, deployment)}
    for view in before:
        long_weth = view.market == "USDC" and "WETH" in view.balances
        if long_weth:
            assert after[view.address].weighted_value < view.weighted_value
        elif view.market == "USDC":  # only interest moved, by a block's worth
            assert after[view.address].weighted_value == view.weighted_value
    assert any(v.health_factor_wad < WAD for v in after.values()), "a 40 % crash hurt nobody"


def test_time_makes_feeds_stale_until_refreshed(seeded_chain: Devnet) -> None:
    w3, deployment = seeded_chain.w3, seeded_chain.deployment
    manager = deployment.contract(w3, "CreditManager.USDC")
    account = next(a.address for a in seeded_chain.accounts if a.market == "USDC")
    advance_time(w3, seeded_chain.spec.staleness_period_s + 1)
    with pytest.raises(ContractLogicError) as stale:
        manager.functions.calcHealthFactor(account).call()
    assert revert_reason(stale.value).name == "StalePrice"
    refresh_feeds(w3, deployment, seeded_chain.roles.deployer.address)
    assert manager.functions.calcHealthFactor(account).call() > 0


def test_manifest_round_trips_and_describes_the_chain(seeded: Devnet, tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    seeded.manifest().write(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = Manifest.read(path)
    assert loaded == seeded.manifest()
    assert loaded.deployment.chain_id == seeded.w3.eth.chain_id
    assert 0 < loaded.deployment.deploy_block <= seeded.w3.eth.block_number
    assert loaded.rpc_url == seeded.node.rpc_url
    assert loaded.ws_url.startswith("ws://127.0.0.1:")
    roles = loaded.roles
    for key in (roles.deployer, roles.keeper, roles.emergency_liquidator, *roles.borrowers):
        assert Account.from_key(key.private_key).address == key.address
        assert seeded.w3.eth.get_balance(Web3.to_checksum_address(key.address)) > 0


def test_manifest_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="start one with 'keeper devnet'"):
        Manifest.read(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"chain_id": 1}')
    with pytest.raises(ManifestError, match="not valid"):
        Manifest.read(broken)


def test_leaving_the_devnet_stops_anvil_and_removes_its_files() -> None:
    with running_devnet(accounts=0) as net:
        pid, port, workdir = net.node.pid, net.node.port, net.node.workdir
        assert workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
