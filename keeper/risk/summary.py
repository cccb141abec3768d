"""How a market's accounts are spread over health-factor ranges, for dashboards.

Exact where it matters: each account's health factor is the contract's integer one at the given
timestamp, from the weighted value the book holds and the debt at the pool's index then. The
ranges are what an operator watches to see trouble coming; nothing here decides a liquidation.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeper.risk.health import WAD, cumulative_index_at, health_factor_wad
from keeper.risk.monitor import RiskMonitor
from keeper.risk.terms import total_debt_at
from keeper.state.store import ProtocolState

# (label, lower bound inclusive in WAD); an account falls in the last range whose bound it reaches.
HEALTH_RANGES: tuple[tuple[str, int], ...] = (
    ("below_1", 0),
    ("1_to_1.05", WAD),
    ("1.05_to_1.1", WAD * 105 // 100),
    ("1.1_to_1.25", WAD * 110 // 100),
    ("1.25_to_1.5", WAD * 125 // 100),
    ("1.5_to_2", WAD * 150 // 100),
    ("2_or_more", WAD * 2),
)
UNPRICED = "unpriced"


@dataclass(frozen=True, slots=True)
class MarketHealth:
    accounts_by_range: dict[str, int]
    lowest_health_factor_wad: int | None  # None: no priced account with debt


def market_health(
    state: ProtocolState, monitor: RiskMonitor, timestamp: int
) -> dict[str, MarketHealth]:
    """Per CreditManager: accounts per range (every label present, zeros included) and the
    lowest health factor, at `timestamp`."""
    summaries = {}
    for manager, book in monitor.books.items():
        market = state.markets[manager]
        counts = dict.fromkeys([label for label, _ in HEALTH_RANGES] + [UNPRICED], 0)
        lowest: int | None = None
        if market.interest_rate is not None:
            index = cumulative_index_at(market.interest_rate, timestamp)
            fee_bps = market.fees.fee_interest_bps
            counts[UNPRICED] = len(book.unpriced())
            for address, weighted in book.weighted_values().items():
                total_debt = total_debt_at(market.accounts[address], index, fee_bps)
                health = health_factor_wad(weighted, total_debt)
                counts[_range_of(health)] += 1
                if total_debt and (lowest is None or health < lowest):
                    lowest = health
        summaries[manager] = MarketHealth(counts, lowest)
    return summaries


def _range_of(health_factor: int) -> str:
    label = HEALTH_RANGES[0][0]
    for name, bound in HEALTH_RANGES:
        if health_factor < bound:
            break
        label = name
    return label
