"""Environment overrides and secrets kept in files: every key can be set by
ASGARD_KEEPER_<SECTION>_<KEY> (or read from the file its _FILE variant names), the environment
wins over the TOML file, typos are refused, and no error ever shows a key or an RPC URL's
credentials."""

from __future__ import annotations

import traceback
from dataclasses import replace
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest

from keeper.config import (
    CONFIG_KEYS,
    ConfigError,
    KeeperConfig,
    SignerConfig,
    env_variable,
    load_config,
    parse_config,
)
from tests.unit.test_config import BASE, MANAGER_1, MANAGER_2, WETH, complete, minimal

# A throwaway key and an API key that must never appear in an error.
KEY_HEX = "9c4b7f3e1a2d6b8c0e5f7a9d3c1b2e4f6a8d0c2e4b6f8a1c3e5d7b9f0a2c4e6d"
API_KEY = "sk_live_5f1e2d3c4b5a69788796a5b4c3d2e1f0"


def parse(environ: dict[str, str], raw: dict[str, Any] | None = None) -> KeeperConfig:
    return parse_config(complete() if raw is None else raw, base_dir=BASE, environ=environ)


def refusal(environ: dict[str, str], raw: dict[str, Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse(environ, raw)
    return raised.value


def outcome_of(environ: dict[str, str]) -> str:
    """The error parsing with `environ` gives, or "accepted"."""
    try:
        parse(environ)
    except ConfigError as error:
        return str(error)
    return "accepted"


def assert_hides(error: ConfigError, *secrets: str) -> None:
    """Neither the message nor a printed traceback (a chained exception) shows a secret."""
    shown = str(error) + "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret.lower() not in shown.lower(), shown


def test_variable_names_follow_section_and_key() -> None:
    assert env_variable("chain", "rpc_url") == "ASGARD_KEEPER_CHAIN_RPC_URL"
    assert env_variable("liquidation", "max_fee_gwei") == "ASGARD_KEEPER_LIQUIDATION_MAX_FEE_GWEI"
    assert env_variable("ops", "metrics_port") == "ASGARD_KEEPER_OPS_METRICS_PORT"
    # No section name holds an underscore, so a variable splits into section and key one way.
    assert all("_" not in section for section in CONFIG_KEYS)


# (variable, text, attribute of the config it sets, expected value): one case per conversion.
OVERRIDES: list[tuple[str, str, str, object]] = [
    ("ASGARD_KEEPER_CHAIN_CHAIN_ID", "10", "chain.chain_id", 10),
    ("ASGARD_KEEPER_CHAIN_CHAIN_ID", " 10\n", "chain.chain_id", 10),
    ("ASGARD_KEEPER_CHAIN_POLL_INTERVAL_S", "2.5", "chain.poll_interval_s", 2.5),
    ("ASGARD_KEEPER_CHAIN_POLL_INTERVAL_S", "3", "chain.poll_interval_s", 3.0),
    ("ASGARD_KEEPER_CHAIN_RPC_URL", "https://node/v2/k", "chain.rpc_url", "https://node/v2/k"),
    ("ASGARD_KEEPER_CHAIN_WS_URL", "wss://node/ws", "chain.ws_url", "wss://node/ws"),
    ("ASGARD_KEEPER_CHAIN_LOG_CHUNK_BLOCKS", "100", "chain.log_chunk_blocks", 100),
    ("ASGARD_KEEPER_PROTOCOL_DEPLOY_BLOCK", "0", "protocol.deploy_block", 0),
    (
        "ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS",
        f"{MANAGER_2.lower()}, {MANAGER_1}",
        "protocol.credit_managers",
        (MANAGER_2, MANAGER_1),
    ),
    (
        "ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS",
        f'["{MANAGER_2}", "{MANAGER_1}"]',
        "protocol.credit_managers",
        (MANAGER_2, MANAGER_1),
    ),
    ("ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS", MANAGER_2, "protocol.credit_managers", (MANAGER_2,)),
    (
        "ASGARD_KEEPER_LIQUIDATION_NATIVE_TOKEN",
        MANAGER_1.lower(),
        "liquidation.native_token",
        MANAGER_1,
    ),
    (
        "ASGARD_KEEPER_LIQUIDATION_MIN_PROFIT_USD",
        "0.5",
        "liquidation.min_profit_usd",
        Decimal("0.5"),
    ),
    ("ASGARD_KEEPER_LIQUIDATION_MAX_FEE_GWEI", "1.5", "liquidation.max_fee_wei", 1_500_000_000),
    ("ASGARD_KEEPER_LIQUIDATION_PRIORITY_FEE_GWEI", "2", "liquidation.priority_fee_wei", 2 * 10**9),
    ("ASGARD_KEEPER_LIQUIDATION_EMERGENCY", "false", "liquidation.emergency", False),
    ("ASGARD_KEEPER_LIQUIDATION_EMERGENCY", "No", "liquidation.emergency", False),
    ("ASGARD_KEEPER_LIQUIDATION_EMERGENCY", "0", "liquidation.emergency", False),
    ("ASGARD_KEEPER_LIQUIDATION_INCLUSION_TIMEOUT_S", "6", "liquidation.inclusion_timeout_s", 6.0),
    ("ASGARD_KEEPER_LIQUIDATION_GAS_LIMIT_MARGIN_BPS", "0", "liquidation.gas_limit_margin_bps", 0),
    ("ASGARD_KEEPER_LIQUIDATION_MAX_FAILURES", "9", "liquidation.max_failures", 9),
    (
        "ASGARD_KEEPER_LIQUIDATION_FAILURE_COOLDOWN_S",
        "1e3",
        "liquidation.failure_cooldown_s",
        1000.0,
    ),
    (
        "ASGARD_KEEPER_LIQUIDATION_FEED_CHECK_INTERVAL_S",
        "5",
        "liquidation.feed_check_interval_s",
        5.0,
    ),
    ("ASGARD_KEEPER_OPS_METRICS_HOST", "::", "ops.metrics_host", "::"),
    ("ASGARD_KEEPER_OPS_METRICS_PORT", "0", "ops.metrics_port", 0),
    ("ASGARD_KEEPER_OPS_METRICS_PORT", "65535", "ops.metrics_port", 65_535),
    ("ASGARD_KEEPER_OPS_HEAD_STALE_S", "1", "ops.head_stale_s", 1.0),
    (
        "ASGARD_KEEPER_OPS_MIN_NATIVE_BALANCE",
        "1.000000000000000001",
        "ops.min_native_balance_wei",
        10**18 + 1,
    ),  # exact wei
    ("ASGARD_KEEPER_OPS_MIN_NATIVE_BALANCE", "0", "ops.min_native_balance_wei", 0),
    ("ASGARD_KEEPER_OPS_SHUTDOWN_GRACE_S", "9", "ops.shutdown_grace_s", 9.0),
    ("ASGARD_KEEPER_OPS_SHUTDOWN_GRACE_S", "0", "ops.shutdown_grace_s", 0.0),
    ("ASGARD_KEEPER_OPS_LOOP_STALL_S", "0.1", "ops.loop_stall_s", 0.1),
]


@pytest.mark.parametrize(
    ("variable", "text", "attribute", "expected"),
    OVERRIDES,
    ids=[f"{variable}={text!r}" for variable, text, _, _ in OVERRIDES],
)
def test_a_variable_overrides_the_file_converted_by_the_field_type(
    variable: str, text: str, attribute: str, expected: object
) -> None:
    assert attrgetter(attribute)(parse({variable: text})) == expected


@pytest.mark.parametrize("word", ["true", "TRUE", "yes", "1"])
def test_boolean_words_for_true(word: str) -> None:
    raw = complete()
    raw["liquidation"]["emergency"] = False
    assert parse({"ASGARD_KEEPER_LIQUIDATION_EMERGENCY": word}, raw).liquidation.emergency


def test_every_key_has_a_variable_that_overrides_it(tmp_path: Path) -> None:
    """No key is left out of the environment: each one's variable is accepted."""
    (tmp_path / "url").write_text("https://node.example\n")
    values = {"rpc_url_file": str(tmp_path / "url"), "ws_url_file": str(tmp_path / "url")}
    for section, keys in CONFIG_KEYS.items():
        for key in keys:
            outcome = outcome_of({env_variable(section, key): values.get(key, "x")})
            # Refused for its value (or its companion keys), never as an unknown variable.
            assert "unknown" not in outcome, outcome


def test_the_file_is_used_where_the_environment_says_nothing() -> None:
    from_file = parse({})
    assert from_file.ops.metrics_port == 9200
    overridden = parse({"ASGARD_KEEPER_OPS_METRICS_PORT": "9300"})
    assert overridden == replace(from_file, ops=replace(from_file.ops, metrics_port=9300))


# (variable, text, the fix the error must give)
BAD_VALUES: list[tuple[str, str, str]] = [
    ("ASGARD_KEEPER_OPS_METRICS_PORT", "abc", "must be a whole number between 0 and 65535"),
    ("ASGARD_KEEPER_OPS_METRICS_PORT", "65536", "must be a whole number between 0 and 65535"),
    ("ASGARD_KEEPER_OPS_METRICS_PORT", "9108.0", "must be a whole number between 0 and 65535"),
    ("ASGARD_KEEPER_CHAIN_CHAIN_ID", "0", "must be a whole number >= 1"),
    ("ASGARD_KEEPER_CHAIN_CHAIN_ID", "", "must be a whole number >= 1"),
    ("ASGARD_KEEPER_CHAIN_POLL_INTERVAL_S", "fast", "must be a number >= 0.05"),
    ("ASGARD_KEEPER_CHAIN_POLL_INTERVAL_S", "nan", "must be a number >= 0.05"),
    ("ASGARD_KEEPER_OPS_SHUTDOWN_GRACE_S", "10", "must be a number between 0 and 9"),
    ("ASGARD_KEEPER_OPS_LOOP_STALL_S", "0", "must be a number >= 0.1"),
    ("ASGARD_KEEPER_OPS_MIN_NATIVE_BALANCE", "0.1 ETH", 'must be a number >= 0, e.g. "1.5"'),
    ("ASGARD_KEEPER_LIQUIDATION_EMERGENCY", "maybe", "must be true or false (or yes/no, 1/0)"),
    ("ASGARD_KEEPER_OPS_METRICS_HOST", "", "must be a non-empty string"),
    ("ASGARD_KEEPER_LIQUIDATION_NATIVE_TOKEN", "WETH", "must be a 0x-prefixed 20-byte hex address"),
    ("ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS", "[0x12", "must be a list of addresses"),
    ("ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS", "[]", "must be a list of addresses"),
    ("ASGARD_KEEPER_CHAIN_WS_URL", "https://node", "must start with ws:// or wss://"),
]


@pytest.mark.parametrize(
    ("variable", "text", "fix"),
    BAD_VALUES,
    ids=[f"{variable}={text!r}" for variable, text, _ in BAD_VALUES],
)
def test_a_bad_variable_is_named_with_its_value_and_the_fix(
    variable: str, text: str, fix: str
) -> None:
    error = refusal({variable: text})
    assert error.field == variable
    assert str(error).startswith(f"{variable} = {text!r}: {fix}")


def test_a_bad_address_in_a_variable_list_is_named_by_position() -> None:
    error = refusal({"ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS": f"{MANAGER_1},0x1234"})
    assert error.field == "ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS[1]"
    assert "'0x1234'" in str(error)


def test_max_fee_below_the_priority_fee_names_the_variables_that_set_them() -> None:
    error = refusal(
        {
            "ASGARD_KEEPER_LIQUIDATION_MAX_FEE_GWEI": "1",
            "ASGARD_KEEPER_LIQUIDATION_PRIORITY_FEE_GWEI": "2",
        }
    )
    assert error.field == "ASGARD_KEEPER_LIQUIDATION_MAX_FEE_GWEI"
    assert str(error).endswith("must be at least ASGARD_KEEPER_LIQUIDATION_PRIORITY_FEE_GWEI")


@pytest.mark.parametrize(
    "variable",
    [
        "ASGARD_KEEPER_OPS_METRICS_PROT",
        "ASGARD_KEEPER_CHAIN_RPC",
        "ASGARD_KEEPER_SIGNER_PRIVATE_KEY",
    ],
)
def test_an_unknown_key_in_a_known_section_is_a_typo(variable: str) -> None:
    error = refusal({variable: "0x" + KEY_HEX})
    assert error.field == variable
    section = variable.split("_")[2].lower()
    assert "unknown key" in str(error)
    for key in CONFIG_KEYS[section]:
        assert env_variable(section, key) in str(error)
    # Its value could be anything, a key under a guessed name included.
    assert_hides(error, KEY_HEX)


@pytest.mark.parametrize(
    "variable",
    [
        "ASGARD_KEEPER_KEY",  # the devnet's key variable
        "ASGARD_KEEPER_LOG_LEVEL",
        "ASGARD_KEEPERS_CHAIN_CHAIN_ID",
        "KEEPER_CHAIN_CHAIN_ID",
        "ASGARD_KEEPER_",
    ],
)
def test_variables_outside_the_known_sections_are_ignored(variable: str) -> None:
    assert parse({variable: "0x" + KEY_HEX}) == parse({})


def test_sections_missing_from_the_file_come_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "ASGARD_KEEPER_CHAIN_CHAIN_ID": "1",
        "ASGARD_KEEPER_CHAIN_RPC_URL": "https://rpc.example.org",
        "ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS": MANAGER_1,
        "ASGARD_KEEPER_PROTOCOL_DEPLOY_BLOCK": "0",
        "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV": "KEEPER_KEY",
        "ASGARD_KEEPER_LIQUIDATION_NATIVE_TOKEN": WETH,
    }
    assert parse(environ, {}) == parse({}, minimal())
    # An empty file works too.
    path = tmp_path / "keeper.toml"
    path.write_text("")
    assert load_config(path, environ=environ) == parse({}, minimal())


@pytest.mark.parametrize(
    ("dropped", "field", "fix"),
    [
        (
            "chain_id",
            "chain.chain_id",
            "required; add it to [chain] or set ASGARD_KEEPER_CHAIN_CHAIN_ID",
        ),
        (
            "rpc_url",
            "chain.rpc_url",
            "required; add rpc_url (or rpc_url_file) to [chain], or set "
            "ASGARD_KEEPER_CHAIN_RPC_URL (or ASGARD_KEEPER_CHAIN_RPC_URL_FILE)",
        ),
    ],
)
def test_a_missing_required_key_says_both_ways_to_give_it(
    dropped: str, field: str, fix: str
) -> None:
    raw = minimal()
    del raw["chain"][dropped]
    error = refusal({}, raw)
    assert error.field == field
    assert str(error) == f"{field} = None: {fix}"


def test_a_missing_signer_says_every_way_to_give_it() -> None:
    raw = minimal()
    del raw["signer"]
    error = refusal({}, raw)
    assert error.field == "signer"
    for way in ("keystore", "password_file", "private_key_env", "private_key_file"):
        assert way in str(error)
    assert "ASGARD_KEEPER_SIGNER_" in str(error)


def test_a_file_variable_reads_the_value_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "port").write_text("9400\n")
    (tmp_path / "managers").write_text(f"{MANAGER_1},{MANAGER_2}\n")
    monkeypatch.chdir(tmp_path)  # a relative path in a variable is relative to the working dir
    config = parse(
        {
            "ASGARD_KEEPER_OPS_METRICS_PORT_FILE": "port",
            "ASGARD_KEEPER_PROTOCOL_CREDIT_MANAGERS_FILE": str(tmp_path / "managers"),
        }
    )
    assert config.ops.metrics_port == 9400
    assert config.protocol.credit_managers == (MANAGER_1, MANAGER_2)


def test_a_bad_value_in_a_file_names_the_file_variable(tmp_path: Path) -> None:
    (tmp_path / "port").write_text("http\n")
    error = refusal({"ASGARD_KEEPER_OPS_METRICS_PORT_FILE": str(tmp_path / "port")})
    assert error.field == "ASGARD_KEEPER_OPS_METRICS_PORT_FILE"
    assert "between 0 and 65535" in str(error)


def test_a_variable_and_its_file_variable_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "port").write_text("9400")
    (tmp_path / "url").write_text("https://rpc.example.org")
    for variable in ("ASGARD_KEEPER_OPS_METRICS_PORT", "ASGARD_KEEPER_CHAIN_RPC_URL"):
        path = tmp_path / ("port" if "PORT" in variable else "url")
        error = refusal({variable: "9400", f"{variable}_FILE": str(path)})
        assert error.field == f"{variable}_FILE"
        assert str(error) == (
            f"{variable}_FILE = {str(path)!r}: {variable} is set too; set only one of them"
        )


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_an_unreadable_file_variable_names_the_path_and_why(tmp_path: Path, kind: str) -> None:
    path = {"missing": tmp_path / "absent", "directory": tmp_path, "binary": tmp_path / "bin"}[kind]
    (tmp_path / "bin").write_bytes(b"\xff" + KEY_HEX.encode())
    error = refusal({"ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV_FILE": str(path)})
    assert error.field == "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV_FILE"
    assert str(path) in str(error)
    reason = {
        "missing": "No such file or directory",
        "directory": "Is a directory",
        "binary": "not UTF-8",
    }[kind]
    assert reason in str(error)
    assert_hides(error, KEY_HEX)


def test_load_config_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keeper.toml"
    path.write_text(
        "[chain]\nchain_id = 5\nrpc_url = 'http://node:8545'\n"
        f"[protocol]\ncredit_managers = ['{MANAGER_1}']\ndeploy_block = 3\n"
        "[signer]\nprivate_key_env = 'K'\n"
        f"[liquidation]\nnative_token = '{WETH}'\n"
    )
    monkeypatch.setenv("ASGARD_KEEPER_CHAIN_CHAIN_ID", "7")
    assert load_config(path).chain.chain_id == 7
    assert load_config(path, environ={}).chain.chain_id == 5


# Secrets in files named by the TOML file.


def test_rpc_and_ws_urls_from_files_relative_to_the_config(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "rpc").write_text(f"https://node.example/v2/{API_KEY}\n")
    (secrets / "ws").write_text(f"  wss://node.example/ws/{API_KEY}\r\n")
    raw = complete()
    del raw["chain"]["rpc_url"], raw["chain"]["ws_url"]
    raw["chain"]["rpc_url_file"] = "../secrets/rpc"
    raw["chain"]["ws_url_file"] = str(secrets / "ws")
    chain = parse_config(raw, base_dir=tmp_path / "config").chain
    assert chain.rpc_url == f"https://node.example/v2/{API_KEY}"
    assert chain.ws_url == f"wss://node.example/ws/{API_KEY}"


def test_a_url_and_its_file_together_are_refused(tmp_path: Path) -> None:
    raw = complete()
    raw["chain"]["rpc_url_file"] = "rpc"
    error = refusal({}, raw)
    assert error.field == "chain.rpc_url_file"
    assert "chain.rpc_url is set too" in str(error)


def test_a_variable_for_the_url_replaces_the_files_url_file(tmp_path: Path) -> None:
    raw = complete()
    del raw["chain"]["rpc_url"]
    raw["chain"]["rpc_url_file"] = "absent"
    config = parse({"ASGARD_KEEPER_CHAIN_RPC_URL": "https://other.example"}, raw)
    assert config.chain.rpc_url == "https://other.example"
    # And the other way round: a variable naming the file replaces the file's URL.
    (tmp_path / "rpc").write_text("https://from.file")
    config = parse({"ASGARD_KEEPER_CHAIN_RPC_URL_FILE": str(tmp_path / "rpc")})
    assert config.chain.rpc_url == "https://from.file"


def test_an_unreadable_url_file_names_field_path_and_reason(tmp_path: Path) -> None:
    raw = complete()
    del raw["chain"]["rpc_url"]
    raw["chain"]["rpc_url_file"] = "absent"
    with pytest.raises(ConfigError) as raised:
        parse_config(raw, base_dir=tmp_path)
    assert raised.value.field == "chain.rpc_url_file"
    assert str(raised.value) == (
        f"chain.rpc_url_file = {str(tmp_path / 'absent')!r}: cannot be read (No such file or "
        "directory); check the path and that the keeper may read it"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"ftp://node.example/v2/{API_KEY}", "'ftp://node.example/...'"),
        (f"node.example/v2/{API_KEY}", "'node.example/...'"),
        (f"https://user:{API_KEY}@node.example", "'https://node.example'"),
        (f"wss://node.example:8546/?key={API_KEY}", "'wss://node.example:8546/...'"),
        (f"http://[::1/{API_KEY}", "<value not shown>"),  # does not even parse
        (f"http://node.example:99999/{API_KEY}", "<value not shown>"),
    ],
)
def test_a_bad_url_is_shown_without_its_credentials(tmp_path: Path, url: str, shown: str) -> None:
    """Whether written in the file, in a variable or in a secret file."""
    wrong = "rpc_url" if "wss" in url else "ws_url"
    schemes = "ws:// or wss://" if wrong == "ws_url" else "http:// or https://"
    (tmp_path / "url").write_text(url)
    raw = complete()
    raw["chain"][wrong] = url
    errors = [
        refusal({}, raw),
        refusal({env_variable("chain", wrong): url}),
        refusal({env_variable("chain", wrong) + "_FILE": str(tmp_path / "url")}),
    ]
    for error in errors:
        assert str(error).startswith(f"{error.field} = {shown}: must start with {schemes}")
        assert_hides(error, API_KEY)


# The signer's key in a file.


def test_the_signer_key_file_resolves_against_the_config() -> None:
    raw = complete()
    raw["signer"] = {"private_key_file": "secrets/key"}
    signer = parse({}, raw).signer
    assert signer == SignerConfig(None, None, None, BASE / "secrets/key")


@pytest.mark.parametrize(
    "ways",
    [
        {"private_key_file": "k", "private_key_env": "K"},
        {"private_key_file": "k", "keystore": "ks", "password_file": "pw"},
        {"private_key_file": "k", "password_file": "pw"},
    ],
)
def test_the_signer_takes_exactly_one_way(ways: dict[str, str]) -> None:
    raw = complete()
    raw["signer"] = ways
    error = refusal({}, raw)
    assert error.field == "signer"
    assert "set exactly one of keystore + password_file, private_key_env or private_key_file" in (
        str(error)
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV", "KEEPER_KEY"),
        ("ASGARD_KEEPER_SIGNER_PRIVATE_KEY_FILE", "k"),
    ],
)
def test_a_signer_variable_replaces_the_files_other_way(variable: str, value: str) -> None:
    signer = parse({variable: value}).signer  # complete() has a keystore and password file
    if variable.endswith("_ENV"):
        assert signer == SignerConfig(None, None, value, None)
    else:
        assert signer == SignerConfig(None, None, None, Path(value).resolve())


def test_two_signer_ways_in_the_environment_are_refused() -> None:
    error = refusal(
        {
            "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV": "KEEPER_KEY",
            "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_FILE": "k",
        }
    )
    assert error.field == "signer"
    assert "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV" in str(error)
    assert "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_FILE" in str(error)


def test_a_password_file_variable_keeps_the_files_keystore() -> None:
    signer = parse({"ASGARD_KEEPER_SIGNER_PASSWORD_FILE": "/run/other"}).signer
    assert signer == SignerConfig(BASE / "keys/keeper.json", Path("/run/other"), None, None)


@pytest.mark.parametrize(
    "value",
    ["0x" + KEY_HEX, KEY_HEX, "ab" * 32, f"{KEY_HEX} ", "KEEPER-KEY", "1KEY"],
    ids=["0x-key", "bare-key", "letter-first-key", "key-space", "dash", "digit-first"],
)
def test_private_key_env_must_be_a_name_and_a_key_there_is_not_shown(value: str) -> None:
    raw = complete()
    raw["signer"] = {"private_key_env": value}
    errors = [refusal({}, raw), refusal({"ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV": value})]
    for error in errors:
        assert error.field in {"signer.private_key_env", "ASGARD_KEEPER_SIGNER_PRIVATE_KEY_ENV"}
        assert "<value not shown>" in str(error)
        assert "not the key itself" in str(error)
        assert_hides(error, KEY_HEX, "ab" * 16)


def test_a_key_under_a_misspelt_toml_key_is_not_shown() -> None:
    raw = complete()
    raw["signer"]["private_key"] = "0x" + KEY_HEX
    assert_hides(refusal({}, raw), KEY_HEX)
    raw = complete()
    raw["private_key"] = KEY_HEX  # above every table
    assert_hides(refusal({}, raw), KEY_HEX)


def test_a_url_of_the_wrong_type_is_not_shown() -> None:
    raw = complete()
    raw["chain"]["rpc_url"] = [f"https://node.example/v2/{API_KEY}"]
    error = refusal({}, raw)
    assert str(error) == "chain.rpc_url = <value not shown>: must be a non-empty string"


def test_a_path_that_cannot_be_resolved_is_refused_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    raw = complete()
    raw["signer"] = {"private_key_file": "loop/key"}
    with pytest.raises(ConfigError, match="cannot be resolved") as raised:
        parse_config(raw, base_dir=tmp_path)
    assert raised.value.field == "signer.private_key_file"
