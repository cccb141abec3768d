"""Health factor of a Credit Account, computed exactly as `CreditManager` computes it.

Integers only, and every division is a floor at the same place as in the Solidity, so the result
equals the contract's view to the last wei at any block for which the inputs are known.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeper.state.model import CreditAccountState, InterestRate, Market, TokenPrice

RAY = 10**27
WAD = 10**18
PERCENTAGE_FACTOR = 10_000
MAX_UINT256 = 2**256 - 1


class PriceUnavailableError(Exception):
    """The oracle would revert: no feed, a non-positive answer, or a stale one."""

    def __init__(self, token: str, reason: str) -> None:
        super().__init__(f"price of {token} unavailable: {reason}")
        self.token = token
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Debt:
    principal: int
    interest: int
    fee: int

    @property
    def total(self) -> int:
        return self.principal + self.interest + self.fee


@dataclass(frozen=True, slots=True)
class CollateralValue:
    total_value: int
    weighted_value: int


@dataclass(frozen=True, slots=True)
class AccountHealth:
    value: CollateralValue
    debt: Debt
    health_factor_wad: int

    @property
    def is_liquidatable(self) -> bool:
        return self.health_factor_wad < WAD


def cumulative_index_at(rate: InterestRate, timestamp: int) -> int:
    """`LendingPool.cumulativeIndexAt`: linear growth since the last checkpoint."""
    elapsed = timestamp - rate.last_update_timestamp
    if elapsed < 0:
        raise ValueError(f"timestamp {timestamp} precedes the rate checkpoint")
    return rate.cumulative_index_ray * (RAY + rate.rate_per_second_ray * elapsed) // RAY


def debt_at(account: CreditAccountState, index_ray: int, fee_interest_bps: int) -> Debt:
    """`CreditManager.calcDebt` at the pool index `index_ray`: interest since the account's last
    update is added to what it had accrued, and the fee on that new interest to its fees."""
    principal = account.principal
    new_interest = principal * index_ray // account.cumulative_index_ray - principal
    return Debt(
        principal,
        account.accrued_interest + new_interest,
        account.accrued_fees + new_interest * fee_interest_bps // PERCENTAGE_FACTOR,
    )


def checked_price(token: str, price: TokenPrice | None, timestamp: int) -> TokenPrice:
    """The price if `PriceOracle.getPrice` would accept it at `timestamp`, else raises."""
    if price is None:
        raise PriceUnavailableError(token, "no price feed")
    if price.answer <= 0:
        raise PriceUnavailableError(token, f"non-positive answer {price.answer}")
    if timestamp > price.updated_at and timestamp - price.updated_at > price.staleness_period:
        raise PriceUnavailableError(token, f"stale since {price.updated_at}")
    return price


def convert(amount: int, price_from: TokenPrice, price_to: TokenPrice) -> int:
    """`PriceOracle.convert` for already checked prices."""
    scale_to = price_to.token_decimals + price_to.feed_decimals
    scale_from = price_from.token_decimals + price_from.feed_decimals
    if scale_to >= scale_from:
        scale_up: int = 10 ** (scale_to - scale_from)
        return amount * (price_from.answer * scale_up) // price_to.answer
    scale_down: int = 10 ** (scale_from - scale_to)
    return amount * price_from.answer // (price_to.answer * scale_down)


def collateral_value(
    account: CreditAccountState, market: Market, timestamp: int
) -> CollateralValue:
    """`CreditManager.calcTotalValue`: each token valued in the underlying, then weighted.

    Prices are checked in the contract's order (the token's, then the underlying's on the first
    conversion), so a refusal names the same token the contract's revert names."""
    total = weighted = 0
    underlying_price: TokenPrice | None = None
    for token, balance in account.balances.items():
        if balance == 0:
            continue
        if token == market.underlying:
            value = balance
        else:
            token_price = checked_price(token, market.prices.get(token), timestamp)
            if underlying_price is None:
                underlying_price = checked_price(
                    market.underlying, market.prices.get(market.underlying), timestamp
                )
            value = convert(balance, token_price, underlying_price)
        total += value
        weighted += value * market.liquidation_thresholds_bps[token] // PERCENTAGE_FACTOR
    return CollateralValue(total, weighted)


def health_factor_wad(weighted_value: int, total_debt: int) -> int:
    """WAD health factor; an account without debt is infinitely healthy (uint256 max)."""
    return MAX_UINT256 if total_debt == 0 else weighted_value * WAD // total_debt


def account_health(account: CreditAccountState, market: Market, timestamp: int) -> AccountHealth:
    """Every figure the contract's views report for `account` in a block at `timestamp`."""
    debt = debt_at(
        account,
        cumulative_index_at(market.interest_rate, timestamp),
        market.fees.fee_interest_bps,
    )
    value = collateral_value(account, market, timestamp)
    return AccountHealth(value, debt, health_factor_wad(value.weighted_value, debt.total))
