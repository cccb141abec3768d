"""The keeper's configuration: one TOML file, validated completely before anything starts.

Every error names the field, the value found and what to write instead, because the person
reading it is an operator restarting a keeper under pressure.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from eth_utils.address import is_address, is_checksum_address, to_checksum_address

GWEI = 10**9


class ConfigError(Exception):
    """A configuration problem the operator can fix; the message says how."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        super().__init__(f"{field} = {value!r}: {fix}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ChainConfig:
    chain_id: int
    rpc_url: str
    ws_url: str | None
    poll_interval_s: float
    log_chunk_blocks: int


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    credit_managers: tuple[str, ...]
    deploy_block: int


@dataclass(frozen=True, slots=True)
class SignerConfig:
    """Where the key comes from: a keystore + password file, or an environment variable."""

    keystore: Path | None
    password_file: Path | None
    private_key_env: str | None


@dataclass(frozen=True, slots=True)
class LiquidationConfig:
    native_token: str
    min_profit_usd: Decimal
    emergency: bool
    priority_fee_wei: int
    max_fee_wei: int
    inclusion_timeout_s: float
    gas_limit_margin_bps: int
    max_failures: int
    failure_cooldown_s: float
    feed_check_interval_s: float


@dataclass(frozen=True, slots=True)
class KeeperConfig:
    chain: ChainConfig
    protocol: ProtocolConfig
    signer: SignerConfig
    liquidation: LiquidationConfig


def load_config(path: Path) -> KeeperConfig:
    """Reads and validates `path`; raises `ConfigError` on the first problem."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            "--config", str(path), "no such file; pass the path of a TOML config"
        ) from None
    except OSError as error:
        raise ConfigError("--config", str(path), f"cannot be read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("--config", str(path), f"not valid TOML ({error})") from None
    return parse_config(raw, base_dir=path.parent)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path) -> KeeperConfig:
    sections = _Reader(raw, "")
    sections.only("chain", "protocol", "signer", "liquidation")
    chain = sections.section("chain")
    protocol = sections.section("protocol")
    signer = sections.section("signer")
    liquidation = sections.section("liquidation")
    chain.only("chain_id", "rpc_url", "ws_url", "poll_interval_s", "log_chunk_blocks")
    protocol.only("credit_managers", "deploy_block")
    liquidation.only(
        "native_token",
        "min_profit_usd",
        "emergency",
        "priority_fee_gwei",
        "max_fee_gwei",
        "inclusion_timeout_s",
        "gas_limit_margin_bps",
        "max_failures",
        "failure_cooldown_s",
        "feed_check_interval_s",
    )
    config = KeeperConfig(
        chain=ChainConfig(
            chain_id=chain.integer("chain_id", minimum=1),
            rpc_url=chain.required_url("rpc_url", ("http://", "https://")),
            ws_url=chain.url("ws_url", ("ws://", "wss://"), required=False),
            poll_interval_s=chain.number("poll_interval_s", default=1.0, minimum=0.05),
            log_chunk_blocks=chain.integer("log_chunk_blocks", default=5_000, minimum=1),
        ),
        protocol=ProtocolConfig(
            credit_managers=protocol.addresses("credit_managers"),
            deploy_block=protocol.integer("deploy_block", minimum=0),
        ),
        signer=_signer(signer, base_dir),
        liquidation=LiquidationConfig(
            native_token=liquidation.address("native_token"),
            min_profit_usd=liquidation.decimal("min_profit_usd", default=Decimal(0)),
            emergency=liquidation.boolean("emergency", default=False),
            priority_fee_wei=int(
                liquidation.decimal("priority_fee_gwei", default=Decimal(1)) * GWEI
            ),
            max_fee_wei=int(liquidation.decimal("max_fee_gwei", default=Decimal(500)) * GWEI),
            inclusion_timeout_s=liquidation.number(
                "inclusion_timeout_s", default=12.0, minimum=0.1
            ),
            gas_limit_margin_bps=liquidation.integer(
                "gas_limit_margin_bps", default=2_000, minimum=0
            ),
            max_failures=liquidation.integer("max_failures", default=3, minimum=1),
            failure_cooldown_s=liquidation.number("failure_cooldown_s", default=300.0, minimum=0),
            feed_check_interval_s=liquidation.number(
                "feed_check_interval_s", default=60.0, minimum=1
            ),
        ),
    )
    if config.liquidation.max_fee_wei < config.liquidation.priority_fee_wei:
        raise ConfigError(
            "liquidation.max_fee_gwei",
            str(Decimal(config.liquidation.max_fee_wei) / GWEI),
            "must be at least liquidation.priority_fee_gwei",
        )
    return config


def _signer(section: _Reader, base_dir: Path) -> SignerConfig:
    section.only("keystore", "password_file", "private_key_env")
    keystore = section.path("keystore", base_dir)
    password_file = section.path("password_file", base_dir)
    private_key_env = section.string("private_key_env", required=False)
    if private_key_env is not None and (keystore or password_file):
        raise ConfigError(
            "signer", "keystore and private_key_env", "set either keystore + password_file or "
            "private_key_env, not both"
        )  # fmt: skip
    if private_key_env is None and not (keystore and password_file):
        raise ConfigError(
            "signer",
            {k: section.raw.get(k) for k in ("keystore", "password_file")},
            "set keystore and password_file (paths), or private_key_env (the name of an "
            "environment variable holding the key)",
        )
    return SignerConfig(keystore, password_file, private_key_env)


class _Reader:
    """Typed access to one TOML table; each accessor knows its field's full name for errors."""

    def __init__(self, raw: Mapping[str, Any], prefix: str) -> None:
        self.raw = raw
        self._prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def only(self, *keys: str) -> None:
        for key in self.raw:
            if key not in keys:
                raise ConfigError(
                    self._name(key), self.raw[key], f"unknown; expected one of {keys}"
                )

    def section(self, key: str) -> _Reader:
        value = self.raw.get(key)
        if not isinstance(value, Mapping):
            raise ConfigError(self._name(key), value, f"add a [{key}] table")
        return _Reader(value, f"{self._name(key)}.")

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is None and required:
            raise ConfigError(self._name(key), None, "required; add it")
        return default

    def integer(self, key: str, *, default: int | None = None, minimum: int = 0) -> int:
        value = self._get(key, default, True)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(self._name(key), value, f"must be a whole number >= {minimum}")
        return value

    def number(self, key: str, *, default: float | None = None, minimum: float = 0) -> float:
        value = self._get(key, default, True)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < minimum
        ):
            raise ConfigError(self._name(key), value, f"must be a number >= {minimum}")
        return float(value)

    def decimal(self, key: str, *, default: Decimal) -> Decimal:
        value = self._get(key, default, True)
        try:
            parsed = Decimal(str(value)) if not isinstance(value, bool) else Decimal("nan")
        except InvalidOperation:
            parsed = Decimal("nan")
        if not parsed.is_finite() or parsed < 0:
            raise ConfigError(self._name(key), value, 'must be a number >= 0, e.g. "1.5"')
        return parsed

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._get(key, default, True)
        if not isinstance(value, bool):
            raise ConfigError(self._name(key), value, "must be true or false")
        return value

    def string(self, key: str, *, required: bool = True) -> str | None:
        value = self._get(key, None, required)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(self._name(key), value, "must be a non-empty string")
        return value

    def url(self, key: str, schemes: tuple[str, ...], *, required: bool = True) -> str | None:
        value = self.string(key, required=required)
        if value is not None and not value.startswith(schemes):
            raise ConfigError(self._name(key), value, f"must start with {' or '.join(schemes)}")
        return value

    def required_url(self, key: str, schemes: tuple[str, ...]) -> str:
        value = self.url(key, schemes)
        if value is None:
            raise ConfigError(self._name(key), None, "required; add it")
        return value

    def path(self, key: str, base_dir: Path) -> Path | None:
        value = self.string(key, required=False)
        return None if value is None else (base_dir / value).resolve()

    def address(self, key: str) -> str:
        value = self._get(key, None, True)
        return self._address(self._name(key), value)

    def addresses(self, key: str) -> tuple[str, ...]:
        value = self._get(key, None, True)
        if not isinstance(value, list) or not value:
            raise ConfigError(self._name(key), value, 'must be a list of addresses, e.g. ["0x…"]')
        return tuple(self._address(f"{self._name(key)}[{i}]", v) for i, v in enumerate(value))

    @staticmethod
    def _address(name: str, value: object) -> str:
        if not isinstance(value, str) or not value.startswith("0x") or not is_address(value):
            raise ConfigError(name, value, "must be a 0x-prefixed 20-byte hex address")
        digits = value.removeprefix("0x").removeprefix("0X")
        if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
            raise ConfigError(
                name, value, "mixed case that is not its EIP-55 checksum: a typo? (check it, or "
                "write it all lowercase)"
            )  # fmt: skip
        return to_checksum_address(value)
