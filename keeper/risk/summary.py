"""How a market's accounts are spread over health-factor ranges, for dashboards.

Exact where it matters: each account's health factor is the contract's integer one at the given
timestamp, from the weighted value the book holds and the debt at the pool's index then. The
ranges are what an operator watches to see trouble coming; nothing here decides a liquidation.

At 100,000 accounts the census is ~150 ms of CPU, so it is taken a slice of accounts at a time
(`HealthCensus.advance`): a caller in the event loop yields between slices, and a new head never
waits for more than one slice. The weighted values and account states are taken when the census
starts, so it describes that one moment even if blocks are processed while it runs.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat

from keeper.risk.book import Valuations
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
_LABELS = [label for label, _ in HEALTH_RANGES]
_BOUNDS = [bound for _, bound in HEALTH_RANGES]


@dataclass(frozen=True, slots=True)
class MarketHealth:
    accounts_by_range: dict[str, int]
    lowest_health_factor_wad: int | None  # None: no priced account with debt


@dataclass(slots=True)
class _MarketCensus:
    """One market's accounts still to count, and the counts so far."""

    valuations: Valuations
    index_ray: int
    fee_interest_bps: int
    unpriced: int
    counts: Counter[int] = field(default_factory=Counter)  # range position -> accounts
    lowest: int | None = None
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.done == len(self.valuations)

    def count(self, accounts: int) -> int:
        """Counts up to `accounts` more accounts; returns how many it counted."""
        start, stop = self.done, min(self.done + accounts, len(self.valuations))
        states = map(self.valuations.states.__getitem__, self.valuations.holders[start:stop])
        debts = list(
            map(total_debt_at, states, repeat(self.index_ray), repeat(self.fee_interest_bps))
        )
        health = list(map(health_factor_wad, self.valuations.weighted(start, stop), debts))
        # A bound belongs to the range above it: the range is the last bound <= the factor.
        self.counts.update(bisect_right(_BOUNDS, factor) - 1 for factor in health)
        with_debt = [factor for factor, debt in zip(health, debts, strict=True) if debt]
        if with_debt:
            lowest = min(with_debt)
            self.lowest = lowest if self.lowest is None else min(self.lowest, lowest)
        self.done = stop
        return stop - start

    def result(self) -> MarketHealth:
        counts = {label: self.counts[position] for position, label in enumerate(_LABELS)}
        counts[UNPRICED] = self.unpriced
        return MarketHealth(counts, self.lowest)


class HealthCensus:
    """Every market's accounts per range (every label present, zeros included) and the lowest
    health factor at `timestamp`, counted a slice at a time."""

    def __init__(self, state: ProtocolState, monitor: RiskMonitor, timestamp: int) -> None:
        self._markets: dict[str, _MarketCensus] = {}
        for manager, book in monitor.books.items():
            market = state.markets[manager]
            if market.interest_rate is None:
                census = _MarketCensus(Valuations([], [], [], [], {}), 0, 0, 0)
            else:
                census = _MarketCensus(
                    book.valuations(),
                    cumulative_index_at(market.interest_rate, timestamp),
                    market.fees.fee_interest_bps,
                    len(book.unpriced()),
                )
            self._markets[manager] = census

    def __len__(self) -> int:
        """Accounts to count, in all."""
        return sum(len(census.valuations) for census in self._markets.values())

    def advance(self, accounts: int) -> bool:
        """Counts up to `accounts` more accounts; True once every account is counted."""
        left = accounts
        for census in self._markets.values():
            left -= census.count(left)
        return all(census.finished for census in self._markets.values())

    def result(self) -> dict[str, MarketHealth]:
        return {manager: census.result() for manager, census in self._markets.items()}


def market_health(
    state: ProtocolState, monitor: RiskMonitor, timestamp: int
) -> dict[str, MarketHealth]:
    """The whole census at once (tests, one-shot reports)."""
    census = HealthCensus(state, monitor, timestamp)
    census.advance(len(census))
    return census.result()
