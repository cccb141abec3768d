"""The keeper's exact picture of the protocol, rebuilt from events alone.

Every account-changing event carries absolute values (`BalanceUpdated.balance`, the whole
`DebtUpdated` state), so applying logs in chain order reproduces the contracts' storage without
reading it. `apply` reports what changed, so the risk stage recomputes only what it must: a price
touches the accounts holding that token, an account event that account alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from keeper.protocol.events import (
    AnswerUpdated,
    BalanceUpdated,
    CollateralTokenSet,
    CreditAccountClosed,
    CreditAccountLiquidated,
    CreditAccountOpened,
    CreditManagerInitialized,
    DebtUpdated,
    EmergencyLiquidatorSet,
    FeesSet,
    InterestRateUpdated,
    Paused,
    PriceFeedSet,
    ProtocolEvent,
    Unpaused,
)
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market, TokenPrice

AccountKey = tuple[str, str]  # (credit manager, credit account)
PriceKey = tuple[str, str]  # (oracle, token)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """What `PriceFeedSet` says about a token's feed; the answer arrives separately."""

    feed: str
    token_decimals: int
    feed_decimals: int
    staleness_period: int


@dataclass(slots=True)
class MarketState:
    """One CreditManager: its configuration, permissions and open accounts."""

    manager: str
    underlying: str
    pool: str
    oracle: str
    fees: Fees = field(default_factory=lambda: Fees(0, 0, 0))
    liquidation_thresholds_bps: dict[str, int] = field(default_factory=dict)
    interest_rate: InterestRate | None = None
    paused: bool = False
    emergency_liquidators: set[str] = field(default_factory=set)
    accounts: dict[str, CreditAccountState] = field(default_factory=dict)


@dataclass(slots=True)
class StateChanges:
    """What one batch of events changed, for the risk stage to recompute."""

    accounts: set[AccountKey] = field(default_factory=set)
    removed: set[AccountKey] = field(default_factory=set)
    prices: set[PriceKey] = field(default_factory=set)
    markets: set[str] = field(default_factory=set)
    permissions: set[str] = field(default_factory=set)
    feeds_added: bool = False
    liquidations: list[CreditAccountLiquidated] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.accounts
            or self.removed
            or self.prices
            or self.markets
            or self.permissions
            or self.feeds_added
            or self.liquidations
        )


class UnknownCreditAccountError(LookupError):
    """An account event for an account the keeper never saw opened: history is incomplete."""


class ProtocolState:
    """Markets, accounts and prices of the configured CreditManagers."""

    def __init__(self, markets: Iterable[MarketState]) -> None:
        self.markets: dict[str, MarketState] = {m.manager: m for m in markets}
        self._manager_of_pool = {m.pool: m.manager for m in self.markets.values()}
        self._managers_of_oracle: dict[str, list[str]] = {}
        for market in self.markets.values():
            self._managers_of_oracle.setdefault(market.oracle, []).append(market.manager)
        self.prices: dict[str, dict[str, TokenPrice]] = {o: {} for o in self._managers_of_oracle}
        self.feed_configs: dict[PriceKey, FeedConfig] = {}
        self._price_keys_of_feed: dict[str, set[PriceKey]] = {}
        self._holders: dict[PriceKey, set[AccountKey]] = {}

    # ---------------------------------------------------------------- reading

    def market_view(self, manager: str) -> Market:
        """The plain data the risk math needs for `manager`; prices are the live mapping."""
        market = self.markets[manager]
        if market.interest_rate is None:
            raise LookupError(f"no InterestRateUpdated seen for pool {market.pool}")
        return Market(
            market.underlying,
            market.interest_rate,
            market.fees,
            market.liquidation_thresholds_bps,
            self.prices[market.oracle],
        )

    def holders(self, key: PriceKey) -> set[AccountKey]:
        """Accounts holding a non-zero balance of the token priced by `key`."""
        return self._holders.get(key, set())

    def feeds(self) -> dict[str, set[PriceKey]]:
        return self._price_keys_of_feed

    def watched_addresses(self) -> list[str]:
        """Every contract whose logs the keeper follows."""
        addresses = set(self.markets)
        addresses.update(self._manager_of_pool)
        addresses.update(self._managers_of_oracle)
        addresses.update(self._price_keys_of_feed)
        return sorted(addresses)

    def account_count(self) -> int:
        return sum(len(m.accounts) for m in self.markets.values())

    # ---------------------------------------------------------------- writing

    def set_answer(self, feed: str, answer: int, updated_at: int) -> set[PriceKey]:
        """Records a feed's answer (from `AnswerUpdated` or a `latestRoundData` read) for every
        token it prices; returns the price keys whose price changed."""
        changed = set()
        for key in self._price_keys_of_feed.get(feed, ()):
            config = self.feed_configs[key]
            price = TokenPrice(
                answer,
                config.feed_decimals,
                config.token_decimals,
                updated_at,
                config.staleness_period,
            )
            oracle, token = key
            if self.prices[oracle].get(token) != price:
                self.prices[oracle][token] = price
                changed.add(key)
        return changed

    def apply(self, events: Iterable[ProtocolEvent]) -> StateChanges:
        """Applies events in chain order; returns what changed."""
        changes = StateChanges()
        for event in events:
            self._apply_one(event, changes)
        changes.accounts -= changes.removed
        return changes

    def _apply_one(self, event: ProtocolEvent, changes: StateChanges) -> None:
        match event:
            case AnswerUpdated():
                changes.prices |= self.set_answer(
                    event.position.emitter, event.current, event.updated_at
                )
            case BalanceUpdated():
                self._on_balance(event, changes)
            case DebtUpdated():
                self._on_debt(event, changes)
            case CreditAccountOpened():
                market = self.markets[event.position.emitter]
                market.accounts[event.credit_account] = CreditAccountState(
                    event.credit_account, event.owner, 0, 1, 0, 0, {}
                )
                key = (market.manager, event.credit_account)
                changes.removed.discard(key)
                changes.accounts.add(key)
            case CreditAccountClosed() | CreditAccountLiquidated():
                market = self.markets[event.position.emitter]
                self._drop_account(market, event.credit_account)
                changes.removed.add((market.manager, event.credit_account))
                if isinstance(event, CreditAccountLiquidated):
                    changes.liquidations.append(event)
            case PriceFeedSet():
                self._set_feed(event.position.emitter, event)
                changes.feeds_added = True
            case InterestRateUpdated():
                market = self.markets[self._manager_of_pool[event.position.emitter]]
                market.interest_rate = InterestRate(
                    event.cumulative_index, event.timestamp, event.interest_rate_per_second
                )
                changes.markets.add(market.manager)
            case _:
                self._on_market_setting(event, changes)

    def _on_balance(self, event: BalanceUpdated, changes: StateChanges) -> None:
        market = self.markets[event.position.emitter]
        account = self._account(market, event.credit_account)
        balances = dict(account.balances)
        balances[event.token] = event.balance
        market.accounts[event.credit_account] = replace(account, balances=balances)
        holders = self._holders.setdefault((market.oracle, event.token), set())
        key = (market.manager, event.credit_account)
        if event.balance:
            holders.add(key)
        else:
            holders.discard(key)
        changes.accounts.add(key)

    def _on_debt(self, event: DebtUpdated, changes: StateChanges) -> None:
        market = self.markets[event.position.emitter]
        account = self._account(market, event.credit_account)
        market.accounts[event.credit_account] = replace(
            account,
            principal=event.principal,
            cumulative_index_ray=event.cumulative_index,
            accrued_interest=event.accrued_interest,
            accrued_fees=event.accrued_fees,
        )
        changes.accounts.add((market.manager, event.credit_account))

    def _on_market_setting(self, event: ProtocolEvent, changes: StateChanges) -> None:
        """Configuration and permission events of a CreditManager."""
        market = self.markets[event.position.emitter]
        match event:
            case FeesSet():
                market.fees = Fees(
                    event.fee_interest, event.liquidation_fee, event.liquidation_premium
                )
                changes.markets.add(market.manager)
            case CollateralTokenSet():
                market.liquidation_thresholds_bps[event.token] = event.liquidation_threshold
                changes.markets.add(market.manager)
            case Paused() | Unpaused():
                market.paused = isinstance(event, Paused)
                changes.permissions.add(market.manager)
            case EmergencyLiquidatorSet():
                if event.allowed:
                    market.emergency_liquidators.add(event.liquidator)
                else:
                    market.emergency_liquidators.discard(event.liquidator)
                changes.permissions.add(market.manager)
            case CreditManagerInitialized():
                deployed_with = (event.underlying, event.pool, event.oracle)
                if deployed_with != (market.underlying, market.pool, market.oracle):
                    raise ValueError(
                        f"CreditManager {market.manager} was initialised with {deployed_with}"
                    )

    def _account(self, market: MarketState, address: str) -> CreditAccountState:
        try:
            return market.accounts[address]
        except KeyError:
            raise UnknownCreditAccountError(
                f"event for credit account {address} of {market.manager}, which was never "
                "opened in the logs read: is the deploy block too late?"
            ) from None

    def _drop_account(self, market: MarketState, address: str) -> None:
        account = market.accounts.pop(address, None)
        if account is None:
            return
        for token in account.balances:
            self._holders.get((market.oracle, token), set()).discard((market.manager, address))

    def _set_feed(self, oracle: str, event: PriceFeedSet) -> None:
        key = (oracle, event.token)
        previous = self.feed_configs.get(key)
        if previous is not None:
            keys_of_previous = self._price_keys_of_feed[previous.feed]
            keys_of_previous.discard(key)
            if not keys_of_previous:
                del self._price_keys_of_feed[previous.feed]
        self.feed_configs[key] = FeedConfig(
            event.feed, event.token_decimals, event.feed_decimals, event.staleness_period
        )
        self._price_keys_of_feed.setdefault(event.feed, set()).add(key)
        self.prices.setdefault(oracle, {}).pop(event.token, None)
