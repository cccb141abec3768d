"""`keeper accounts` and `keeper account`: the accounts the keeper tracks, by health factor, and
one account figure by figure, checked against the contract's own views at the same block.

Both answer from the keeper's back-filled state and its exact integer math, so they show what the
daemon would decide; `account` proves it by reading the contract at the block the state is from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import textwrap
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from keeper.chain.heads import Head
from keeper.chain.rpc import RpcClient
from keeper.config import ConfigError, KeeperConfig, checked_address, load_config
from keeper.display import aligned_columns
from keeper.operator.session import (
    backfilled,
    connected,
    quiet_logging,
)
from keeper.operator.valuation import (
    TokenInfo,
    Valuation,
    find_account,
    health_text,
    read_tokens,
    short,
    utc,
    value_account,
)
from keeper.protocol.calls import CallResult, manager_call, multicall
from keeper.risk.health import PriceUnavailableError, collateral_value
from keeper.risk.liquidation import LiquidationPayout
from keeper.state.model import Market
from keeper.state.store import ProtocolState

EXIT_MISMATCH = 1

# ------------------------------------------------------------------------------ keeper accounts


def list_accounts(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    manager = None if args.manager is None else checked_address("--manager", args.manager)
    if manager is not None and manager not in config.protocol.credit_managers:
        raise ConfigError(
            "--manager",
            manager,
            f"not in protocol.credit_managers ({', '.join(config.protocol.credit_managers)})",
        )
    quiet_logging()
    return asyncio.run(_list_accounts(config, manager, args.below, args.json))


async def _list_accounts(
    config: KeeperConfig, manager: str | None, below: Decimal | None, as_json: bool
) -> int:
    async with connected(config) as rpc:
        loaded = await backfilled(rpc, config)
        state, head = loaded.state, loaded.head
        managers = list(state.markets) if manager is None else [manager]
        tokens = await read_tokens(rpc, (state.markets[m].underlying for m in managers))
    valuations = sorted(
        (
            value_account(m, account, state.market_view(m), head.timestamp)
            for m in managers
            for account in state.markets[m].accounts.values()
        ),
        key=_by_health,
    )
    shown = [v for v in valuations if below is None or _is_below(v, below)]
    if as_json:
        rows = [_valuation_json(v, tokens, head) for v in shown]
        print(json.dumps(rows, indent=2))
        return 0
    scope = "" if below is None else f", {len(shown)} with a health factor below {below}"
    print(
        f"{len(valuations)} Credit Account(s) at block {head.number} ({utc(head.timestamp)})"
        f"{scope}; lowest health factor first"
    )
    if shown:
        print()
        print(_accounts_table(shown, state, tokens))
    return 0


def _by_health(valuation: Valuation) -> tuple[bool, int, str]:
    """Unpriced accounts first (nobody can value or liquidate them), then by health factor."""
    if valuation.health is None:
        return (False, 0, valuation.account.address)
    return (True, valuation.health.health_factor_wad, valuation.account.address)


def _is_below(valuation: Valuation, bound: Decimal) -> bool:
    """Exact: health factor WAD < bound x 1e18. Unpriced accounts are always listed."""
    if valuation.health is None:
        return True
    numerator, denominator = bound.as_integer_ratio()
    return valuation.health.health_factor_wad * denominator < numerator * 10**18


def _accounts_table(
    valuations: list[Valuation], state: ProtocolState, tokens: dict[str, TokenInfo]
) -> str:
    header = (
        "market",
        "manager",
        "credit account",
        "owner",
        "health factor",
        "total value",
        "debt",
        "liquidatable",
        "",
    )
    rows = [header]
    for v in valuations:
        token = tokens[state.markets[v.manager].underlying]
        rows.append(
            (
                token.symbol,
                short(v.manager),
                v.account.address,
                short(v.account.owner),
                health_text(v),
                "-" if v.health is None else token.amount(v.health.value.total_value),
                token.amount(v.debt.total),
                "yes" if v.liquidatable else "no",
                "" if v.unpriced is None else f"unpriced: {v.unpriced}",
            )
        )
    return aligned_columns(rows)


# ------------------------------------------------------------------------------ keeper account


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A figure on which the keeper's math and the contract's view disagree."""

    figure: str
    keeper: int | str
    contract: int | str


def show_account(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    address = checked_address("ADDRESS", args.address)
    quiet_logging()
    return asyncio.run(_show_account(config, address, args.json))


async def _show_account(config: KeeperConfig, address: str, as_json: bool) -> int:
    async with connected(config) as rpc:
        loaded = await backfilled(rpc, config)
        state, head = loaded.state, loaded.head
        valuation = find_account(state, address, head.timestamp)
        tokens = await read_tokens(rpc, [*valuation.account.balances, valuation.market.underlying])
        mismatches = await compare_with_views(rpc, valuation, head.number)
    if as_json:
        print(json.dumps(_breakdown_json(valuation, tokens, head, mismatches), indent=2))
    else:
        print(_breakdown_text(valuation, tokens, head))
        print()
        if mismatches:
            for m in mismatches:
                print(f"MISMATCH  {m.figure}: keeper {m.keeper}, contract {m.contract}")
            figures = ", ".join(m.figure for m in mismatches)
            print(f"contract views at block {head.number}: MISMATCH in {figures}")
        else:
            print(f"contract views at block {head.number}: match")
    return EXIT_MISMATCH if mismatches else 0


async def compare_with_views(rpc: RpcClient, valuation: Valuation, block: int) -> list[Mismatch]:
    """The manager's `calcDebt`, `calcTotalValue`, `calcHealthFactor` (and, when the account can
    be valued, `calcLiquidationPayout` of the keeper's figures) at `block`, against the keeper's."""
    manager, account, debt = valuation.manager, valuation.account.address, valuation.debt
    calls = [
        manager_call(manager, name, account)
        for name in ("calcDebt", "calcTotalValue", "calcHealthFactor")
    ]
    if valuation.health is not None:
        total_value = valuation.health.value.total_value
        calls.append(
            manager_call(
                manager,
                "calcLiquidationPayout",
                total_value,
                debt.principal,
                debt.interest,
                debt.fee,
            )
        )
    results = await multicall(rpc, calls, block=block)
    return view_mismatches(valuation, results)


def view_mismatches(valuation: Valuation, results: list[CallResult]) -> list[Mismatch]:
    """Figure by figure; an account the keeper cannot value must make the views revert too."""
    debt, health, payout = valuation.debt, valuation.health, valuation.payout()
    keeper: dict[str, int | None] = {
        "debt principal": debt.principal,
        "debt interest": debt.interest,
        "debt fee": debt.fee,
        "total value": None if health is None else health.value.total_value,
        "weighted value": None if health is None else health.value.weighted_value,
        "health factor": None if health is None else health.health_factor_wad,
    }
    names = [
        ("debt principal", "debt interest", "debt fee"),
        ("total value", "weighted value"),
        ("health factor",),
    ]
    if payout is not None:
        keeper.update(_payout_figures(payout))
        names.append(tuple(_payout_figures(payout)))
    mismatches = []
    for figures, result in zip(names, results, strict=True):
        outputs = result.outputs
        if outputs is not None and len(outputs) == 1 and isinstance(outputs[0], tuple):
            outputs = outputs[0]  # calcLiquidationPayout returns one struct
        for i, figure in enumerate(figures):
            ours = keeper[figure]
            theirs = None if outputs is None else outputs[i]
            if ours != theirs:
                mismatches.append(
                    Mismatch(
                        figure,
                        f"unpriced ({valuation.unpriced})" if ours is None else ours,
                        f"reverts {result.revert}" if theirs is None else theirs,
                    )
                )
    return mismatches


def _payout_figures(payout: LiquidationPayout) -> dict[str, int | None]:
    return {
        "payout amount paid": payout.amount_paid,
        "payout repaid to pool": payout.repaid_to_pool,
        "payout protocol fees": payout.protocol_fees,
        "payout remaining funds": payout.remaining_funds,
        "payout loss": payout.loss,
    }


def _breakdown_text(valuation: Valuation, tokens: dict[str, TokenInfo], head: Head) -> str:
    underlying = tokens[valuation.market.underlying]
    account, debt, health = valuation.account, valuation.debt, valuation.health
    payout = valuation.payout()
    lines = [
        f"Credit Account {account.address} at block {head.number} ({utc(head.timestamp)})",
        f"  manager         {valuation.manager} ({underlying.symbol} market)",
        f"  owner           {account.owner}",
        "",
        textwrap.indent(
            _collateral_table(_collateral(valuation, head.timestamp), valuation.market, tokens),
            "  ",
        ),
        "",
    ]
    if health is None:
        lines.append(f"  value           unpriced: {valuation.unpriced}")
    else:
        lines += [
            f"  total value     {underlying.exact(health.value.total_value)}",
            f"  weighted value  {underlying.exact(health.value.weighted_value)}",
        ]
    lines += [
        f"  debt principal  {underlying.exact(debt.principal)}",
        f"  interest        {underlying.exact(debt.interest)}",
        f"  fee             {underlying.exact(debt.fee)}",
        f"  total debt      {underlying.exact(debt.total)}",
        f"  health factor   {health_text(valuation)}"
        + ("  LIQUIDATABLE" if valuation.liquidatable else ""),
    ]
    if health is not None and payout is not None:
        total_value = health.value.total_value
        lines += [
            f"  if liquidated now, the liquidator pays {underlying.exact(payout.amount_paid)}",
            f"    for assets worth {underlying.exact(total_value)}: a premium of "
            f"{underlying.exact(payout.premium(total_value))}",
            f"    to the pool {underlying.exact(payout.repaid_to_pool)}, to the treasury "
            f"{underlying.exact(payout.protocol_fees)}, to the owner "
            f"{underlying.exact(payout.remaining_funds)}; bad debt {underlying.exact(payout.loss)}",
        ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Holding:
    """One token an account holds, valued alone by the function that values the whole account:
    (value, weighted value) in the underlying, or None with the reason it cannot be priced."""

    token: str
    balance: int
    value: tuple[int, int] | None
    unpriced: str | None


def _collateral(valuation: Valuation, timestamp: int) -> list[Holding]:
    """The account's non-zero balances, the underlying first."""
    held = []
    account, market = valuation.account, valuation.market
    for token, balance in account.balances.items():
        if balance == 0:
            continue
        alone = replace(account, balances={token: balance})
        try:
            value = collateral_value(alone, market, timestamp)
        except PriceUnavailableError as error:
            held.append(Holding(token, balance, None, str(error)))
            continue
        held.append(Holding(token, balance, (value.total_value, value.weighted_value), None))
    return sorted(held, key=lambda holding: holding.token != market.underlying)


def _collateral_table(holdings: list[Holding], market: Market, tokens: dict[str, TokenInfo]) -> str:
    underlying = tokens[market.underlying]
    rows = [
        (
            "token",
            "balance",
            "feed answer (decimals)",
            "updated at",
            f"value ({underlying.symbol})",
            "threshold",
            "weighted value",
        )
    ]
    for holding in holdings:
        price = market.prices.get(holding.token)
        rows.append(
            (
                tokens[holding.token].symbol,
                tokens[holding.token].exact(holding.balance),
                "no feed" if price is None else f"{price.answer} ({price.feed_decimals})",
                "" if price is None else utc(price.updated_at),
                f"unpriced: {holding.unpriced}"
                if holding.value is None
                else underlying.exact(holding.value[0]),
                f"{market.liquidation_thresholds_bps.get(holding.token, 0) / 100:.2f} %",
                "" if holding.value is None else underlying.exact(holding.value[1]),
            )
        )
    return aligned_columns(rows)


def _valuation_json(
    valuation: Valuation, tokens: dict[str, TokenInfo], head: Head
) -> dict[str, Any]:
    """Exact integers as strings (JSON numbers lose precision past 2^53), plus readable fields."""
    health, debt, market = valuation.health, valuation.debt, valuation.market
    underlying = tokens[market.underlying]
    return {
        "block": head.number,
        "timestamp": head.timestamp,
        "manager": valuation.manager,
        "market": underlying.symbol,
        "underlying": market.underlying,
        "underlying_decimals": underlying.decimals,
        "account": valuation.account.address,
        "owner": valuation.account.owner,
        "health_factor_wad": None if health is None else str(health.health_factor_wad),
        "health_factor": health_text(valuation),
        "liquidatable": valuation.liquidatable,
        "unpriced": valuation.unpriced,
        "total_value": None if health is None else str(health.value.total_value),
        "weighted_value": None if health is None else str(health.value.weighted_value),
        "debt": {
            "principal": str(debt.principal),
            "interest": str(debt.interest),
            "fee": str(debt.fee),
            "total": str(debt.total),
        },
        "total_value_display": None
        if health is None
        else underlying.amount(health.value.total_value),
        "debt_display": underlying.amount(debt.total),
    }


def _breakdown_json(
    valuation: Valuation, tokens: dict[str, TokenInfo], head: Head, mismatches: list[Mismatch]
) -> dict[str, Any]:
    breakdown = _valuation_json(valuation, tokens, head)
    payout = valuation.payout()
    breakdown["collateral"] = [
        _holding_json(holding, valuation.market, tokens, head.timestamp)
        for holding in _collateral(valuation, head.timestamp)
    ]
    breakdown["payout"] = (
        None
        if payout is None or valuation.health is None
        else {
            "amount_paid": str(payout.amount_paid),
            "premium": str(payout.premium(valuation.health.value.total_value)),
            "repaid_to_pool": str(payout.repaid_to_pool),
            "protocol_fees": str(payout.protocol_fees),
            "remaining_funds": str(payout.remaining_funds),
            "loss": str(payout.loss),
        }
    )
    breakdown["contract_views"] = {
        "block": head.number,
        "match": not mismatches,
        "mismatches": [
            {"figure": m.figure, "keeper": str(m.keeper), "contract": str(m.contract)}
            for m in mismatches
        ],
    }
    return breakdown


def _holding_json(
    holding: Holding, market: Market, tokens: dict[str, TokenInfo], timestamp: int
) -> dict[str, Any]:
    price = market.prices.get(holding.token)
    return {
        "token": holding.token,
        "symbol": tokens[holding.token].symbol,
        "balance": str(holding.balance),
        "price": None
        if price is None
        else {
            "answer": str(price.answer),
            "feed_decimals": price.feed_decimals,
            "token_decimals": price.token_decimals,
            "updated_at": price.updated_at,
            "age_s": timestamp - price.updated_at,
            "staleness_period_s": price.staleness_period,
        },
        "liquidation_threshold_bps": market.liquidation_thresholds_bps.get(holding.token, 0),
        "value": None if holding.value is None else str(holding.value[0]),
        "weighted_value": None if holding.value is None else str(holding.value[1]),
        "unpriced": holding.unpriced,
    }
