"""Plain data for one CreditManager's market and its Credit Accounts.

Every field is the raw integer the contracts store or emit, so the risk math can reproduce the
contracts' rounding exactly. Addresses are checksummed strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """A token's latest feed answer and what the oracle needs to use it."""

    answer: int
    feed_decimals: int
    token_decimals: int
    updated_at: int
    staleness_period: int


@dataclass(frozen=True, slots=True)
class InterestRate:
    """The pool's last `InterestRateUpdated` checkpoint; the index grows linearly from it."""

    cumulative_index_ray: int
    last_update_timestamp: int
    rate_per_second_ray: int


@dataclass(frozen=True, slots=True)
class Fees:
    """Basis-point fees of a CreditManager (`FeesSet`)."""

    fee_interest_bps: int
    liquidation_fee_bps: int
    liquidation_premium_bps: int


@dataclass(frozen=True, slots=True)
class Market:
    """Everything account-independent that a health factor depends on."""

    underlying: str
    interest_rate: InterestRate
    fees: Fees
    liquidation_thresholds_bps: Mapping[str, int]
    prices: Mapping[str, TokenPrice]


@dataclass(frozen=True, slots=True)
class CreditAccountState:
    """One account as `DebtUpdated` and `BalanceUpdated` describe it."""

    address: str
    owner: str
    principal: int
    cumulative_index_ray: int
    accrued_interest: int
    accrued_fees: int
    balances: Mapping[str, int] = field(default_factory=dict)
