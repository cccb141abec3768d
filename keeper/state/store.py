"""The keeper's exact picture of the protocol, rebuilt from events alone.

Every account-changing event carries absolute values (`BalanceUpdated.balance`, the whole
`DebtUpdated` state), so applying logs in chain order reproduces the contracts' storage without
reading it. `apply` reports what changed, so the risk stage recomputes only what it must: a price
touches the accounts holding that token, an account event that account alone.

Reorgs: applied with `undoable=True`, events leave behind, per block, the value each item had
before the block first changed it, so `rollback` can return to a recent block without re-reading
history. Only events are recorded: a price set by `set_answer` outside an event (feed polling) is
not, and after a rollback the caller re-reads the feeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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

    def merge(self, later: StateChanges) -> None:
        """Adds what `later` (a batch applied after this one) changed, so one set of changes
        covers both, e.g. a rollback and the new branch's blocks."""
        self.accounts = (self.accounts - later.removed) | later.accounts
        self.removed = (self.removed - later.accounts) | later.removed
        self.prices |= later.prices
        self.markets |= later.markets
        self.permissions |= later.permissions
        self.feeds_added = self.feeds_added or later.feeds_added
        self.liquidations += later.liquidations


class UnknownCreditAccountError(LookupError):
    """An account event for an account the keeper never saw opened: history is incomplete."""


class UndoUnavailableError(LookupError):
    """A rollback below the oldest block the state kept undo records for."""


@dataclass(frozen=True, slots=True)
class _MarketSettings:
    """A market's settings as they were before a block changed them (copies, never live)."""

    fees: Fees
    liquidation_thresholds_bps: dict[str, int]
    interest_rate: InterestRate | None
    paused: bool
    emergency_liquidators: frozenset[str]


@dataclass(slots=True)
class _BlockUndo:
    """What one block's events changed, each item's value from before the block (None: absent)."""

    accounts: dict[AccountKey, CreditAccountState | None] = field(default_factory=dict)
    markets: dict[str, _MarketSettings] = field(default_factory=dict)
    prices: dict[PriceKey, TokenPrice | None] = field(default_factory=dict)
    feeds: dict[PriceKey, FeedConfig | None] = field(default_factory=dict)


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
        # manager -> token -> account -> its non-zero balance: the holders of each token, with
        # the balances a price change revalues, in one place (the risk stage reads them in bulk).
        self._holdings: dict[str, dict[str, dict[str, int]]] = {m: {} for m in self.markets}
        # Undo: every change by an event in a block above `_undo_floor` is recorded in `_undo`.
        self._undo: dict[int, _BlockUndo] = {}
        self._undo_floor: int | None = None
        self._recording: _BlockUndo | None = None
        self._last_block: int | None = None  # of the latest event applied
        self._last_unrecorded_block: int | None = None  # of the latest event applied unrecorded

    @classmethod
    def restored(
        cls,
        markets: Iterable[MarketState],
        feed_configs: Mapping[PriceKey, FeedConfig],
        prices: Mapping[str, Mapping[str, TokenPrice]],
        *,
        block_number: int,
    ) -> ProtocolState:
        """The state as saved at `block_number` (markets with their accounts), with every derived
        index rebuilt as applying the events would have; nothing at or below `block_number` can
        be rolled back."""
        state = cls(markets)
        for key, config in feed_configs.items():
            state.feed_configs[key] = config
            state._price_keys_of_feed.setdefault(config.feed, set()).add(key)
        for oracle, by_token in prices.items():
            state.prices.setdefault(oracle, {}).update(by_token)
        for market in state.markets.values():
            for address, account in market.accounts.items():
                state._hold(market.manager, address, account.balances)
        state._last_block = state._last_unrecorded_block = block_number
        return state

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
        oracle, token = key
        return {
            (manager, address)
            for manager in self._managers_of_oracle.get(oracle, ())
            for address in self._holdings[manager].get(token, {})
        }

    def holdings(self, manager: str) -> Mapping[str, Mapping[str, int]]:
        """Token -> account -> non-zero balance, for the accounts of `manager`'s market (live)."""
        return self._holdings[manager]

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
        token it prices; returns the price keys whose price changed. Called directly (a read),
        the change is never recorded for undo."""
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
                self._before_price(key)
                self.prices[oracle][token] = price
                changed.add(key)
        return changed

    def apply(self, events: Iterable[ProtocolEvent], *, undoable: bool = False) -> StateChanges:
        """Applies events in chain order; returns what changed. With `undoable`, what each block
        changes is recorded first, so `rollback` can undo it."""
        changes = StateChanges()
        try:
            for event in events:
                block = event.position.block_number
                self._last_block = _highest(block, self._last_block)
                if undoable:
                    self._recording = self._undo_record(block)
                else:
                    self._note_unrecorded(block)
                self._apply_one(event, changes)
        finally:
            self._recording = None
        changes.accounts -= changes.removed
        return changes

    # ---------------------------------------------------------------- undo

    def undo_floor(self) -> int | None:
        """The lowest block `rollback` can return to; None until a block is recorded or
        `discard_undo` is called (until then no rollback below the latest event's block)."""
        return self._undo_floor

    def discard_undo(self, through_block: int) -> None:
        """Forgets the records of blocks up to `through_block` (deeper than any reorg to undo).
        The floor rises to `through_block`, even with nothing recorded: every later event is
        either recorded or raises the floor to its own block."""
        for block in [b for b in self._undo if b <= through_block]:
            del self._undo[block]
        self._undo_floor = _highest(through_block, self._undo_floor, self._last_unrecorded_block)

    def rollback(self, to_block: int) -> StateChanges:
        """Undoes every block above `to_block`; returns what that changed, for the risk stage.
        Prices set by `set_answer` outside events are not undone: re-read the feeds after."""
        changes = StateChanges()
        if self._last_block is None or to_block >= self._last_block:
            return changes
        if self._undo_floor is None or to_block < self._undo_floor:
            raise UndoUnavailableError(
                f"cannot roll back to block {to_block}: undo records reach down to block "
                f"{self._undo_floor}; re-read the history instead"
            )
        undone = sorted(b for b in self._undo if b > to_block)
        # The value from before the lowest block that touched an item is the one at `to_block`.
        oldest = _BlockUndo()
        for block in undone:
            record = self._undo.pop(block)
            for account_key, account in record.accounts.items():
                oldest.accounts.setdefault(account_key, account)
            for manager, settings in record.markets.items():
                oldest.markets.setdefault(manager, settings)
            for price_key, price in record.prices.items():
                oldest.prices.setdefault(price_key, price)
            for price_key, config in record.feeds.items():
                oldest.feeds.setdefault(price_key, config)
        for account_key, account in oldest.accounts.items():
            self._restore_account(account_key, account, changes)
        for manager, settings in oldest.markets.items():
            self._restore_market(manager, settings, changes)
        for price_key, config in oldest.feeds.items():
            self._restore_feed(price_key, config, changes)
        for price_key, price in oldest.prices.items():
            self._restore_price(price_key, price, changes)
        self._last_block = to_block
        return changes

    def _undo_record(self, block: int) -> _BlockUndo | None:
        """Where to record the changes of `block`; None when the state cannot roll back below
        it anyway (a change in that block went unrecorded, or its records were discarded)."""
        if self._undo_floor is None:
            self._undo_floor = _highest(block - 1, self._last_unrecorded_block)
        if block <= self._undo_floor:
            return None
        return self._undo.setdefault(block, _BlockUndo())

    def _note_unrecorded(self, block: int) -> None:
        """An unrecorded change in `block`: no rollback below it any more."""
        self._last_unrecorded_block = _highest(block, self._last_unrecorded_block)
        if self._undo_floor is not None and block > self._undo_floor:
            self.discard_undo(block)

    def _before_account(self, key: AccountKey) -> None:
        if self._recording is not None and key not in self._recording.accounts:
            manager, address = key
            self._recording.accounts[key] = self.markets[manager].accounts.get(address)

    def _before_market(self, market: MarketState) -> None:
        if self._recording is not None and market.manager not in self._recording.markets:
            self._recording.markets[market.manager] = _MarketSettings(
                market.fees,
                dict(market.liquidation_thresholds_bps),
                market.interest_rate,
                market.paused,
                frozenset(market.emergency_liquidators),
            )

    def _before_price(self, key: PriceKey) -> None:
        if self._recording is not None and key not in self._recording.prices:
            oracle, token = key
            self._recording.prices[key] = self.prices.get(oracle, {}).get(token)

    def _before_feed(self, key: PriceKey) -> None:
        if self._recording is not None and key not in self._recording.feeds:
            self._recording.feeds[key] = self.feed_configs.get(key)

    def _restore_account(
        self, key: AccountKey, previous: CreditAccountState | None, changes: StateChanges
    ) -> None:
        manager, address = key
        market = self.markets[manager]
        current = market.accounts.get(address)
        if current == previous:
            return
        if current is not None:
            self._release(manager, address, current.balances)
        if previous is None:
            del market.accounts[address]
            changes.removed.add(key)
            return
        market.accounts[address] = previous
        self._hold(manager, address, previous.balances)
        changes.accounts.add(key)

    def _restore_market(
        self, manager: str, previous: _MarketSettings, changes: StateChanges
    ) -> None:
        market = self.markets[manager]
        if (market.fees, market.liquidation_thresholds_bps, market.interest_rate) != (
            previous.fees,
            previous.liquidation_thresholds_bps,
            previous.interest_rate,
        ):
            changes.markets.add(manager)
        if market.paused != previous.paused or frozenset(market.emergency_liquidators) != (
            previous.emergency_liquidators
        ):
            changes.permissions.add(manager)
        market.fees = previous.fees
        market.interest_rate = previous.interest_rate
        market.paused = previous.paused
        # In place: views handed out earlier hold these very containers.
        market.liquidation_thresholds_bps.clear()
        market.liquidation_thresholds_bps.update(previous.liquidation_thresholds_bps)
        market.emergency_liquidators.clear()
        market.emergency_liquidators.update(previous.emergency_liquidators)

    def _restore_feed(
        self, key: PriceKey, previous: FeedConfig | None, changes: StateChanges
    ) -> None:
        current = self.feed_configs.get(key)
        if current == previous:
            return
        if current is not None:
            self._forget_feed_key(current.feed, key)
        if previous is None:
            del self.feed_configs[key]
        else:
            self.feed_configs[key] = previous
            self._price_keys_of_feed.setdefault(previous.feed, set()).add(key)
        changes.feeds_added = True
        changes.prices.add(key)

    def _restore_price(
        self, key: PriceKey, previous: TokenPrice | None, changes: StateChanges
    ) -> None:
        oracle, token = key
        prices = self.prices.setdefault(oracle, {})
        if prices.get(token) == previous:
            return
        if previous is None:
            del prices[token]
        else:
            prices[token] = previous
        changes.prices.add(key)

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
                key = (market.manager, event.credit_account)
                self._before_account(key)
                market.accounts[event.credit_account] = CreditAccountState(
                    event.credit_account, event.owner, 0, 1, 0, 0, {}
                )
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
                self._before_market(market)
                market.interest_rate = InterestRate(
                    event.cumulative_index, event.timestamp, event.interest_rate_per_second
                )
                changes.markets.add(market.manager)
            case _:
                self._on_market_setting(event, changes)

    def _on_balance(self, event: BalanceUpdated, changes: StateChanges) -> None:
        market = self.markets[event.position.emitter]
        account = self._account(market, event.credit_account)
        key = (market.manager, event.credit_account)
        self._before_account(key)
        balances = dict(account.balances)
        balances[event.token] = event.balance
        market.accounts[event.credit_account] = replace(account, balances=balances)
        holders = self._holdings[market.manager].setdefault(event.token, {})
        if event.balance:
            holders[event.credit_account] = event.balance
        else:
            holders.pop(event.credit_account, None)
        changes.accounts.add(key)

    def _on_debt(self, event: DebtUpdated, changes: StateChanges) -> None:
        market = self.markets[event.position.emitter]
        account = self._account(market, event.credit_account)
        self._before_account((market.manager, event.credit_account))
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
        if not isinstance(event, CreditManagerInitialized):
            self._before_market(market)
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
        self._before_account((market.manager, address))
        account = market.accounts.pop(address, None)
        if account is not None:
            self._release(market.manager, address, account.balances)

    def _hold(self, manager: str, address: str, balances: Mapping[str, int]) -> None:
        holdings = self._holdings[manager]
        for token, balance in balances.items():
            if balance:
                holdings.setdefault(token, {})[address] = balance

    def _release(self, manager: str, address: str, balances: Mapping[str, int]) -> None:
        holdings = self._holdings[manager]
        for token in balances:
            holders = holdings.get(token)
            if holders is not None:
                holders.pop(address, None)

    def _set_feed(self, oracle: str, event: PriceFeedSet) -> None:
        key = (oracle, event.token)
        self._before_feed(key)
        self._before_price(key)
        previous = self.feed_configs.get(key)
        if previous is not None:
            self._forget_feed_key(previous.feed, key)
        self.feed_configs[key] = FeedConfig(
            event.feed, event.token_decimals, event.feed_decimals, event.staleness_period
        )
        self._price_keys_of_feed.setdefault(event.feed, set()).add(key)
        self.prices.setdefault(oracle, {}).pop(event.token, None)

    def _forget_feed_key(self, feed: str, key: PriceKey) -> None:
        """`feed` no longer prices `key`; a feed pricing nothing is no longer watched."""
        keys = self._price_keys_of_feed[feed]
        keys.discard(key)
        if not keys:
            del self._price_keys_of_feed[feed]


def _highest(block: int, *others: int | None) -> int:
    return max([block, *(other for other in others if other is not None)])
