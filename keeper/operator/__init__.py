"""Commands for the people who operate a keeper: check a configuration against the chain, list
accounts by health factor, explain one account, liquidate one by hand."""

from __future__ import annotations

import argparse
import textwrap
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from keeper.operator.accounts import list_accounts, show_account
from keeper.operator.checks import check_config
from keeper.operator.liquidate import liquidate

_CONFIG_HELP = "the keeper's TOML config file (the one `keeper run` uses)"
_FORMATTER = argparse.RawDescriptionHelpFormatter
_EXAMPLE = "0x58a1779Ae28C34bA176B691e4e4dEF6d2A0545Ca"


def _paragraph(text: str) -> str:
    """A description wrapped for a terminal (the raw formatter keeps the epilog's layout, and
    would print the description as one line)."""
    return textwrap.fill(text, width=88)


def _health_bound(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write e.g. 1.05") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a health factor above 0, e.g. 1.05")
    return value


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Adds the operator commands to the `keeper` parser."""
    check = commands.add_parser(
        "check-config",
        help="check a config against the chain: RPC, contracts, signer, funds, feeds",
        description=_paragraph(
            "Validates the file, then checks it against the chain, one line per check: the RPC "
            "endpoint answers, the chain id matches, every configured address and Multicall3 "
            "hold code, each CreditManager answers underlying/pool/oracle, the WebSocket "
            "endpoint accepts a newHeads subscription, the signer loads, its gas balance covers "
            "[ops] min_native_balance, its underlying balance per market, whether it may "
            "liquidate in each market (paused? emergency liquidator?), and that every price "
            "feed is fresh. Back-fills from protocol.deploy_block, as `keeper run` does."
        ),
        epilog=(
            "example:\n"
            "  keeper check-config --config /etc/keeper/keeper.toml\n"
            "  PASS  chain id: 31337 matches chain.chain_id\n"
            "  FAIL  liquidation permission, market USDC 0x0B30…7016: protocol paused and ...\n"
            "  11 passed, 1 failed\n\n"
            "exit codes: 0 every check passed, 1 a check failed, 2 the file itself is invalid.\n"
        ),
        formatter_class=_FORMATTER,
    )
    check.add_argument("--config", type=Path, required=True, help=_CONFIG_HELP)
    check.set_defaults(handler=check_config)

    accounts = commands.add_parser(
        "accounts",
        help="every tracked Credit Account, lowest health factor first",
        description=_paragraph(
            "Back-fills every configured CreditManager from protocol.deploy_block and lists its "
            "open Credit Accounts with the health factor the keeper computes (exact integer "
            "math, at the latest block), lowest first. Accounts a price feed cannot value "
            "(missing, non-positive or stale answer) come first, marked unpriced with the "
            "reason: nobody can liquidate them until the feed updates."
        ),
        epilog=(
            "examples:\n"
            "  keeper accounts --config keeper.toml               all accounts\n"
            "  keeper accounts --config keeper.toml --below 1.05  below 1.05 (and unpriced)\n"
            "  keeper accounts --config keeper.toml --json        exact integers, as JSON\n\n"
            "health factors are floored to 4 places: 0.99999 shows as 0.9999, never 1.0000.\n"
        ),
        formatter_class=_FORMATTER,
    )
    accounts.add_argument("--config", type=Path, required=True, help=_CONFIG_HELP)
    accounts.add_argument(
        "--below",
        type=_health_bound,
        metavar="HF",
        help="only accounts whose health factor is below HF, e.g. 1.05",
    )
    accounts.add_argument("--manager", metavar="ADDRESS", help="only this CreditManager's accounts")
    accounts.add_argument(
        "--json",
        action="store_true",
        help="a JSON list; amounts as exact integer strings in smallest units",
    )
    accounts.set_defaults(handler=list_accounts)

    account = commands.add_parser(
        "account",
        help="one Credit Account figure by figure, checked against the contract's views",
        description=_paragraph(
            "Shows one Credit Account as the keeper sees it: each token's balance, feed answer "
            "and age, value in the underlying, liquidation threshold and weighted value; the "
            "total and weighted value; debt principal, interest and fee; the health factor; and "
            "what a liquidation now would pay. Then reads the CreditManager's calcDebt, "
            "calcTotalValue, calcHealthFactor and calcLiquidationPayout at the same block and "
            "says whether every figure matches."
        ),
        epilog=(
            "example:\n"
            f"  keeper account {_EXAMPLE} --config keeper.toml\n\n"
            "exit codes: 0 the contract's views match, 1 a figure differs (MISMATCH lines name\n"
            "it), 2 bad input (malformed address, or no such account in the configured managers).\n"
        ),
        formatter_class=_FORMATTER,
    )
    account.add_argument("address", metavar="ADDRESS", help="the Credit Account's address")
    account.add_argument("--config", type=Path, required=True, help=_CONFIG_HELP)
    account.add_argument("--json", action="store_true", help="a JSON object with exact integers")
    account.set_defaults(handler=show_account)

    manual = commands.add_parser(
        "liquidate",
        help="liquidate one Credit Account by hand, after a simulation and a confirmation",
        description=_paragraph(
            "For emergency operators. Back-fills, computes the account's health factor, and "
            "simulates the liquidation against the node with the configured signer. Shows the "
            "health factor, whether the signer may liquidate (paused protocol: emergency "
            "liquidators only), what it pays and earns, the gas estimate and maximum cost, the "
            "signer's balances and the simulated outcome. Then asks for confirmation, approves "
            "the CreditManagers to pull the underlying if needed, simulates again and sends "
            "the liquidation through the keeper's dispatcher (fee bumps included). Profit is "
            "shown, not required. An account that is not liquidatable, or whose simulation "
            "reverts, is refused and nothing is sent."
        ),
        epilog=(
            "examples:\n"
            f"  keeper liquidate {_EXAMPLE} --config keeper.toml --dry-run\n"
            "      show and simulate; send nothing\n"
            f"  keeper liquidate {_EXAMPLE} --config keeper.toml\n"
            "      show, simulate, ask [y/N] on stderr, then send (--yes: do not ask)\n\n"
            "a signer that never ran `keeper run` has not approved the CreditManagers yet: its\n"
            "dry run reverts on the token transfer, and a real run sends approve() first.\n"
            "exit codes: 0 liquidated (or, with --dry-run, the simulation succeeds), 1 refused,\n"
            "aborted or not included, 2 bad input.\n"
        ),
        formatter_class=_FORMATTER,
    )
    manual.add_argument("address", metavar="ADDRESS", help="the Credit Account to liquidate")
    manual.add_argument("--config", type=Path, required=True, help=_CONFIG_HELP)
    when = manual.add_mutually_exclusive_group()
    when.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    when.add_argument("--dry-run", action="store_true", help="show and simulate only; send nothing")
    manual.set_defaults(handler=liquidate)
