"""The keeper's configuration: one TOML file plus environment overrides, validated completely
before anything starts.

Every key of every section can also be given as an environment variable,
`ASGARD_KEEPER_<SECTION>_<KEY>` (which wins over the file), or read from the file named by
`ASGARD_KEEPER_<SECTION>_<KEY>_FILE`, the way container platforms mount secrets. Every error names
the field (or variable), the value found and what to write instead, because the person reading
it is an operator restarting a keeper under pressure; secrets (a private key, the API key in an
RPC URL) are never part of an error.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from eth_utils.address import is_address, is_checksum_address, to_checksum_address

from keeper.chain.rpc import redact_url

GWEI = 10**9
DEFAULT_BATCH_SIZE = 25
WEI_PER_NATIVE = 10**18
ENV_PREFIX = "ASGARD_KEEPER_"

# Every key each [section] accepts; the environment variables are named after them.
CONFIG_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chain": (
            "chain_id",
            "rpc_url",
            "rpc_url_file",
            "ws_url",
            "ws_url_file",
            "poll_interval_s",
            "log_chunk_blocks",
            "backup_rpc_urls",
            "head_stall_s",
            "max_reorg_depth",
        ),
        "protocol": ("credit_managers", "deploy_block"),
        "signer": ("keystore", "password_file", "private_key_env", "private_key_file"),
        "liquidation": (
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
            "batch_liquidator",
            "batch_size",
        ),
        "ops": (
            "metrics_host",
            "metrics_port",
            "head_stale_s",
            "min_native_balance",
            "shutdown_grace_s",
            "loop_stall_s",
        ),
        "storage": ("database_path",),
    }
)

# Keys that are other ways of giving the same thing: an environment variable for one of them
# replaces those the file wrote, so an override never collides with the file.
_REPLACES: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType(
    {
        ("chain", "rpc_url"): ("rpc_url_file",),
        ("chain", "rpc_url_file"): ("rpc_url",),
        ("chain", "ws_url"): ("ws_url_file",),
        ("chain", "ws_url_file"): ("ws_url",),
        ("signer", "keystore"): ("private_key_env", "private_key_file"),
        ("signer", "password_file"): ("private_key_env", "private_key_file"),
        ("signer", "private_key_env"): ("keystore", "password_file", "private_key_file"),
        ("signer", "private_key_file"): ("keystore", "password_file", "private_key_env"),
    }
)

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PRIVATE_KEY_LIKE = re.compile(r"(0[xX])?[0-9a-fA-F]{64}")
_NO_ENVIRONMENT: Mapping[str, str] = MappingProxyType({})
_TRUE_WORDS = ("true", "yes", "1")
_FALSE_WORDS = ("false", "no", "0")

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem the operator can fix; the message says how."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        super().__init__(f"{field} = {value!r}: {fix}")
        self.field = field


class _NotShown:
    """Stands in an error for a value that may be a secret."""

    def __repr__(self) -> str:
        return "<value not shown>"


_NOT_SHOWN = _NotShown()


@dataclass(frozen=True, slots=True)
class ChainConfig:
    chain_id: int
    rpc_url: str
    ws_url: str | None
    poll_interval_s: float
    log_chunk_blocks: int
    # Tried in order when rpc_url fails, is rate limited or stops moving; rpc_url is preferred
    # again as soon as it answers.
    backup_rpc_urls: tuple[str, ...] = ()
    head_stall_s: float = 30.0  # an endpoint whose head has not moved this long is set aside
    max_reorg_depth: int = 64  # blocks of undo kept; a deeper reorg re-reads the whole history


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    credit_managers: tuple[str, ...]
    deploy_block: int


@dataclass(frozen=True, slots=True)
class SignerConfig:
    """Where the key comes from: exactly one of a keystore + password file, an environment
    variable, or a file holding the hex key."""

    keystore: Path | None
    password_file: Path | None
    private_key_env: str | None
    private_key_file: Path | None


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
    # A BatchLiquidator owned by the signer: many accounts per transaction. None: one
    # transaction per account.
    batch_liquidator: str | None = None
    # At most this many accounts per batch transaction: its gas (some 141,000 per account) must
    # stay well under the block gas limit, or no block can include it.
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class OpsConfig:
    """Running the daemon: the metrics and health endpoint and the limits behind /healthz,
    /readyz and shutdown. The defaults here are the defaults of the optional [ops] table."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # 0: serve no metrics or health endpoint
    head_stale_s: float = 60.0  # not ready when no new head arrived for this long
    min_native_balance_wei: int = 10**17  # not ready when the signer's gas balance is below
    shutdown_grace_s: float = 5.0  # on SIGTERM, in-flight transactions are followed this long
    loop_stall_s: float = 5.0  # not healthy when the event loop lags more than this


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the keeper keeps what must survive a crash: its checkpoint and transaction journal.
    Without a database nothing survives: every start re-reads history, and a transaction sent
    just before a crash is only found again through the node's pending state."""

    database_path: Path | None = None


@dataclass(frozen=True, slots=True)
class KeeperConfig:
    chain: ChainConfig
    protocol: ProtocolConfig
    signer: SignerConfig
    liquidation: LiquidationConfig
    ops: OpsConfig
    storage: StorageConfig = StorageConfig()


def env_variable(section: str, key: str) -> str:
    """The environment variable that overrides `key` of `[section]`."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def load_config(path: Path, *, environ: Mapping[str, str] = os.environ) -> KeeperConfig:
    """Reads and validates `path` with `environ`'s overrides; raises `ConfigError` on the first
    problem."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            "--config", str(path), "no such file; pass the path of a TOML config"
        ) from None
    except OSError as error:
        raise ConfigError("--config", str(path), f"cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", str(path), "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("--config", str(path), f"not valid TOML ({error})") from None
    return parse_config(raw, base_dir=path.parent, environ=environ)


def parse_config(
    raw: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] = _NO_ENVIRONMENT
) -> KeeperConfig:
    """Validates a parsed TOML document overridden by `environ`; relative paths in the document
    resolve against `base_dir`, those in the environment against the working directory."""
    sections = _settings(raw, base_dir, environ)
    chain = _Section("chain", sections["chain"])
    protocol = _Section("protocol", sections["protocol"])
    liquidation = _Section("liquidation", sections["liquidation"])
    ops = _Section("ops", sections["ops"])
    storage = _Section("storage", sections["storage"])
    ops_defaults = OpsConfig()
    config = KeeperConfig(
        chain=ChainConfig(
            chain_id=chain.get("chain_id", _integer(minimum=1)),
            rpc_url=_rpc_url(chain),
            ws_url=_secret_url(chain, "ws_url", ("ws://", "wss://")),
            poll_interval_s=chain.get("poll_interval_s", _number(minimum=0.05), default=1.0),
            log_chunk_blocks=chain.get("log_chunk_blocks", _integer(minimum=1), default=5_000),
            backup_rpc_urls=chain.get("backup_rpc_urls", _backup_urls, default=()),
            head_stall_s=chain.get("head_stall_s", _number(minimum=1), default=30.0),
            max_reorg_depth=chain.get(
                "max_reorg_depth", _integer(minimum=1, maximum=10_000), default=64
            ),
        ),
        protocol=ProtocolConfig(
            credit_managers=protocol.get("credit_managers", _addresses),
            deploy_block=protocol.get("deploy_block", _integer(minimum=0)),
        ),
        signer=_signer(_Section("signer", sections["signer"])),
        liquidation=LiquidationConfig(
            native_token=liquidation.get("native_token", _address),
            min_profit_usd=liquidation.get("min_profit_usd", _decimal, default=Decimal(0)),
            emergency=liquidation.get("emergency", _boolean, default=False),
            priority_fee_wei=int(
                liquidation.get("priority_fee_gwei", _decimal, default=Decimal(1)) * GWEI
            ),
            max_fee_wei=int(liquidation.get("max_fee_gwei", _decimal, default=Decimal(500)) * GWEI),
            inclusion_timeout_s=liquidation.get(
                "inclusion_timeout_s", _number(minimum=0.1), default=12.0
            ),
            gas_limit_margin_bps=liquidation.get(
                "gas_limit_margin_bps", _integer(minimum=0), default=2_000
            ),
            max_failures=liquidation.get("max_failures", _integer(minimum=1), default=3),
            failure_cooldown_s=liquidation.get(
                "failure_cooldown_s", _number(minimum=0), default=300.0
            ),
            feed_check_interval_s=liquidation.get(
                "feed_check_interval_s", _number(minimum=1), default=60.0
            ),
            batch_liquidator=liquidation.optional("batch_liquidator", _address),
            batch_size=liquidation.get(
                "batch_size", _integer(minimum=1, maximum=1_000), default=DEFAULT_BATCH_SIZE
            ),
        ),
        ops=OpsConfig(
            metrics_host=ops.get("metrics_host", _string, default=ops_defaults.metrics_host),
            metrics_port=ops.get(
                "metrics_port",
                _integer(minimum=0, maximum=65_535),
                default=ops_defaults.metrics_port,
            ),
            head_stale_s=ops.get(
                "head_stale_s", _number(minimum=1), default=ops_defaults.head_stale_s
            ),
            min_native_balance_wei=int(
                ops.get(
                    "min_native_balance",
                    _decimal,
                    default=Decimal(ops_defaults.min_native_balance_wei) / WEI_PER_NATIVE,
                )
                * WEI_PER_NATIVE
            ),
            shutdown_grace_s=ops.get(
                "shutdown_grace_s",
                _number(minimum=0, maximum=9),
                default=ops_defaults.shutdown_grace_s,
            ),
            loop_stall_s=ops.get(
                "loop_stall_s", _number(minimum=0.1), default=ops_defaults.loop_stall_s
            ),
        ),
        storage=StorageConfig(database_path=storage.optional("database_path", _path)),
    )
    if config.liquidation.max_fee_wei < config.liquidation.priority_fee_wei:
        raise ConfigError(
            liquidation.name_of("max_fee_gwei"),
            str(Decimal(config.liquidation.max_fee_wei) / GWEI),
            f"must be at least {liquidation.name_of('priority_fee_gwei')}",
        )
    return config


@dataclass(frozen=True, slots=True)
class _Setting:
    """One value as given: a TOML value, or the text of an environment variable (or of the file
    one names), which is converted by the field's type."""

    value: Any
    name: str  # what errors call it: "chain.rpc_url" or "ASGARD_KEEPER_CHAIN_RPC_URL"
    from_environment: bool  # then `value` is text
    base_dir: Path  # where a relative path in it resolves


def _settings(
    raw: Mapping[str, Any], base_dir: Path, environ: Mapping[str, str]
) -> dict[str, dict[str, _Setting]]:
    """Every section's settings: the file's, each replaced by its environment variable if set."""
    for key in raw:
        if key not in CONFIG_KEYS:
            raise ConfigError(
                key,
                _NOT_SHOWN,
                f"unknown; the file holds the tables {', '.join(f'[{s}]' for s in CONFIG_KEYS)} "
                "and every key belongs under one of them",
            )
    sections: dict[str, dict[str, _Setting]] = {}
    for section, keys in CONFIG_KEYS.items():
        table = raw.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigError(section, table, f"must be a [{section}] table")
        for key in table:
            if key not in keys:
                # A misspelt key may hold a secret (a mistyped rpc_url): its value is not shown.
                raise ConfigError(
                    f"{section}.{key}", _NOT_SHOWN, f"unknown; expected one of {keys}"
                )
        sections[section] = {
            key: _Setting(value, f"{section}.{key}", False, base_dir)
            for key, value in table.items()
        }
    for section, key, setting in _environment_settings(environ):
        settings = sections[section]
        for replaced in _REPLACES.get((section, key), ()):
            if replaced in settings and not settings[replaced].from_environment:
                del settings[replaced]
        settings[key] = setting
    return sections


def _environment_settings(environ: Mapping[str, str]) -> Iterator[tuple[str, str, _Setting]]:
    """(section, key, setting) for every ASGARD_KEEPER_<SECTION>_<KEY>[_FILE] variable; those
    whose <SECTION> is not a section (ASGARD_KEEPER_KEY, say) belong to something else."""
    for variable, text in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX):
            continue
        section_part, _, key_part = variable.removeprefix(ENV_PREFIX).partition("_")
        section, key = section_part.lower(), key_part.lower()
        if section not in CONFIG_KEYS:
            continue
        keys = CONFIG_KEYS[section]
        if key in keys:
            yield section, key, _Setting(text.strip(), variable, True, Path())
        elif key.endswith("_file") and key.removesuffix("_file") in keys:
            key = key.removesuffix("_file")
            direct = env_variable(section, key)
            path = Path(text.strip())
            if direct in environ:
                raise ConfigError(variable, str(path), f"{direct} is set too; set only one of them")
            content = _read_file(variable, path)
            yield section, key, _Setting(content, variable, True, Path())
        else:
            names = ", ".join(env_variable(section, k) for k in keys)
            raise ConfigError(
                variable,
                _NOT_SHOWN,
                f"unknown key {key_part!r} in [{section}]; expected one of {names} "
                "(or one of them + _FILE)",
            )


def _read_file(field: str, path: Path) -> str:
    """A secret file's content without surrounding whitespace; errors show the path, never the
    content."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(field, str(path), "the file is not UTF-8 text") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            field,
            str(path),
            f"cannot be read ({reason}); check the path and that the keeper may read it",
        ) from None


class _Section:
    """The settings of one section, read with a converter per field type."""

    def __init__(self, name: str, settings: Mapping[str, _Setting]) -> None:
        self._name = name
        self._settings = settings

    def setting(self, key: str) -> _Setting | None:
        return self._settings.get(key)

    def name_of(self, key: str) -> str:
        """What errors call `key`: the variable that set it, or its name in the file."""
        setting = self._settings.get(key)
        return f"{self._name}.{key}" if setting is None else setting.name

    def get(self, key: str, convert: Callable[[_Setting], T], *, default: T | None = None) -> T:
        """The converted value of `key`, its `default` when absent, or (no default) an error."""
        setting = self._settings.get(key)
        if setting is not None:
            return convert(setting)
        if default is None:
            raise ConfigError(
                f"{self._name}.{key}",
                None,
                f"required; add it to [{self._name}] or set {env_variable(self._name, key)}",
            )
        return default

    def optional(self, key: str, convert: Callable[[_Setting], T]) -> T | None:
        setting = self._settings.get(key)
        return None if setting is None else convert(setting)


def _secret_url(section: _Section, key: str, schemes: tuple[str, ...]) -> str | None:
    """`key`, or the content of the file named by `key`_file (one of them at most)."""
    direct = section.setting(key)
    in_file = section.setting(f"{key}_file")
    if direct is not None and in_file is not None:
        raise ConfigError(
            in_file.name, in_file.value, f"{direct.name} is set too; set only one of them"
        )
    if in_file is not None:
        content = _read_file(in_file.name, _path(in_file))
        direct = _Setting(content, in_file.name, False, in_file.base_dir)
    return None if direct is None else _url(direct, schemes)


def _rpc_url(chain: _Section) -> str:
    url = _secret_url(chain, "rpc_url", ("http://", "https://"))
    if url is None:
        raise ConfigError(
            "chain.rpc_url",
            None,
            "required; add rpc_url (or rpc_url_file) to [chain], or set "
            f"{env_variable('chain', 'rpc_url')} (or {env_variable('chain', 'rpc_url_file')})",
        )
    return url


def _backup_urls(setting: _Setting) -> tuple[str, ...]:
    """HTTP(S) URLs: a TOML list, or comma-separated in an environment variable; each may carry
    an API key, so errors show only its scheme, host and port."""
    value = setting.value
    if setting.from_environment:
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ConfigError(
            setting.name, _NOT_SHOWN, 'must be a list of URLs, e.g. ["https://rpc-2.example.org"]'
        )
    return tuple(
        _url(
            _Setting(url, f"{setting.name}[{i}]", False, setting.base_dir), ("http://", "https://")
        )
        for i, url in enumerate(value)
    )


def _signer(section: _Section) -> SignerConfig:
    keystore = section.optional("keystore", _path)
    password_file = section.optional("password_file", _path)
    private_key_env = section.optional("private_key_env", _variable_name)
    private_key_file = section.optional("private_key_file", _path)
    given = [
        section.name_of(key)
        for key in ("keystore", "password_file", "private_key_env", "private_key_file")
        if section.setting(key) is not None
    ]
    ways = (keystore or password_file, private_key_env, private_key_file)
    if sum(way is not None for way in ways) > 1:
        raise ConfigError(
            "signer",
            ", ".join(given),
            "set exactly one of keystore + password_file, private_key_env or private_key_file",
        )
    if (keystore is None) != (password_file is None) or not given:
        raise ConfigError(
            "signer",
            {"keystore": _shown_path(keystore), "password_file": _shown_path(password_file)},
            "set keystore and password_file (paths), or private_key_env (the name of an "
            "environment variable holding the key), or private_key_file (the path of a file "
            f"holding the key), in [signer] or as {env_variable('signer', '<KEY>')}",
        )
    return SignerConfig(keystore, password_file, private_key_env, private_key_file)


def _shown_path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _integer(*, minimum: int, maximum: int | None = None) -> Callable[[_Setting], int]:
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"

    def convert(setting: _Setting) -> int:
        value = setting.value
        if setting.from_environment:
            with contextlib.suppress(ValueError):
                value = int(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            raise ConfigError(setting.name, setting.value, f"must be a whole number {bounds}")
        return value

    return convert


def _number(*, minimum: float, maximum: float | None = None) -> Callable[[_Setting], float]:
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"

    def convert(setting: _Setting) -> float:
        value = setting.value
        if setting.from_environment:
            with contextlib.suppress(ValueError):
                value = float(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            raise ConfigError(setting.name, setting.value, f"must be a number {bounds}")
        return float(value)

    return convert


def _decimal(setting: _Setting) -> Decimal:
    value = setting.value
    try:
        parsed = Decimal(str(value)) if not isinstance(value, bool) else Decimal("nan")
    except InvalidOperation:
        parsed = Decimal("nan")
    if not parsed.is_finite() or parsed < 0:
        raise ConfigError(setting.name, value, 'must be a number >= 0, e.g. "1.5"')
    return parsed


def _boolean(setting: _Setting) -> bool:
    value = setting.value
    if setting.from_environment:
        word = value.lower()
        if word in _TRUE_WORDS + _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise ConfigError(setting.name, value, "must be true or false (or yes/no, 1/0)")
    if not isinstance(value, bool):
        raise ConfigError(setting.name, value, "must be true or false")
    return value


def _string(setting: _Setting) -> str:
    value = setting.value
    if not isinstance(value, str) or not value:
        raise ConfigError(setting.name, value, "must be a non-empty string")
    return value


def _url(setting: _Setting, schemes: tuple[str, ...]) -> str:
    """A URL, shown in errors only up to its host: the rest may carry an API key."""
    value = setting.value
    if not isinstance(value, str) or not value:
        shown = value if isinstance(value, int | float) or value == "" else _NOT_SHOWN
        raise ConfigError(setting.name, shown, "must be a non-empty string")
    if not value.startswith(schemes):
        raise ConfigError(
            setting.name, _redacted_url(value), f"must start with {' or '.join(schemes)}"
        )
    return value


def _redacted_url(value: str) -> object:
    """Scheme, host and port of `value` (also of a URL written without its scheme); a value that
    does not parse is not shown at all."""
    try:
        if "://" in value:
            return redact_url(value)
        return redact_url(f"//{value}").removeprefix("://")
    except ValueError:
        return _NOT_SHOWN


def _path(setting: _Setting) -> Path:
    try:
        return (setting.base_dir / _string(setting)).resolve()
    except (OSError, RuntimeError) as error:  # Python 3.11 reports a symlink loop as RuntimeError
        raise ConfigError(setting.name, setting.value, f"cannot be resolved ({error})") from None


def _variable_name(setting: _Setting) -> str:
    """The name of the variable holding the key; a key written here instead is not shown."""
    value = _string(setting)
    if not _VARIABLE_NAME.fullmatch(value) or _PRIVATE_KEY_LIKE.fullmatch(value):
        raise ConfigError(
            setting.name,
            _NOT_SHOWN,
            "must be the name of an environment variable (letters, digits and _) that holds "
            "the key, not the key itself",
        )
    return value


def _address(setting: _Setting) -> str:
    return checked_address(setting.name, setting.value)


def _addresses(setting: _Setting) -> tuple[str, ...]:
    value = setting.value
    if setting.from_environment:
        value = _address_list(value)
    if not isinstance(value, list) or not value:
        raise ConfigError(
            setting.name, setting.value, 'must be a list of addresses, e.g. ["0x…", "0x…"]'
        )
    return tuple(checked_address(f"{setting.name}[{i}]", v) for i, v in enumerate(value))


def _address_list(text: str) -> object:
    """Addresses from an environment variable: comma-separated, or a TOML list."""
    if not text.startswith("["):
        return [part.strip() for part in text.split(",")]
    try:
        return tomllib.loads(f"list = {text}")["list"]
    except tomllib.TOMLDecodeError:
        return text


def checked_address(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.startswith("0x") or not is_address(value):
        raise ConfigError(name, value, "must be a 0x-prefixed 20-byte hex address")
    digits = value.removeprefix("0x")
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise ConfigError(
            name, value, "mixed case that is not its EIP-55 checksum: a typo? (check it, or "
            "write it all lowercase)"
        )  # fmt: skip
    return to_checksum_address(value)
