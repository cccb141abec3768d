"""`keeper run` refuses bad input the way an operator needs: one line naming the problem, exit 2,
no traceback, and never the key; an unreachable node is a failure of the world (exit 1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.devnet.anvil import free_port
from keeper.devnet.network import Devnet
from keeper.state.database import Database

# A well-formed key that funds nothing: only ever used to check it is not echoed.
SECRET_KEY = "0x" + "7e" * 32
MANAGER = "0x0B306BF915C4d645ff596e518fAf3F9669b97016"
WETH = "0xa513E6E4b8f2a923D98304ec87F64353C4D5C853"


def config_text(
    *,
    rpc_url: str,
    chain_id: int = 31337,
    manager: str = MANAGER,
    native_token: str = WETH,
    deploy_block: int = 1,
    metrics_port: int = 0,
) -> str:
    return (
        f'[chain]\nchain_id = {chain_id}\nrpc_url = "{rpc_url}"\n'
        f'[protocol]\ncredit_managers = ["{manager}"]\ndeploy_block = {deploy_block}\n'
        '[signer]\nprivate_key_env = "TEST_KEEPER_KEY"\n'
        f'[liquidation]\nnative_token = "{native_token}"\n'
        f"[ops]\nmetrics_port = {metrics_port}\n"
    )


def run_keeper(config: Path, key: str = SECRET_KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_KEEPER_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "keeper", "run", "--config", str(config), "--log-format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def assert_clean_refusal(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    assert SECRET_KEY[2:] not in output.lower()
    for needle in needles:
        assert needle in output, output


def test_help_explains_config_signals_and_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keeper", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for needle in ("--config", "private_key_env", "exit codes", "SIGTERM"):
        assert needle in result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    assert_clean_refusal(run_keeper(tmp_path / "absent.toml"), 2, "--config", "no such file")


def test_bad_field_is_named_with_its_value(tmp_path: Path) -> None:
    config = tmp_path / "keeper.toml"
    config.write_text(config_text(rpc_url="127.0.0.1:8545"))
    assert_clean_refusal(run_keeper(config), 2, "chain.rpc_url", "127.0.0.1:8545", "http://")


def test_malformed_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    config = tmp_path / "keeper.toml"
    config.write_text(config_text(rpc_url="http://127.0.0.1:1"))
    near_key = SECRET_KEY[:-2]  # one byte short
    result = run_keeper(config, key=near_key)
    assert_clean_refusal(result, 2, "TEST_KEEPER_KEY")
    assert near_key[2:] not in (result.stdout + result.stderr).lower()


def test_a_metrics_port_in_use_is_named_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "keeper.toml"
        config.write_text(config_text(rpc_url="http://127.0.0.1:1", metrics_port=port))
        assert_clean_refusal(
            run_keeper(config), 2, "ops.metrics_port", str(port), "choose a free port"
        )


def test_unreachable_node_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "keeper.toml"
    config.write_text(config_text(rpc_url=f"http://127.0.0.1:{free_port()}"))
    assert_clean_refusal(run_keeper(config), 1)


@pytest.mark.chain
def test_wrong_chain_id_and_address_without_code(devnet: Devnet, tmp_path: Path) -> None:
    config = tmp_path / "keeper.toml"
    config.write_text(config_text(rpc_url=devnet.node.rpc_url, chain_id=1))
    assert_clean_refusal(run_keeper(config), 2, "chain.chain_id", "serves chain 31337")
    no_code = "0x" + "11" * 20
    config.write_text(config_text(rpc_url=devnet.node.rpc_url, manager=no_code))
    assert_clean_refusal(
        run_keeper(config), 2, "protocol.credit_managers[0]", "no contract at this address"
    )


@pytest.mark.chain
def test_deploy_block_after_the_deployment_is_named(devnet: Devnet, tmp_path: Path) -> None:
    config = tmp_path / "keeper.toml"
    late = devnet.w3.eth.block_number
    config.write_text(
        config_text(
            rpc_url=devnet.node.rpc_url,
            manager=devnet.deployment.address("CreditManager.USDC"),
            native_token=devnet.deployment.address("WETH"),
            deploy_block=late,
        )
    )
    assert_clean_refusal(
        run_keeper(config), 2, "protocol.deploy_block", str(late), "at or before the pool"
    )


def test_a_database_written_by_a_newer_keeper_is_refused_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "keeper.sqlite"
    with Database.open(database) as newer:
        newer.ensure_schema("checkpoint", 99, [])
    config = tmp_path / "keeper.toml"
    unreachable = f"http://127.0.0.1:{free_port()}"
    config.write_text(
        config_text(rpc_url=unreachable) + f'[storage]\ndatabase_path = "{database.name}"\n'
    )
    assert_clean_refusal(run_keeper(config), 1, "format 99", "newer keeper")


def test_a_database_another_keeper_holds_is_refused_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "keeper.sqlite"
    config = tmp_path / "keeper.toml"
    unreachable = f"http://127.0.0.1:{free_port()}"
    config.write_text(
        config_text(rpc_url=unreachable) + f'[storage]\ndatabase_path = "{database.name}"\n'
    )
    with Database.open(database):
        result = run_keeper(config)
    assert_clean_refusal(result, 1, "in use by another keeper", f"pid {os.getpid()}")
