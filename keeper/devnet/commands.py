"""The `keeper devnet` commands: a local chain with the reference protocol, the keeper beside
it, and price moves for trying liquidations by hand."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from web3 import Web3

from keeper.config import ConfigError
from keeper.devnet.anvil import AnvilError, free_port
from keeper.devnet.controls import move_price, refresh_feeds, set_price
from keeper.devnet.deploy import Deployment
from keeper.devnet.keeper_config import KeeperProcess, keeper_config_toml
from keeper.devnet.manifest import Manifest
from keeper.devnet.network import Devnet, running_devnet
from keeper.devnet.report import format_table, read_accounts
from keeper.devnet.tx import connect
from keeper.display import format_units
from keeper.state.database import Database, DatabaseError, DatabaseLockedError, lock_path

DEFAULT_METRICS_PORT = 9108
# The `--keeper` daemon's database, beside the manifest and its config: `make run` exercises the
# checkpoint and the transaction journal as production does, and the devnet removes it on exit.
KEEPER_DATABASE = "keeper.sqlite"


def run_devnet(args: argparse.Namespace) -> int:
    manifest_path: Path = args.manifest
    keeper_config_path = manifest_path.with_name("keeper.toml")
    keeper_database_path = manifest_path.with_name(KEEPER_DATABASE)
    if args.keeper_config is not None:
        # A config left by a devnet that was killed names a chain that no longer exists.
        args.keeper_config.unlink(missing_ok=True)
    if args.keeper:
        # So does a database left by a killed devnet's keeper; one still open is refused.
        remove_stale_database(keeper_database_path)
    print(f"starting devnet: anvil + reference protocol + {args.accounts} accounts ...")
    started = time.monotonic()
    with running_devnet(
        accounts=args.accounts,
        seed=args.seed,
        block_time=args.block_time,
        port=args.port,
        host=args.host,
    ) as net:
        manifest = net.manifest()
        manifest.write(manifest_path)
        written: list[Path] = [manifest_path]
        keeper: KeeperProcess | None = None
        try:
            _print_devnet(net, time.monotonic() - started, manifest_path)
            if args.keeper_config is not None:
                written += _write_container_config(net, args.keeper_config, args.advertise_url)
            if args.keeper:
                metrics_port = free_port()
                keeper_config_path.write_text(
                    keeper_config_toml(
                        manifest,
                        metrics_port=metrics_port,
                        # Relative to the config, which is beside it.
                        database_path=keeper_database_path.name,
                    )
                )
                written.append(keeper_config_path)
                written += database_files(keeper_database_path)
                keeper = KeeperProcess(keeper_config_path, net.roles.keeper)
                print(
                    f"keeper: pid {keeper.pid}, config {keeper_config_path}, "
                    f"database {keeper_database_path}"
                )
                print(
                    f"keeper: metrics http://127.0.0.1:{metrics_port}/metrics, health /healthz "
                    "and /readyz",
                    flush=True,
                )
            try:
                if args.crash is not None:
                    _sleep_watching(net, keeper, args.crash_after)
                    _crash_and_watch(net, keeper, *args.crash)
                _heartbeat_until_stopped(net, keeper, args.heartbeat)
            except KeyboardInterrupt:
                print("stopping devnet ...", flush=True)
        finally:
            if keeper is not None:
                print(f"keeper exited with {keeper.stop()}", flush=True)
            for path in written:
                path.unlink(missing_ok=True)
    print("devnet stopped")
    return 0


def database_files(path: Path) -> list[Path]:
    """The keeper database at `path` and the files kept beside it: SQLite's write-ahead log and
    shared-memory index, and the keeper's lock file."""
    return [
        path,
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-shm"),
        lock_path(path),
    ]


def remove_stale_database(path: Path) -> None:
    """Removes the keeper database at `path` and its companion files; raises `ConfigError` if
    a keeper still has it open (another devnet uses the same directory)."""
    if path.is_file():
        try:
            Database.open(path).close()
        except DatabaseLockedError:
            holder = lock_path(path).read_text(errors="replace").strip()
            raise ConfigError(
                "--manifest",
                str(path.parent),
                f"the keeper database {path.name} there is in use by another keeper"
                + (f" (pid {holder})" if holder else "")
                + ": another `keeper devnet --keeper` runs with this directory; stop it or "
                "choose another --manifest",
            ) from None
        except DatabaseError:
            pass  # unreadable: removed all the same
    for file in database_files(path):
        file.unlink(missing_ok=True)


def _write_container_config(
    net: Devnet, config_path: Path, advertise_url: str | None
) -> list[Path]:
    """A keeper config (and the devnet keeper's well-known key beside it) for a keeper in
    another container, which reaches this node at `advertise_url`; returns the files written.

    It names no database: the keeper image sets ASGARD_KEEPER_STORAGE_DATABASE_PATH to its own
    volume (the variable would win over the file anyway), and this directory is the devnet's,
    which the keeper mounts read-only and the devnet empties when it stops."""
    key_path = config_path.with_name("keeper.key")
    key_path.write_text(net.roles.keeper.private_key + "\n")
    key_path.chmod(0o600)
    config_path.write_text(
        keeper_config_toml(
            net.manifest(),
            rpc_url=advertise_url or net.node.rpc_url,
            key_file=key_path.name,
            metrics_host="0.0.0.0",
            metrics_port=DEFAULT_METRICS_PORT,
        )
    )
    print(f"keeper config for another container: {config_path} (key in {key_path})", flush=True)
    return [config_path, key_path]


def _print_devnet(net: Devnet, took_s: float, manifest_path: Path) -> None:
    print(
        f"devnet up in {took_s:.1f}s: chain id {net.deployment.chain_id}, RPC "
        f"{net.node.rpc_url}, WebSocket {net.node.ws_url}, deploy block "
        f"{net.deployment.deploy_block}, anvil pid {net.node.pid}"
    )
    for name in sorted(net.deployment.contracts):
        print(f"  {name:<24} {net.deployment.contracts[name]}")
    print()
    print(format_table(read_accounts(net.w3, net.deployment), net.deployment))
    print()
    print(f"manifest: {manifest_path}")
    print("move a price:  keeper devnet price WETH --change -30%")
    print("stop:          Ctrl-C", flush=True)


def _check_alive(net: Devnet, keeper: KeeperProcess | None) -> None:
    if not net.node.is_running():
        raise AnvilError(f"anvil (pid {net.node.pid}) exited on its own:\n{net.node.log_tail()}")
    if keeper is not None and keeper.poll() is not None:
        raise AnvilError(f"the keeper (pid {keeper.pid}) exited with {keeper.poll()}")


def _sleep_watching(net: Devnet, keeper: KeeperProcess | None, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _check_alive(net, keeper)
        time.sleep(0.2)


def _crash_and_watch(
    net: Devnet, keeper: KeeperProcess | None, symbol: str, change_bps: int
) -> None:
    """Moves a price, then reports block by block until no account is left below Hf 1."""
    if symbol not in net.deployment.tokens:
        raise ConfigError("--crash", symbol, f"the devnet has {', '.join(net.deployment.tokens)}")
    print(f"\n*** moving {symbol} by {change_bps / 100:+.2f} % ***", flush=True)
    old, new = move_price(net.w3, net.deployment, symbol, change_bps, net.roles.deployer.address)
    crash_block = net.w3.eth.block_number
    decimals = _feed_decimals(net.w3, net.deployment, symbol)
    below = [v for v in read_accounts(net.w3, net.deployment) if v.health_factor_wad < 10**18]
    print(
        f"\n*** block {crash_block}: {symbol} {format_units(old, decimals)} -> "
        f"{format_units(new, decimals)} USD; {len(below)} account(s) now below Hf 1 ***\n",
        flush=True,
    )
    deadline = time.monotonic() + 60
    while below and time.monotonic() < deadline:
        _sleep_watching(net, keeper, 0.5)
        below = [v for v in read_accounts(net.w3, net.deployment) if v.health_factor_wad < 10**18]
    block = net.w3.eth.block_number
    if below:
        print(f"*** {len(below)} account(s) still below Hf 1 after 60 s ***", flush=True)
    else:
        print(
            f"\n*** every account below Hf 1 is gone by block {block} "
            f"({block - crash_block} block(s) after the crash) ***\n",
            flush=True,
        )
    print(format_table(read_accounts(net.w3, net.deployment), net.deployment), flush=True)


def _heartbeat_until_stopped(net: Devnet, keeper: KeeperProcess | None, heartbeat_s: int) -> None:
    next_beat = time.monotonic() + heartbeat_s
    while True:
        _sleep_watching(net, keeper, 0.5)
        if time.monotonic() >= next_beat:
            refresh_feeds(net.w3, net.deployment, net.roles.deployer.address)
            next_beat = time.monotonic() + heartbeat_s


def price(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.manifest)
    symbol = args.symbol.upper()
    if symbol not in manifest.deployment.tokens:
        known = ", ".join(manifest.deployment.tokens)
        raise ConfigError("SYMBOL", args.symbol, f"unknown token: the devnet has {known}")
    w3 = connect(manifest.rpc_url)
    updater = manifest.roles.deployer.address
    feed_decimals = _feed_decimals(w3, manifest.deployment, symbol)
    if args.usd is not None:
        new = int(args.usd * 10**feed_decimals)
        if new <= 0:
            raise ConfigError("--set", str(args.usd), f"rounds to zero at {feed_decimals} decimals")
        set_price(w3, manifest.deployment, symbol, new, updater)
    else:
        old, new = move_price(w3, manifest.deployment, symbol, args.change, updater)
        print(f"{symbol}: {format_units(old, feed_decimals)} USD -> ", end="")
    print(f"{format_units(new, feed_decimals)} USD")
    views = read_accounts(w3, manifest.deployment)
    below = [v for v in views if v.health_factor_wad < 10**18]
    print(f"{len(below)} of {len(views)} accounts now below Hf 1")
    return 0


def _feed_decimals(w3: Web3, deployment: Deployment, symbol: str) -> int:
    decimals: int = deployment.contract(w3, f"PriceFeed.{symbol}").functions.decimals().call()
    return decimals


def list_accounts(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.manifest)
    w3 = connect(manifest.rpc_url)
    print(format_table(read_accounts(w3, manifest.deployment), manifest.deployment))
    return 0
