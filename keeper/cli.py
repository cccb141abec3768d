"""The `keeper` command line.

Bad input ends with one line naming what was wrong and how to fix it, exit code 2, and no
traceback; a failure of the world (anvil missing, node unreachable) exits 1 the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

import structlog
from requests.exceptions import ConnectionError as HTTPConnectionError

from keeper import operator as operator_commands
from keeper.chain.rpc import RpcTransportError
from keeper.config import ConfigError, load_config
from keeper.daemon import Keeper
from keeper.devnet import commands as devnet_commands
from keeper.devnet.anvil import AnvilError
from keeper.devnet.manifest import ManifestError
from keeper.devnet.tx import TransactionRevertedError
from keeper.execution.signer import SignerError
from keeper.ops.health import LoopWatch, liveness, readiness
from keeper.ops.logging import configure_logging
from keeper.ops.metrics import KeeperMetrics
from keeper.ops.server import ops_server
from keeper.startup import StartupError, load_signer

DEFAULT_MANIFEST = Path(".devnet/manifest.json")
EXIT_FAILURE = 1
EXIT_USAGE = 2


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
            "  keeper run --config keeper.toml      the keeper daemon against a chain\n"
            "  keeper check-config --config keeper.toml   check the config against the chain\n"
            "  keeper accounts --config keeper.toml --below 1.1   accounts nearest to liquidation\n"
            "  keeper devnet --accounts 20          local chain + protocol + 20 seeded accounts\n"
            "  keeper devnet --keeper --crash WETH:-30%   ... plus the keeper and a price crash\n"
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
            "whose health factor falls below 1. Serves Prometheus metrics on /metrics and "
            "health on /healthz (alive) and /readyz (back-filled, head moving, signer funded, "
            "feeds fresh) at [ops] metrics_host:metrics_port. Runs until SIGINT/SIGTERM, then "
            "follows transactions in flight for up to [ops] shutdown_grace_s."
        ),
        epilog=(
            "configuration: config/production.example.toml documents every field. Each\n"
            "field can be set by an environment variable, which wins over the file:\n"
            "  ASGARD_KEEPER_<SECTION>_<KEY>       e.g. ASGARD_KEEPER_CHAIN_RPC_URL=https://...\n"
            "  ASGARD_KEEPER_<SECTION>_<KEY>_FILE  the value is read from that file (secrets)\n"
            "the signer's key comes from [signer] keystore + password_file, private_key_file,\n"
            "or the environment variable named by private_key_env; it is never logged.\n"
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
    operator_commands.register(commands)

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
        "--host",
        default="127.0.0.1",
        help="address anvil listens on (default: 127.0.0.1; 0.0.0.0 to serve other containers)",
    )
    devnet.add_argument(
        "--keeper-config",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write a keeper config (and its key, keeper.key, beside it) for a keeper in "
        "another container; removed when the devnet stops",
    )
    devnet.add_argument(
        "--advertise-url",
        default=None,
        metavar="URL",
        help="the node's RPC URL as that other keeper reaches it, e.g. http://devnet:8545",
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
    devnet.set_defaults(handler=devnet_commands.run_devnet)
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
    price.set_defaults(handler=devnet_commands.price)
    accounts = actions.add_parser(
        "accounts", help="list the running devnet's accounts by health factor"
    )
    accounts.add_argument("--manifest", type=Path, default=argparse.SUPPRESS)
    accounts.set_defaults(handler=devnet_commands.list_accounts)
    return parser


def _run_keeper(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    signer = load_signer(config)
    json_lines = {"auto": None, "json": True, "console": False}[args.log_format]
    configure_logging(json_lines=json_lines)
    metrics = KeeperMetrics()
    return asyncio.run(_serve(Keeper(config, signer, observer=metrics), metrics))


async def _serve(keeper: Keeper, metrics: KeeperMetrics) -> int:
    """Runs the keeper, and its metrics and health server, until SIGINT/SIGTERM. A signal
    cancels the daemon, which follows its transactions in flight for up to
    `ops.shutdown_grace_s` and returns."""
    ops = keeper.config.ops
    daemon = asyncio.create_task(keeper.run(), name="keeper")
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, daemon.cancel)
    watch = LoopWatch()
    watch_task = asyncio.create_task(watch.run(), name="loop-watch")
    metrics.event_loop_lag.set_function(lambda: watch.lag_s)
    metrics.watch(
        keeper,
        ready=lambda: all(check.ok for check in readiness(keeper)),
        min_native_wei=ops.min_native_balance_wei,
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            if ops.metrics_port:
                server = ops_server(
                    metrics,
                    lambda: liveness(daemon, watch, ops.loop_stall_s),
                    lambda: readiness(keeper),
                    host=ops.metrics_host,
                    port=ops.metrics_port,
                )
                try:
                    await stack.enter_async_context(server)
                except OSError as error:
                    daemon.cancel()
                    await asyncio.gather(daemon, return_exceptions=True)
                    raise ConfigError(
                        "ops.metrics_port",
                        ops.metrics_port,
                        f"cannot listen on {ops.metrics_host}:{ops.metrics_port} "
                        f"({error.strerror}); choose a free port, or 0 to serve no metrics",
                    ) from None
            await daemon
    except asyncio.CancelledError:
        structlog.get_logger("keeper").info("keeper.stopped", reason="signal")
    finally:
        watch_task.cancel()
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
    except (ManifestError, ConfigError, SignerError) as error:
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
