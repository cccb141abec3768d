"""Which accounts are liquidatable now, without recomputing every account every block.

An account is liquidatable exactly when its total debt exceeds its weighted value
(`TWV * 1e18 / debt < 1e18` <=> `TWV < debt`, floors included). Between two events the weighted
value is fixed (prices and balances do not move) and the debt grows only through the pool's
cumulative index, which is the same for every account of a market and never decreases. So each
account has a *critical index*: the smallest pool index at which its debt exceeds its weighted
value. Keeping accounts sorted by it per market turns "who is under 1 at this block" into a
prefix of a sorted list, and interest is accounted every block by computing one number, the
market's index at the block's timestamp.

The order is also the order in which interest alone would liquidate the accounts, so the accounts
nearest to liquidation are always at the front.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from keeper.risk.health import PERCENTAGE_FACTOR, PriceUnavailableError, collateral_value
from keeper.state.model import CreditAccountState, Market

# Sorts after every real index: the account never becomes liquidatable through interest.
NEVER = 2**256


def critical_index(account: CreditAccountState, weighted_value: int, fee_interest_bps: int) -> int:
    """The smallest pool index at which `account`'s debt (as `CreditManager.calcDebt` computes it)
    exceeds `weighted_value`; `NEVER` if no index does.

    With n(i) = floor(principal * i / cumulativeIndex) - principal the new interest at index i,
    debt(i) = principal + accruedInterest + accruedFees + n + floor(n * feeInterest / 10_000).
    Both floors can be inverted exactly, so the boundary has a closed form in integers.
    """
    principal = account.principal
    fixed_debt = principal + account.accrued_interest + account.accrued_fees
    headroom = weighted_value - fixed_debt
    if headroom < 0:
        return account.cumulative_index_ray
    if principal == 0:
        return NEVER

    # Smallest new interest n with n + floor(n * fee / 10_000) > headroom. The bound is an
    # integer, so floor(n * fee / 10_000) >= headroom + 1 - n <=> n * fee / 10_000 >= that,
    # <=> n >= (headroom + 1) * 10_000 / (10_000 + fee): one ceiling division, exact.
    new_interest = -(-(headroom + 1) * PERCENTAGE_FACTOR // (PERCENTAGE_FACTOR + fee_interest_bps))
    # Smallest index with floor(principal * i / cumulativeIndex) >= principal + new_interest.
    return -(-(principal + new_interest) * account.cumulative_index_ray // principal)


@dataclass(frozen=True, slots=True)
class AccountRisk:
    """Where one account stands, at the prices it was last valued with."""

    account: str
    weighted_value: int
    critical_index_ray: int
    unpriced: PriceUnavailableError | None

    @property
    def valued(self) -> bool:
        return self.unpriced is None


class RiskBook:
    """One market's accounts, sorted by critical index."""

    def __init__(self) -> None:
        self._order: list[tuple[int, str]] = []
        self._risks: dict[str, AccountRisk] = {}

    def __len__(self) -> int:
        return len(self._risks)

    def __contains__(self, account: str) -> bool:
        return account in self._risks

    def get(self, account: str) -> AccountRisk | None:
        return self._risks.get(account)

    def update(self, account: CreditAccountState, market: Market, timestamp: int) -> AccountRisk:
        """Values `account` with `market`'s prices as the oracle would accept them at
        `timestamp`, and files it under its new critical index."""
        try:
            weighted = collateral_value(account, market, timestamp).weighted_value
        except PriceUnavailableError as error:
            risk = AccountRisk(account.address, 0, NEVER, error)
        else:
            risk = AccountRisk(
                account.address,
                weighted,
                critical_index(account, weighted, market.fees.fee_interest_bps),
                None,
            )
        self.remove(account.address)
        self._risks[account.address] = risk
        bisect.insort(self._order, (risk.critical_index_ray, account.address))
        return risk

    def remove(self, account: str) -> None:
        risk = self._risks.pop(account, None)
        if risk is None:
            return
        entry = (risk.critical_index_ray, account)
        position = bisect.bisect_left(self._order, entry)
        del self._order[position]

    def liquidatable(self, index_ray: int) -> list[str]:
        """Accounts whose debt exceeds their weighted value at pool index `index_ray`."""
        end = bisect.bisect_right(self._order, (index_ray, "\uffff"))
        return [account for _, account in self._order[:end]]

    def unpriced(self) -> list[AccountRisk]:
        """Accounts that cannot be valued (and so cannot be liquidated) right now."""
        return [risk for risk in self._risks.values() if not risk.valued]

    def nearest(self) -> Iterator[AccountRisk]:
        """Accounts from the nearest to liquidation to the farthest."""
        return (self._risks[account] for _, account in self._order)
