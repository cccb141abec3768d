"""Accounts valued exactly as the keeper values them, and the names and units people read them in.

The figures come from `keeper.risk.health` on the back-filled state, so what an operator sees is
what the daemon would act on. Token symbols and decimals are read from the tokens for display
only; the math uses the oracle's configuration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_abi.exceptions import DecodingError

from keeper.chain.rpc import RpcClient, RpcError
from keeper.config import ConfigError
from keeper.display import format_health_factor, format_units
from keeper.protocol.calls import CallRevertedError, eth_call, token_call
from keeper.risk.health import (
    AccountHealth,
    Debt,
    PriceUnavailableError,
    account_health,
    cumulative_index_at,
    debt_at,
)
from keeper.risk.liquidation import LiquidationPayout, liquidation_payout
from keeper.state.model import CreditAccountState, Market
from keeper.state.store import ProtocolState


@dataclass(frozen=True, slots=True)
class Valuation:
    """One account at one timestamp: its debt always; its value and health factor only when
    every price it needs is usable (otherwise `unpriced` says which is not, as the contract's
    revert would)."""

    manager: str
    market: Market
    account: CreditAccountState
    debt: Debt
    health: AccountHealth | None
    unpriced: str | None

    @property
    def liquidatable(self) -> bool:
        """Liquidatable now: an account that cannot be valued cannot be liquidated by anyone."""
        return self.health is not None and self.health.is_liquidatable

    def payout(self) -> LiquidationPayout | None:
        """How a liquidation now would split its funds, when the account can be valued."""
        if self.health is None:
            return None
        return liquidation_payout(self.health.value.total_value, self.debt, self.market.fees)


def find_account(state: ProtocolState, address: str, timestamp: int) -> Valuation:
    """The open account at `address` (checksummed) in any configured market, valued."""
    for manager, market in state.markets.items():
        account = market.accounts.get(address)
        if account is not None:
            return value_account(manager, account, state.market_view(manager), timestamp)
    raise ConfigError(
        "ADDRESS", address, "no Credit Account with this address in the configured managers"
    )


def value_account(
    manager: str, account: CreditAccountState, market: Market, timestamp: int
) -> Valuation:
    try:
        health = account_health(account, market, timestamp)
    except PriceUnavailableError as error:
        index = cumulative_index_at(market.interest_rate, timestamp)
        debt = debt_at(account, index, market.fees.fee_interest_bps)
        return Valuation(manager, market, account, debt, None, str(error))
    return Valuation(manager, market, account, health.debt, health, None)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    symbol: str
    decimals: int

    def amount(self, value: int, places: int = 2) -> str:
        """`value` smallest units as e.g. "1,234.56 USDC", truncated, never rounded up."""
        return f"{format_units(value, self.decimals, places)} {self.symbol}"

    def exact(self, value: int) -> str:
        """Every decimal place, for a breakdown compared figure by figure."""
        return self.amount(value, self.decimals)


async def read_tokens(rpc: RpcClient, tokens: Iterable[str]) -> dict[str, TokenInfo]:
    """Each token's ERC-20 `symbol()` and `decimals()`; a token that does not answer them in the
    standard types shows as its short address, in smallest units."""

    async def read(token: str) -> TokenInfo:
        try:
            (symbol,), (decimals,) = await asyncio.gather(
                eth_call(rpc, token_call(token, "symbol")),
                eth_call(rpc, token_call(token, "decimals")),
            )
        except (CallRevertedError, RpcError, DecodingError):
            return TokenInfo(short(token), 0)
        return TokenInfo(str(symbol) or short(token), int(decimals))

    ordered = sorted(set(tokens))
    infos = await asyncio.gather(*(read(token) for token in ordered))
    return dict(zip(ordered, infos, strict=True))


def short(address: str) -> str:
    """0x0B30…7016: enough to tell addresses apart in a table."""
    return f"{address[:6]}…{address[-4:]}"


def health_text(valuation: Valuation) -> str:
    """The health factor floored to 4 places ("inf" without debt), or "unpriced"."""
    if valuation.health is None:
        return "unpriced"
    return format_health_factor(valuation.health.health_factor_wad)


def utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
