"""Reads every open Credit Account through the contracts' own views, for people to look at."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3

from keeper.devnet.deploy import Deployment
from keeper.display import aligned_columns, format_health_factor, format_units
from keeper.risk.health import WAD


@dataclass(frozen=True, slots=True)
class AccountView:
    address: str
    market: str
    owner: str
    balances: dict[str, int]
    principal: int
    interest: int
    fee: int
    total_value: int
    weighted_value: int
    health_factor_wad: int

    @property
    def total_debt(self) -> int:
        return self.principal + self.interest + self.fee


def read_accounts(w3: Web3, deployment: Deployment) -> list[AccountView]:
    """All open accounts of every market, sorted by health factor (lowest first)."""
    views = []
    for market in deployment.markets:
        manager = deployment.contract(w3, f"CreditManager.{market}").functions
        count = manager.creditAccountsCount().call()
        for account in manager.creditAccounts(0, count).call():
            owner = manager.creditAccountInfo(account).call()[0]
            tokens, amounts = manager.balances(account).call()
            principal, interest, fee = manager.calcDebt(account).call()
            total_value, weighted_value = manager.calcTotalValue(account).call()
            views.append(
                AccountView(
                    address=account,
                    market=market,
                    owner=owner,
                    balances={
                        deployment.symbol_of(t): a
                        for t, a in zip(tokens, amounts, strict=True)
                        if a
                    },
                    principal=principal,
                    interest=interest,
                    fee=fee,
                    total_value=total_value,
                    weighted_value=weighted_value,
                    health_factor_wad=manager.calcHealthFactor(account).call(),
                )
            )
    return sorted(views, key=lambda v: v.health_factor_wad)


def format_table(views: list[AccountView], deployment: Deployment) -> str:
    header = ("credit account", "market", "holdings", "debt", "total value", "Hf", "")
    rows = [header]
    for view in views:
        decimals = deployment.decimals[view.market]
        holdings = ", ".join(
            f"{format_units(amount, deployment.decimals[symbol], 4)} {symbol}"
            for symbol, amount in view.balances.items()
        )
        rows.append(
            (
                view.address,
                view.market,
                holdings,
                format_units(view.total_debt, decimals),
                format_units(view.total_value, decimals),
                format_health_factor(view.health_factor_wad),
                "LIQUIDATABLE" if view.health_factor_wad < WAD else "",
            )
        )
    return aligned_columns(rows)
