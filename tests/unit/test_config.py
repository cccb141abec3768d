"""The keeper's TOML configuration: a complete file parses to exact values, and every mistake an
operator can make is refused with the field's full name and the value found."""

from __future__ import annotations

import copy
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from keeper.config import (
    CONFIG_KEYS,
    ChainConfig,
    ConfigError,
    KeeperConfig,
    LiquidationConfig,
    OpsConfig,
    ProtocolConfig,
    SignerConfig,
    env_variable,
    load_config,
    parse_config,
)
from keeper.devnet.anvil import DevKey
from keeper.devnet.deploy import Deployment, Roles
from keeper.devnet.keeper_config import keeper_config_toml
from keeper.devnet.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
MANAGER_1 = "0x0B306BF915C4d645ff596e518fAf3F9669b97016"
MANAGER_2 = "0x9A676e781A523b5d0C0e43731313A708CB607508"
WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
BASE = Path("/etc/asgard")


def complete() -> dict[str, Any]:
    """Every field set, none at its default."""
    return {
        "chain": {
            "chain_id": 31337,
            "rpc_url": "http://127.0.0.1:8545",
            "ws_url": "ws://127.0.0.1:8546",
            "poll_interval_s": 0.5,
            "log_chunk_blocks": 2_000,
        },
        "protocol": {
            "credit_managers": [MANAGER_1.lower(), MANAGER_2],
            "deploy_block": 17,
        },
        "signer": {"keystore": "keys/keeper.json", "password_file": "/run/secrets/password"},
        "liquidation": {
            "native_token": WETH.lower(),
            "min_profit_usd": "2.5",
            "emergency": True,
            "priority_fee_gwei": "0.25",
            "max_fee_gwei": 42,
            "inclusion_timeout_s": 30,
            "gas_limit_margin_bps": 1_500,
            "max_failures": 5,
            "failure_cooldown_s": 60.5,
            "feed_check_interval_s": 15,
            "batch_size": 40,
        },
        "ops": {
            "metrics_host": "0.0.0.0",
            "metrics_port": 9200,
            "head_stale_s": 30,
            "min_native_balance": "0.25",
            "shutdown_grace_s": 8.5,
            "loop_stall_s": 2,
        },
    }


def minimal() -> dict[str, Any]:
    """Only the required fields; everything else takes its default."""
    return {
        "chain": {"chain_id": 1, "rpc_url": "https://rpc.example.org"},
        "protocol": {"credit_managers": [MANAGER_1], "deploy_block": 0},
        "signer": {"private_key_env": "KEEPER_KEY"},
        "liquidation": {"native_token": WETH},
    }


def test_a_complete_config_parses_to_exact_values() -> None:
    config = parse_config(complete(), base_dir=BASE)
    assert config == KeeperConfig(
        chain=ChainConfig(31337, "http://127.0.0.1:8545", "ws://127.0.0.1:8546", 0.5, 2_000),
        protocol=ProtocolConfig((MANAGER_1, MANAGER_2), 17),
        signer=SignerConfig(
            BASE / "keys/keeper.json",
            Path("/run/secrets/password"),
            private_key_env=None,
            private_key_file=None,
        ),
        liquidation=LiquidationConfig(
            native_token=WETH,
            min_profit_usd=Decimal("2.5"),
            emergency=True,
            priority_fee_wei=250_000_000,
            max_fee_wei=42 * 10**9,
            inclusion_timeout_s=30.0,
            gas_limit_margin_bps=1_500,
            max_failures=5,
            failure_cooldown_s=60.5,
            feed_check_interval_s=15.0,
            batch_liquidator=None,
            batch_size=40,
        ),
        ops=OpsConfig(
            metrics_host="0.0.0.0",
            metrics_port=9200,
            head_stale_s=30.0,
            min_native_balance_wei=25 * 10**16,
            shutdown_grace_s=8.5,
            loop_stall_s=2.0,
        ),
    )
    assert isinstance(config.chain.poll_interval_s, float)
    assert isinstance(config.liquidation.inclusion_timeout_s, float)
    assert isinstance(config.ops.head_stale_s, float)


def test_defaults_fill_every_optional_field() -> None:
    config = parse_config(minimal(), base_dir=BASE)
    assert config.chain == ChainConfig(1, "https://rpc.example.org", None, 1.0, 5_000)
    assert config.signer == SignerConfig(None, None, "KEEPER_KEY", None)
    assert config.liquidation == LiquidationConfig(
        native_token=WETH,
        min_profit_usd=Decimal(0),
        emergency=False,
        priority_fee_wei=10**9,
        max_fee_wei=500 * 10**9,
        inclusion_timeout_s=12.0,
        gas_limit_margin_bps=2_000,
        max_failures=3,
        failure_cooldown_s=300.0,
        feed_check_interval_s=60.0,
        batch_liquidator=None,
        batch_size=25,
    )
    assert config.ops == OpsConfig(
        metrics_host="127.0.0.1",
        metrics_port=9108,
        head_stale_s=60.0,
        min_native_balance_wei=10**17,
        shutdown_grace_s=5.0,
        loop_stall_s=5.0,
    )
    assert config.ops == OpsConfig()


def test_a_batch_liquidator_is_an_address_and_absent_by_default() -> None:
    raw = _edit(complete(), "liquidation.batch_liquidator", MANAGER_2.lower())
    assert parse_config(raw, base_dir=BASE).liquidation.batch_liquidator == MANAGER_2
    assert parse_config(minimal(), base_dir=BASE).liquidation.batch_liquidator is None


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    raw = complete()
    raw["signer"] = {"keystore": "../secrets/ks.json", "password_file": "pw"}
    signer = parse_config(raw, base_dir=tmp_path / "config").signer
    assert signer.keystore == (tmp_path / "secrets" / "ks.json").resolve()
    assert signer.password_file == (tmp_path / "config" / "pw").resolve()
    assert signer.keystore is not None
    assert signer.keystore.is_absolute()


def test_the_production_example_parses_and_documents_every_key() -> None:
    path = REPO / "config" / "production.example.toml"
    config = load_config(path, environ={})
    assert config.chain.chain_id == 1
    assert config.chain.ws_url == "wss://rpc.example.org/ws"
    assert config.protocol.credit_managers == ("0x0000000000000000000000000000000000000001",)
    assert config.signer == SignerConfig(
        Path("/run/secrets/keeper-keystore.json"), Path("/run/secrets/keeper-password"), None, None
    )
    assert config.liquidation.min_profit_usd == Decimal(5)
    assert config.liquidation.max_fee_wei == 300 * 10**9
    assert config.liquidation.inclusion_timeout_s == 24.0
    # [ops] shows the defaults, so the file reads as the behaviour without it.
    assert config.ops == OpsConfig()
    # Every key is documented, set or as a commented alternative, with its environment variable.
    text = path.read_text()
    for section, keys in CONFIG_KEYS.items():
        assert f"\n[{section}]\n" in text
        for key in keys:
            assert re.search(rf"^(# )?{key} = .*# {env_variable(section, key)}$", text, re.M), key
    # Every key complete() sets is written uncommented, so each one's example value is checked.
    raw = tomllib.loads(text)
    written = {f"{section}.{key}" for section, table in raw.items() for key in table}
    every = {f"{section}.{key}" for section, table in complete().items() for key in table}
    assert every - written == set()


def test_the_devnet_example_is_what_keeper_devnet_writes() -> None:
    """The example, with its placeholders, is exactly the generated file for the same values."""
    path = REPO / "config" / "devnet.example.toml"
    key = DevKey("0x" + "00" * 20, "0x" + "01" * 32)
    manifest = Manifest(
        rpc_url="http://127.0.0.1:8545",
        ws_url="ws://127.0.0.1:8545",
        deployment=Deployment(
            chain_id=31337,
            deploy_block=1,
            contracts={
                "CreditManager.USDC": "0x" + "11" * 20,
                "CreditManager.WETH": "0x" + "22" * 20,
                "WETH": "0x" + "33" * 20,
                "BatchLiquidator": "0x" + "44" * 20,
            },
            tokens=("USDC", "WETH"),
            markets=("USDC", "WETH"),
            decimals={"USDC": 6, "WETH": 18},
        ),
        roles=Roles.from_keys([key] * 6),
        accounts=(),
    )
    generated = tomllib.loads(keeper_config_toml(manifest))
    assert tomllib.loads(path.read_text()) == generated
    config = load_config(path, environ={})
    assert config.signer.private_key_env == "ASGARD_KEEPER_KEY"
    assert config.ops.metrics_port == 0


def test_the_devnet_config_serves_metrics_on_the_port_asked() -> None:
    raw = tomllib.loads((REPO / "config" / "devnet.example.toml").read_text())
    raw["ops"]["metrics_port"] = 9300
    assert parse_config(raw, base_dir=BASE).ops == OpsConfig(metrics_port=9300)


def _edit(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `raw` with `section.key` set to `value` (removed if `value` is DROP)."""
    edited = copy.deepcopy(raw)
    *sections, key = path.split(".")
    table = edited
    for section in sections:
        table = table[section]
    if value is DROP:
        del table[key]
    else:
        table[key] = value
    return edited


DROP = object()

# (field edited, value written, field the error must name, text the error must show)
BAD_FIELDS: list[tuple[str, Any, str, str]] = [
    # A missing section is a missing first required key: the environment could supply it.
    ("chain", DROP, "chain.chain_id", "None"),
    ("chain", "http://x", "chain", "'http://x'"),
    ("ops", 9108, "ops", "9108"),
    ("chain.chain_id", DROP, "chain.chain_id", "None"),
    ("chain.chain_id", 0, "chain.chain_id", "0"),
    ("chain.chain_id", "1", "chain.chain_id", "'1'"),
    ("chain.chain_id", True, "chain.chain_id", "True"),
    ("chain.chain_id", 1.0, "chain.chain_id", "1.0"),
    ("chain.rpc_url", DROP, "chain.rpc_url", "None"),
    ("chain.rpc_url", "ws://127.0.0.1:8545", "chain.rpc_url", "'ws://127.0.0.1:8545'"),
    ("chain.rpc_url", "", "chain.rpc_url", "''"),
    ("chain.rpc_url", 8545, "chain.rpc_url", "8545"),
    ("chain.ws_url", "http://127.0.0.1:8546", "chain.ws_url", "'http://127.0.0.1:8546'"),
    ("chain.poll_interval_s", 0.01, "chain.poll_interval_s", "0.01"),
    ("chain.poll_interval_s", "1", "chain.poll_interval_s", "'1'"),
    ("chain.poll_interval_s", False, "chain.poll_interval_s", "False"),
    ("chain.poll_interval_s", float("nan"), "chain.poll_interval_s", "nan"),
    ("chain.poll_interval_s", float("inf"), "chain.poll_interval_s", "inf"),
    ("chain.log_chunk_blocks", 0, "chain.log_chunk_blocks", "0"),
    ("protocol.credit_managers", [], "protocol.credit_managers", "[]"),
    ("protocol.credit_managers", MANAGER_1, "protocol.credit_managers", repr(MANAGER_1)),
    ("protocol.credit_managers", [MANAGER_1, "0x1234"], "protocol.credit_managers[1]", "'0x1234'"),
    ("protocol.credit_managers", [MANAGER_1, 7], "protocol.credit_managers[1]", "7"),
    # A mixed-case address with a wrong checksum is a typo, not an address.
    (
        "protocol.credit_managers",
        [MANAGER_1.replace("B", "b", 1)],
        "protocol.credit_managers[0]",
        repr(MANAGER_1.replace("B", "b", 1)),
    ),
    ("protocol.deploy_block", -1, "protocol.deploy_block", "-1"),
    ("protocol.deploy_block", DROP, "protocol.deploy_block", "None"),
    ("signer.keystore", "", "signer.keystore", "''"),
    ("signer.private_key_env", "KEY", "signer", "signer.keystore, signer.password_file, signer"),
    ("signer.private_key_file", "key", "signer", "signer.private_key_file'"),
    ("signer.password_file", DROP, "signer", "'password_file': None"),
    ("liquidation.native_token", "WETH", "liquidation.native_token", "'WETH'"),
    ("liquidation.native_token", DROP, "liquidation.native_token", "None"),
    ("liquidation.min_profit_usd", "-1", "liquidation.min_profit_usd", "'-1'"),
    ("liquidation.min_profit_usd", "five", "liquidation.min_profit_usd", "'five'"),
    ("liquidation.min_profit_usd", "NaN", "liquidation.min_profit_usd", "'NaN'"),
    ("liquidation.min_profit_usd", "Infinity", "liquidation.min_profit_usd", "'Infinity'"),
    ("liquidation.min_profit_usd", True, "liquidation.min_profit_usd", "True"),
    ("liquidation.min_profit_usd", [1], "liquidation.min_profit_usd", "[1]"),
    ("liquidation.emergency", "yes", "liquidation.emergency", "'yes'"),
    ("liquidation.emergency", 1, "liquidation.emergency", "1"),
    ("liquidation.priority_fee_gwei", "-0.1", "liquidation.priority_fee_gwei", "'-0.1'"),
    ("liquidation.max_fee_gwei", "0.2", "liquidation.max_fee_gwei", "'0.2'"),
    ("liquidation.inclusion_timeout_s", 0, "liquidation.inclusion_timeout_s", "0"),
    ("liquidation.gas_limit_margin_bps", -5, "liquidation.gas_limit_margin_bps", "-5"),
    ("liquidation.max_failures", 0, "liquidation.max_failures", "0"),
    ("liquidation.failure_cooldown_s", -1, "liquidation.failure_cooldown_s", "-1"),
    ("liquidation.feed_check_interval_s", 0.5, "liquidation.feed_check_interval_s", "0.5"),
    ("liquidation.batch_liquidator", "0x1234", "liquidation.batch_liquidator", "'0x1234'"),
    ("liquidation.batch_liquidator", 3, "liquidation.batch_liquidator", "3"),
    ("liquidation.batch_size", 0, "liquidation.batch_size", "0"),
    ("liquidation.batch_size", 1_001, "liquidation.batch_size", "1001"),
    ("liquidation.batch_size", 2.5, "liquidation.batch_size", "2.5"),
    ("ops.metrics_host", "", "ops.metrics_host", "''"),
    ("ops.metrics_host", 127, "ops.metrics_host", "127"),
    ("ops.metrics_port", -1, "ops.metrics_port", "-1"),
    ("ops.metrics_port", 65_536, "ops.metrics_port", "65536"),
    ("ops.metrics_port", "9108", "ops.metrics_port", "'9108'"),
    ("ops.head_stale_s", 0.5, "ops.head_stale_s", "0.5"),
    ("ops.min_native_balance", "-0.1", "ops.min_native_balance", "'-0.1'"),
    ("ops.min_native_balance", "a lot", "ops.min_native_balance", "'a lot'"),
    ("ops.shutdown_grace_s", -0.5, "ops.shutdown_grace_s", "-0.5"),
    ("ops.shutdown_grace_s", 9.5, "ops.shutdown_grace_s", "9.5"),
    ("ops.loop_stall_s", 0.05, "ops.loop_stall_s", "0.05"),
    ("ops.loop_stall_s", float("inf"), "ops.loop_stall_s", "inf"),
    # Unknown keys are typos: a silently ignored `max_fee_gewi` would leave the 500 gwei default.
    # Their value is not shown: a misspelt key may hold a secret.
    ("extra", {}, "extra", "<value not shown>"),
    ("chain.rpc", "http://x", "chain.rpc", "<value not shown>"),
    ("protocol.credit_manager", [MANAGER_1], "protocol.credit_manager", "<value not shown>"),
    ("signer.key", "0xabc", "signer.key", "<value not shown>"),
    ("liquidation.max_fee_gewi", 10, "liquidation.max_fee_gewi", "<value not shown>"),
    ("ops.metrics_prot", 1, "ops.metrics_prot", "<value not shown>"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "shown"),
    BAD_FIELDS,
    ids=[f"{path}={value!r}" for path, value, _, _ in BAD_FIELDS],
)
def test_each_mistake_names_its_field_and_value(
    path: str, value: Any, field: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_edit(complete(), path, value), base_dir=BASE)
    assert raised.value.field == field
    message = str(raised.value)
    assert message.startswith(f"{field} = ")
    assert shown in message


def test_max_fee_below_the_priority_fee_names_max_fee_gwei() -> None:
    raw = _edit(complete(), "liquidation.priority_fee_gwei", "3")
    raw = _edit(raw, "liquidation.max_fee_gwei", "2.5")
    with pytest.raises(ConfigError, match=r"^liquidation\.max_fee_gwei = '2\.5': .*priority_fee"):
        parse_config(raw, base_dir=BASE)
    # Equal is allowed.
    raw = _edit(raw, "liquidation.max_fee_gwei", 3)
    assert parse_config(raw, base_dir=BASE).liquidation.max_fee_wei == 3 * 10**9


def test_a_signer_with_neither_source_says_what_to_set() -> None:
    raw = _edit(complete(), "signer", {})
    with pytest.raises(ConfigError, match="set keystore and password_file") as raised:
        parse_config(raw, base_dir=BASE)
    assert raised.value.field == "signer"


def test_load_config_reads_a_file_relative_to_itself(tmp_path: Path) -> None:
    path = tmp_path / "keeper.toml"
    path.write_text(
        "[chain]\nchain_id = 5\nrpc_url = 'http://node:8545'\n"
        f"[protocol]\ncredit_managers = ['{MANAGER_1}']\ndeploy_block = 3\n"
        "[signer]\nkeystore = 'ks.json'\npassword_file = 'pw'\n"
        f"[liquidation]\nnative_token = '{WETH}'\nmax_fee_gwei = 2\n"
    )
    config = load_config(path)
    assert config.chain.chain_id == 5
    assert config.signer.keystore == (tmp_path / "ks.json").resolve()
    assert config.liquidation.max_fee_wei == 2 * 10**9


def test_load_config_on_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such file") as raised:
        load_config(missing)
    assert raised.value.field == "--config"
    assert str(missing) in str(raised.value)


def test_load_config_on_invalid_toml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[chain]\nchain_id = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        load_config(broken)
    assert raised.value.field == "--config"
    assert str(broken) in str(raised.value)
    assert "line 2" in str(raised.value)


@pytest.mark.parametrize(
    "written",
    [MANAGER_1, MANAGER_1.lower(), "0x" + MANAGER_1[2:].upper()],
    ids=["checksummed", "lowercase", "uppercase"],
)
def test_addresses_in_one_case_or_checksummed_are_accepted_and_checksummed(written: str) -> None:
    raw = _edit(complete(), "protocol.credit_managers", [written])
    assert parse_config(raw, base_dir=BASE).protocol.credit_managers == (MANAGER_1,)
