"""Keeps every market's `RiskBook` in step with the state, recomputing only what changed.

A price change revalues the accounts holding that token, all at once by replacing their term of
it; an account event, that account; a change of a market's fee or thresholds, that market. Time
matters in two ways only: the pool index (handled by the books' critical index and horizon) and
feeds going stale or fresh, which is checked per feed each block and revalues the holders of a
feed whose freshness flipped.

Per block, `revalue` brings the books up to date and returns the candidates at once; `settle`
does what can wait until the liquidations are queued (moving a horizon the index is nearing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keeper.risk.book import AccountRisk, RiskBook
from keeper.risk.health import (
    PERCENTAGE_FACTOR,
    AccountHealth,
    PriceUnavailableError,
    checked_price,
    cumulative_index_at,
)
from keeper.risk.terms import conversions, health_at
from keeper.state.store import MarketState, PriceKey, ProtocolState, StateChanges

# The horizon is this far (in basis points of the index) above the index when it is set, and
# moves once the index has covered half of that: months of interest at usual rates.
HORIZON_BPS = 100


@dataclass(frozen=True, slots=True)
class Candidate:
    """An account below Hf 1 at `timestamp`, with the exact figures of the contract's views."""

    manager: str
    account: str
    health: AccountHealth
    timestamp: int


@dataclass(frozen=True, slots=True)
class Revaluation:
    """What one block's `revalue` found: every account below 1, and how many it revalued."""

    candidates: list[Candidate]
    revalued: int


class RiskMonitor:
    def __init__(self, state: ProtocolState) -> None:
        self._state = state
        self.books: dict[str, RiskBook] = {manager: RiskBook() for manager in state.markets}
        self._fresh: dict[PriceKey, bool] = {}
        self._index_now: dict[str, int] = {}  # per market, at the last revaluation

    def rebuild(self, timestamp: int) -> None:
        """Values every account from scratch (at start, or after a gap)."""
        self._fresh = self._freshness(timestamp)
        for manager, market in self._state.markets.items():
            view = self._state.market_view(manager)
            index = cumulative_index_at(view.interest_rate, timestamp)
            self._index_now[manager] = index
            book = RiskBook()
            book.revalue_all(
                market.accounts, self._state.holdings(manager), view, timestamp, _horizon(index)
            )
            self.books[manager] = book

    def revalue(self, changes: StateChanges, timestamp: int) -> Revaluation:
        """Revalues what `changes` and the passage of time to `timestamp` touched, and returns
        the accounts below 1 then; call `settle` once they are handled."""
        revalued = self._revalue(changes, timestamp)
        return Revaluation(self.candidates(timestamp), revalued)

    def settle(self) -> None:
        """The upkeep that no candidate waits for: moves each horizon the index is nearing."""
        for manager, book in self.books.items():
            index = self._index_now.get(manager)
            horizon = book.horizon_ray
            if index is not None and horizon is not None and _horizon_due(index, horizon):
                book.set_horizon(_horizon(index))

    def apply(self, changes: StateChanges, timestamp: int) -> int:
        """`revalue` and `settle` without the candidates; returns how many accounts were
        revalued."""
        revalued = self._revalue(changes, timestamp)
        self.settle()
        return revalued

    def candidates(self, timestamp: int) -> list[Candidate]:
        """Accounts whose health factor is below 1 in a block at `timestamp`, exactly."""
        found = []
        for manager, book in self.books.items():
            market = self._state.market_view(manager)
            index = cumulative_index_at(market.interest_rate, timestamp)
            horizon = book.horizon_ray
            if horizon is not None and index > horizon:
                book.set_horizon(_horizon(index))
            accounts = self._state.markets[manager].accounts
            found_conversions = conversions(market, timestamp)
            fee = market.fees.fee_interest_bps
            for address in book.liquidatable(index):
                health = health_at(accounts[address], found_conversions, index, fee)
                # None: a feed went stale since the last revaluation; it revalues then.
                if health is not None and health.is_liquidatable:
                    found.append(Candidate(manager, address, health, timestamp))
        return found

    def unpriced(self) -> list[tuple[str, AccountRisk]]:
        return [(manager, risk) for manager, book in self.books.items() for risk in book.unpriced()]

    def stale_prices(self) -> list[PriceKey]:
        return sorted(key for key, fresh in self._fresh.items() if not fresh)

    def _revalue(self, changes: StateChanges, timestamp: int) -> int:
        freshness = self._freshness(timestamp)
        flipped = {key for key, fresh in freshness.items() if self._fresh.get(key) != fresh}
        self._fresh = freshness
        repriced = changes.prices | flipped
        return sum(
            self._revalue_market(market, changes, repriced, timestamp)
            for market in self._state.markets.values()
        )

    def _revalue_market(
        self, market: MarketState, changes: StateChanges, repriced: set[PriceKey], timestamp: int
    ) -> int:
        """Brings one market's book up to date; returns how many of its accounts it revalued."""
        manager = market.manager
        book = self.books[manager]
        view = self._state.market_view(manager)
        index = cumulative_index_at(view.interest_rate, timestamp)
        self._index_now[manager] = index
        holdings = self._state.holdings(manager)
        for key_manager, address in changes.removed:
            if key_manager == manager:
                book.remove(address)
        horizon = book.horizon_ray
        if horizon is None or not book.valued_with(view):
            book.revalue_all(market.accounts, holdings, view, timestamp, _horizon(index))
            return len(market.accounts)
        if index > horizon:
            book.set_horizon(_horizon(index))
        changed = {
            address
            for key_manager, address in changes.accounts
            if key_manager == manager and address in market.accounts
        }
        tokens = {token for oracle, token in repriced if oracle == market.oracle}
        if market.underlying in tokens:
            # Every other token is converted through the underlying's price.
            tokens = set(holdings) - {market.underlying}
            revalued = len(market.accounts)
        else:
            revalued = _union_size(changed, [holdings.get(token, {}) for token in tokens])
        if changed:
            book.revalue([market.accounts[address] for address in changed], view, timestamp)
        book.reprice(tokens, view, timestamp)
        return revalued

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


def _union_size(changed: set[str], holders: list[Mapping[str, int]]) -> int:
    """How many accounts are in `changed` or hold one of the tokens, without building the set of
    all holders of a single token (tens of thousands at a time)."""
    if len(holders) == 1:
        return len(holders[0]) + sum(address not in holders[0] for address in changed)
    return len(changed.union(*holders))


def _horizon(index_ray: int) -> int:
    return index_ray + index_ray * HORIZON_BPS // PERCENTAGE_FACTOR


def _horizon_due(index_ray: int, horizon_ray: int) -> bool:
    """Whether the index has covered half the way to the horizon set at `horizon_ray`."""
    return (horizon_ray - index_ray) * 2 * PERCENTAGE_FACTOR < index_ray * HORIZON_BPS
