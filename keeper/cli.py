"""The `keeper` command line.

Bad input ends with one line naming what was wrong and how to fix it, exit code 2, and no
traceback; a failure of the world (anvil missing, node unreachable) exits 1 the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

import structlog
from requests.exceptions import ConnectionError as HTTPConnectionError
from web3 import Web3

from keeper.chain.rpc import RpcTransportError
from keeper.config import ConfigError, KeeperConfig, load_config
from keeper.daemon import Keeper, StartupError
from keeper.devnet.anvil import AnvilError
from keeper.devnet.controls import move_price, refresh_feeds, set_price
from keeper.devnet.deploy import Deployment
from keeper.devnet.keeper_config import KeeperProcess, keeper_config_toml
from keeper.devnet.manifest import Manifest, ManifestError
from keeper.devnet.network import Devnet, running_devnet
from keeper.devnet.report import format_table, format_units, read_accounts
from keeper.devnet.tx import TransactionRevertedError, connect
from keeper.execution.signer import Signer, SignerError, signer_from_env, signer_from_keystore
from keeper.ops.logging import configure_logging

DEFAULT_MANIFEST = Path(".devnet/manifest.json")
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Input the user can fix; the message says how."""


def _percent_bps(text: str) -> int:
    """'-30', '-30%' or '+12.5%' as basis points."""
    match = re.fullmatch(r"\s*([+-]?\d+(?:\.\d{1,2})?)\s*%?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage; write e.g. -30 or -30%")
    bps = int(Decimal(match.group(1)) * 100)
    if bps <= -10_000:
        raise argparse.ArgumentTypeError(f"{text} would make the price zero or negative")
    return bps


def _positive_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write e.g. 2500.50") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return int(text)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _crash(text: str) -> tuple[str, int]:
    """'WETH:-30%' as ("WETH", -3000)."""
    symbol, _, change = text.partition(":")
    if not symbol or not change:
        raise argparse.ArgumentTypeError(f"{text!r}: write SYMBOL:CHANGE, e.g. WETH:-30%")
    return symbol.upper(), _percent_bps(change)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keeper",
        description=(
            "Asgard Keeper: watches Asgard Credit Accounts and liquidates those whose "
            "health factor falls below 1."
        ),
        epilog=(
            "examples:\n"
            "  keeper run --config config/devnet.toml   the keeper daemon against a chain\n"
            "  keeper devnet --accounts 20          local chain + protocol + 20 seeded accounts\n"
            "  keeper devnet --keeper --crash WETH:-30%%   ... plus the keeper and a price crash\n"
            "  keeper devnet price WETH --change -30%   crash WETH by 30 % on the running devnet\n"
            "  keeper devnet accounts               list the devnet's accounts by health factor\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the keeper daemon: follow the chain and liquidate accounts below Hf 1",
        description=(
            "Checks the chain id and that every configured contract exists, back-fills every "
            "Credit Account from the deploy block's logs, then follows new blocks (WebSocket "
            "newHeads when chain.ws_url is set, HTTP polling otherwise) and liquidates accounts "
            "whose health factor falls below 1. Runs until SIGINT/SIGTERM."
        ),
        epilog=(
            "the signer's key comes from [signer] keystore + password_file, or from the\n"
            "environment variable named by [signer] private_key_env; it is never logged.\n"
            "exit codes: 0 stopped by a signal, 1 the chain failed, 2 bad configuration.\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, required=True, help="the keeper's TOML config file")
    run.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="json lines, or readable console output (default: console on a terminal)",
    )
    run.set_defaults(handler=_run_keeper)

    devnet = commands.add_parser(
        "devnet",
        help="run a local chain with the reference protocol (and move its prices)",
        description=(
            "Starts anvil on a free port with its own temp dir, deploys the reference protocol "
            "(tokens, Chainlink-style feeds, oracle, DEX adapter, one pool + CreditManager per "
            "market, Multicall3), seeds leveraged Credit Accounts with a spread of health "
            "factors, writes a manifest, prints the accounts, and runs until Ctrl-C. "
            "Feeds are re-published every --heartbeat seconds so they never go stale."
        ),
        epilog=(
            "while it runs, from another terminal:\n"
            "  keeper devnet price WETH --change -30%   move a price by a percentage\n"
            "  keeper devnet price WBTC --set 45000     set a price in USD\n"
            "  keeper devnet accounts                   list accounts by health factor\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devnet.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help=f"where the manifest is written / read (default: {DEFAULT_MANIFEST})",
    )
    devnet.add_argument(
        "--accounts", type=_non_negative_int, default=20, help="accounts to seed (default: 20)"
    )
    devnet.add_argument(
        "--seed", type=_non_negative_int, default=1, help="seed of the account spread (default: 1)"
    )
    devnet.add_argument(
        "--block-time",
        type=_positive_int,
        default=1,
        help="seconds between blocks once seeded (default: 1)",
    )
    devnet.add_argument(
        "--port", type=_positive_int, default=None, help="RPC port (default: a free one)"
    )
    devnet.add_argument(
        "--heartbeat",
        type=_positive_int,
        default=600,
        help="seconds between feed re-publications (default: 600)",
    )
    devnet.add_argument(
        "--keeper",
        action="store_true",
        help="also run the keeper daemon (as its own process) against the devnet",
    )
    devnet.add_argument(
        "--crash",
        type=_crash,
        default=None,
        metavar="SYMBOL:CHANGE",
        help="move a price once the keeper is following, e.g. WETH:-30%%",
    )
    devnet.add_argument(
        "--crash-after",
        type=_positive_int,
        default=8,
        metavar="SECONDS",
        help="seconds after start-up before --crash (default: 8)",
    )
    devnet.set_defaults(handler=_run_devnet)
    actions = devnet.add_subparsers(dest="devnet_action", metavar="ACTION")
    price = actions.add_parser(
        "price",
        help="move a token's price on the running devnet",
        description="Publishes a new answer on the token's feed of the devnet in --manifest.",
    )
    price.add_argument("symbol", help="token symbol, e.g. WETH")
    how = price.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--change", type=_percent_bps, help="relative move, e.g. -30%% (a crash) or +10%%"
    )
    how.add_argument("--set", type=_positive_decimal, dest="usd", help="new price in USD")
    price.add_argument("--manifest", type=Path, default=argparse.SUPPRESS)
    price.set_defaults(handler=_move_price)
    accounts = actions.add_parser(
        "accounts", help="list the running devnet's accounts by health factor"
    )
    accounts.add_argument("--manifest", type=Path, default=argparse.SUPPRESS)
    accounts.set_defaults(handler=_list_accounts)
    return parser


def _run_devnet(args: argparse.Namespace) -> int:
    manifest_path: Path = args.manifest
    keeper_config_path = manifest_path.with_name("keeper.toml")
    print(f"starting devnet: anvil + reference protocol + {args.accounts} accounts ...")
    started = time.monotonic()
    with running_devnet(
        accounts=args.accounts, seed=args.seed, block_time=args.block_time, port=args.port
    ) as net:
        manifest = net.manifest()
        manifest.write(manifest_path)
        keeper: KeeperProcess | None = None
        try:
            _print_devnet(net, time.monotonic() - started, manifest_path)
            if args.keeper:
                keeper_config_path.write_text(keeper_config_toml(manifest))
                keeper = KeeperProcess(keeper_config_path, net.roles.keeper)
                print(f"keeper: pid {keeper.pid}, config {keeper_config_path}", flush=True)
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
            keeper_config_path.unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)
    print("devnet stopped")
    return 0


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
        raise UsageError(f"--crash {symbol}: the devnet has {', '.join(net.deployment.tokens)}")
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


def _run_keeper(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    signer = _load_signer(config)
    json_lines = {"auto": None, "json": True, "console": False}[args.log_format]
    configure_logging(json_lines=json_lines)
    return asyncio.run(_serve(Keeper(config, signer)))


def _load_signer(config: KeeperConfig) -> Signer:
    if config.signer.private_key_env is not None:
        return signer_from_env(config.signer.private_key_env)
    keystore, password_file = config.signer.keystore, config.signer.password_file
    if keystore is None or password_file is None:
        raise ConfigError("signer", None, "set keystore + password_file or private_key_env")
    return signer_from_keystore(keystore, password_file)


async def _serve(keeper: Keeper) -> int:
    """Runs the keeper until SIGINT/SIGTERM, which cancel it so it stops cleanly."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, task.cancel)
    log = structlog.get_logger("keeper")
    try:
        await keeper.run()
    except asyncio.CancelledError:
        log.info("keeper.stopped", reason="signal")
        return 0
    return 0


def _move_price(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.manifest)
    symbol = args.symbol.upper()
    if symbol not in manifest.deployment.tokens:
        known = ", ".join(manifest.deployment.tokens)
        raise UsageError(f"unknown token {args.symbol!r}: the devnet has {known}")
    w3 = connect(manifest.rpc_url)
    updater = manifest.roles.deployer.address
    feed_decimals = _feed_decimals(w3, manifest.deployment, symbol)
    if args.usd is not None:
        new = int(args.usd * 10**feed_decimals)
        if new <= 0:
            raise UsageError(f"--set {args.usd} rounds to zero at {feed_decimals} feed decimals")
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


def _list_accounts(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.manifest)
    w3 = connect(manifest.rpc_url)
    print(format_table(read_accounts(w3, manifest.deployment), manifest.deployment))
    return 0


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _attach_signed_values(argv: Sequence[str]) -> list[str]:
    """`--change -30%` as `--change=-30%`: argparse would take `-30%` for an option."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--change" and arg.startswith("-"):
            joined[-1] = f"--change={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_attach_signed_values(sys.argv[1:] if argv is None else argv))
    # Installed explicitly: a process started in the background inherits SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _raise_keyboard_interrupt)
    try:
        exit_code: int = args.handler(args)
        return exit_code
    except (UsageError, ManifestError, ConfigError, SignerError) as error:
        print(f"keeper: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (AnvilError, TransactionRevertedError, StartupError) as error:
        print(f"keeper: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except HTTPConnectionError as error:
        print(
            f"keeper: error: cannot reach the node ({error.__class__.__name__}); "
            "is the devnet still running?",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except RpcTransportError as error:
        print(f"keeper: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
