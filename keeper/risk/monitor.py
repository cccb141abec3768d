"""Keeps every market's `RiskBook` in step with the state, recomputing only what changed.

A price change revalues the accounts holding that token; an account event, that account; a market
configuration change (fees, thresholds), that market. Time matters in two ways only: the pool
index (handled by the books' critical index) and feeds going stale or fresh, which is checked per
feed each block and revalues the holders of a feed whose freshness flipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeper.risk.book import AccountRisk, RiskBook
from keeper.risk.health import (
    AccountHealth,
    PriceUnavailableError,
    account_health,
    checked_price,
    cumulative_index_at,
)
from keeper.state.store import AccountKey, PriceKey, ProtocolState, StateChanges


@dataclass(frozen=True, slots=True)
class Candidate:
    """An account below Hf 1 at `timestamp`, with the exact figures of the contract's views."""

    manager: str
    account: str
    health: AccountHealth
    timestamp: int


class RiskMonitor:
    def __init__(self, state: ProtocolState) -> None:
        self._state = state
        self.books: dict[str, RiskBook] = {manager: RiskBook() for manager in state.markets}
        self._fresh: dict[PriceKey, bool] = {}

    def rebuild(self, timestamp: int) -> None:
        """Values every account from scratch (at start, or after a gap)."""
        self._fresh = self._freshness(timestamp)
        for manager, market in self._state.markets.items():
            book = RiskBook()
            view = self._state.market_view(manager)
            for account in market.accounts.values():
                book.update(account, view, timestamp)
            self.books[manager] = book

    def apply(self, changes: StateChanges, timestamp: int) -> int:
        """Revalues what `changes` and the passage of time to `timestamp` touched; returns how
        many accounts were revalued."""
        dirty: set[AccountKey] = set(changes.accounts)
        for manager, account in changes.removed:
            self.books[manager].remove(account)
        freshness = self._freshness(timestamp)
        flipped = {key for key, fresh in freshness.items() if self._fresh.get(key) != fresh}
        self._fresh = freshness
        repriced = changes.prices | flipped
        for key in repriced:
            dirty |= self._state.holders(key)
        # Every other token is converted through the underlying's price.
        revalued_markets = changes.markets | {
            manager
            for manager, market in self._state.markets.items()
            if (market.oracle, market.underlying) in repriced
        }
        for manager in revalued_markets:
            dirty |= {(manager, account) for account in self._state.markets[manager].accounts}
        views = {manager: self._state.market_view(manager) for manager in self._state.markets}
        for manager, account in dirty:
            state = self._state.markets[manager].accounts.get(account)
            if state is not None:
                self.books[manager].update(state, views[manager], timestamp)
        return len(dirty)

    def candidates(self, timestamp: int) -> list[Candidate]:
        """Accounts whose health factor is below 1 in a block at `timestamp`, exactly."""
        found = []
        for manager, book in self.books.items():
            market = self._state.market_view(manager)
            index = cumulative_index_at(market.interest_rate, timestamp)
            for address in book.liquidatable(index):
                account = self._state.markets[manager].accounts[address]
                try:
                    health = account_health(account, market, timestamp)
                except PriceUnavailableError:
                    continue  # a feed went stale since the last `apply`; it revalues then
                if health.is_liquidatable:
                    found.append(Candidate(manager, address, health, timestamp))
        return found

    def unpriced(self) -> list[tuple[str, AccountRisk]]:
        return [(manager, risk) for manager, book in self.books.items() for risk in book.unpriced()]

    def stale_prices(self) -> list[PriceKey]:
        return sorted(key for key, fresh in self._fresh.items() if not fresh)

    def _freshness(self, timestamp: int) -> dict[PriceKey, bool]:
        freshness = {}
        for oracle, token in self._state.feed_configs:
            try:
                checked_price(token, self._state.prices[oracle].get(token), timestamp)
            except PriceUnavailableError:
                freshness[(oracle, token)] = False
            else:
                freshness[(oracle, token)] = True
        return freshness
