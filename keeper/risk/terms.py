"""The weighted value as a sum of per-token terms, computed in bulk over plain lists.

`CreditManager.calcTotalValue` floors each token's conversion, then each token's weighted share,
and adds the shares:

    weighted = sum over held tokens of floor(floor(balance * multiplier / divisor) * lt / 10_000)

where `multiplier / divisor` is `PriceOracle.convert`'s factor into the underlying (the same for
every holder of the token at given prices). So a price update of one token changes every holder's
weighted value by exactly the difference of that one term, and the new terms of all holders are one
list comprehension with the same two factors. Integers only: the result equals
`health.collateral_value(...).weighted_value` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keeper.risk.health import (
    PERCENTAGE_FACTOR,
    AccountHealth,
    CollateralValue,
    PriceUnavailableError,
    checked_price,
    debt_at,
    health_factor_wad,
)
from keeper.state.model import CreditAccountState, Market


@dataclass(frozen=True, slots=True)
class Conversion:
    """How a balance of one token becomes its weighted term at the current prices."""

    multiplier: int
    divisor: int
    threshold_bps: int


def conversions(market: Market, timestamp: int) -> dict[str, Conversion | None]:
    """Every collateral token's conversion; None for a token the oracle cannot price at
    `timestamp` (its own price or, for any token but the underlying, the underlying's)."""
    found: dict[str, Conversion | None] = {}
    try:
        to = checked_price(market.underlying, market.prices.get(market.underlying), timestamp)
    except PriceUnavailableError:
        to = None
    for token, threshold in market.liquidation_thresholds_bps.items():
        if token == market.underlying:
            found[token] = Conversion(1, 1, threshold)
            continue
        try:
            price = checked_price(token, market.prices.get(token), timestamp)
        except PriceUnavailableError:
            found[token] = None
            continue
        if to is None:
            found[token] = None
            continue
        # `health.convert`, with the factor every holder shares split out.
        scale_to = to.token_decimals + to.feed_decimals
        scale_from = price.token_decimals + price.feed_decimals
        if scale_to >= scale_from:
            found[token] = Conversion(
                price.answer * 10 ** (scale_to - scale_from), to.answer, threshold
            )
        else:
            found[token] = Conversion(
                price.answer, to.answer * 10 ** (scale_from - scale_to), threshold
            )
    return found


def weighted_terms(balances: Iterable[int], conversion: Conversion) -> list[int]:
    """Each balance's weighted term, with the contract's two floors."""
    multiplier, divisor, threshold = (
        conversion.multiplier,
        conversion.divisor,
        conversion.threshold_bps,
    )
    if multiplier == divisor == 1:
        return [balance * threshold // PERCENTAGE_FACTOR for balance in balances]
    return [
        balance * multiplier // divisor * threshold // PERCENTAGE_FACTOR for balance in balances
    ]


def _valued_holdings(
    account: CreditAccountState, conversions_: Mapping[str, Conversion | None]
) -> list[tuple[str, int, int]] | None:
    """(token, value in the underlying, weighted term) of every non-zero holding; None when a
    price it needs is unusable (the contract's views revert). A token without a threshold raises
    KeyError, as `health.collateral_value` does."""
    valued = []
    for token, balance in account.balances.items():
        if balance == 0:
            continue
        conversion = conversions_[token]
        if conversion is None:
            return None
        value = balance * conversion.multiplier // conversion.divisor
        valued.append((token, value, value * conversion.threshold_bps // PERCENTAGE_FACTOR))
    return valued


def account_terms(
    account: CreditAccountState, conversions_: Mapping[str, Conversion | None]
) -> dict[str, int] | None:
    """Every non-zero holding's weighted term, by token; None when a price it needs is
    unusable."""
    valued = _valued_holdings(account, conversions_)
    return None if valued is None else {token: term for token, _, term in valued}


def total_debt_at(account: CreditAccountState, index_ray: int, fee_interest_bps: int) -> int:
    """`health.debt_at(account, index_ray, fee_interest_bps).total`, without building `Debt`."""
    principal = account.principal
    new_interest = principal * index_ray // account.cumulative_index_ray - principal
    return (
        principal
        + account.accrued_interest
        + account.accrued_fees
        + new_interest
        + new_interest * fee_interest_bps // PERCENTAGE_FACTOR
    )


def health_at(
    account: CreditAccountState,
    conversions_: Mapping[str, Conversion | None],
    index_ray: int,
    fee_interest_bps: int,
) -> AccountHealth | None:
    """`health.account_health` at pool index `index_ray` from the block's conversions; None when
    a price it needs is unusable (where `account_health` raises)."""
    valued = _valued_holdings(account, conversions_)
    if valued is None:
        return None
    total = sum(value for _, value, _ in valued)
    weighted = sum(term for _, _, term in valued)
    debt = debt_at(account, index_ray, fee_interest_bps)
    return AccountHealth(
        CollateralValue(total, weighted), debt, health_factor_wad(weighted, debt.total)
    )
