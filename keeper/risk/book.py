"""Which accounts are liquidatable now, without recomputing every account every block.

An account is liquidatable exactly when its total debt exceeds its weighted value
(`TWV * 1e18 / debt < 1e18` <=> `TWV < debt`, floors included). Between two events the weighted
value is fixed (prices and balances do not move) and the debt grows only through the pool's
cumulative index, which is the same for every account of a market and never decreases. So each
account has a *critical index*: the smallest pool index at which its debt exceeds its weighted
value, and "who is under 1 at this block" is every account whose critical index the market's index
at the block's timestamp has reached. Interest is accounted every block by computing that one
number.

Most accounts are far from it. The book sets a *horizon* a little above the index now and keeps
each account's debt at that index: an account whose weighted value covers it (almost all of them)
cannot be reached by interest before the horizon, so only the others ("near" accounts) carry a
critical index. A block is checked against the near accounts alone, and the horizon moves forward
(one pass over the accounts) when the index gets close to it.

Weighted values are kept as per-token terms (`keeper.risk.terms`). Each token but the underlying
has a column: its holders, in one order, with their balance, their term of the token, their debt at
the horizon and their *need* (that debt minus the rest of their weighted value: the term that keeps
the account far), as aligned plain lists. A price update of the token computes every holder's new
term in one pass over the balances and compares it with the need in a second pass: no lookup per
holder, and the sums stay exactly the contract's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import add, lt, sub

from keeper.risk.health import (
    PERCENTAGE_FACTOR,
    PriceUnavailableError,
    collateral_value,
)
from keeper.risk.terms import (
    Conversion,
    account_terms,
    conversions,
    total_debt_at,
    weighted_terms,
)
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


@dataclass(slots=True)
class _Column:
    """The valued holders of one token (never the underlying), as aligned lists: what a price
    update of the token reads, holder after holder, without a lookup."""

    holders: list[str] = field(default_factory=list)
    balances: list[int] = field(default_factory=list)
    terms: list[int] = field(default_factory=list)  # weighted term of this token
    bounds: list[int] = field(default_factory=list)  # the holder's debt at the horizon
    # The bound minus the rest of the holder's weighted value: far exactly while term >= need.
    needs: list[int] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    # Holders also in another column: a new term here moves their need there.
    shared: set[str] = field(default_factory=set)

    def add(self, account: str, balance: int, term: int, weighted: int, bound: int) -> None:
        self.position[account] = len(self.holders)
        self.holders.append(account)
        self.balances.append(balance)
        self.terms.append(term)
        self.bounds.append(bound)
        self.needs.append(bound - (weighted - term))

    def discard(self, account: str) -> None:
        """Drops `account` by moving the last holder into its place."""
        position = self.position.pop(account, None)
        if position is None:
            return
        self.shared.discard(account)
        numbers = (self.balances, self.terms, self.bounds, self.needs)
        moved = self.holders.pop()
        if moved != account:
            self.holders[position] = moved
            self.position[moved] = position
            for row in numbers:
                row[position] = row[-1]
        for row in numbers:
            row.pop()

    def weighted(self, position: int) -> int:
        """The holder's weighted value: its term plus the rest (bound minus need)."""
        return self.terms[position] + self.bounds[position] - self.needs[position]

    def weighted_values(self) -> Iterator[int]:
        return map(sub, map(add, self.terms, self.bounds), self.needs)


@dataclass(frozen=True, slots=True)
class Valuations:
    """Every valued account once, with its weighted value kept as the book keeps it (term plus
    bound minus need), in copies of the book's lists: taken with a few list copies and no work
    per account, then read a slice at a time while the book moves on."""

    holders: list[str]
    terms: list[int]
    bounds: list[int]
    needs: list[int]
    states: dict[str, CreditAccountState]  # as valued

    def __len__(self) -> int:
        return len(self.holders)

    def weighted(self, start: int, stop: int) -> list[int]:
        """The weighted values of the accounts at positions `start` to `stop`."""
        terms, bounds, needs = (row[start:stop] for row in (self.terms, self.bounds, self.needs))
        return list(map(sub, map(add, terms, bounds), needs))


class RiskBook:
    """One market's accounts: their weighted values as per-token terms and their debts at the
    horizon, and the critical index of those near liquidation.

    Without a horizon (`set_horizon` never called) every valued account counts as near."""

    def __init__(self) -> None:
        self._accounts: dict[str, CreditAccountState] = {}  # as last valued
        self._columns: dict[str, _Column] = {}  # by token
        self._plain: dict[str, int] = {}  # weighted value of valued accounts in no column
        self._unpriced: dict[str, PriceUnavailableError] = {}
        self._near: dict[str, int] = {}  # account -> critical index
        self._horizon: int | None = None
        # What the values were computed with; any change revalues every account.
        self._underlying = ""
        self._fee_interest_bps = 0
        self._thresholds: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def __contains__(self, account: str) -> bool:
        return account in self._accounts

    @property
    def horizon_ray(self) -> int | None:
        return self._horizon

    def get(self, account: str) -> AccountRisk | None:
        return self._risk(account) if account in self._accounts else None

    def weighted_values(self) -> dict[str, int]:
        """Weighted value of every valued account (built on each call)."""
        found = dict(self._plain)
        for column in self._columns.values():
            found.update(zip(column.holders, column.weighted_values(), strict=True))
        return found

    def valuations(self) -> Valuations:
        """A copy of every valued account's weighted value, to read later in slices."""
        holders: list[str] = []
        terms: list[int] = []
        bounds: list[int] = []
        needs: list[int] = []
        listed: set[str] = set()  # holders of several tokens, once listed in a column
        for column in self._columns.values():
            numbers = ((terms, column.terms), (bounds, column.bounds), (needs, column.needs))
            if listed and not listed.isdisjoint(column.shared):
                unlisted = [holder not in listed for holder in column.holders]
                holders.extend(compress(column.holders, unlisted))
                for copy, row in numbers:
                    copy.extend(compress(row, unlisted))
            else:
                holders.extend(column.holders)
                for copy, row in numbers:
                    copy.extend(row)
            listed.update(column.shared)
        holders.extend(self._plain)
        terms.extend(self._plain.values())
        bounds.extend(repeat(0, len(self._plain)))
        needs.extend(repeat(0, len(self._plain)))
        return Valuations(holders, terms, bounds, needs, dict(self._accounts))

    def unpriced(self) -> list[AccountRisk]:
        """Accounts that cannot be valued (and so cannot be liquidated) right now."""
        return [AccountRisk(account, 0, NEVER, error) for account, error in self._unpriced.items()]

    def liquidatable(self, index_ray: int) -> list[str]:
        """Accounts whose debt exceeds their weighted value at pool index `index_ray`, by
        critical index. Beyond the horizon this walks every account."""
        if self._horizon is not None and index_ray > self._horizon:
            return [r.account for r in self.nearest() if r.critical_index_ray <= index_ray]
        return [a for _, a in sorted((c, a) for a, c in self._near.items() if c <= index_ray)]

    def nearest(self) -> Iterator[AccountRisk]:
        """Every account from the nearest to liquidation to the farthest (unpriced ones last).
        Computes every critical index and sorts: for reports and tests, not for each block."""
        risks = [self._risk(account) for account in self._accounts]
        return iter(sorted(risks, key=lambda risk: (risk.critical_index_ray, risk.account)))

    def valued_with(self, market: Market) -> bool:
        """Whether the values were computed with `market`'s underlying, fee and thresholds."""
        return (
            self._underlying == market.underlying
            and self._fee_interest_bps == market.fees.fee_interest_bps
            and self._thresholds == market.liquidation_thresholds_bps
        )

    # ---------------------------------------------------------------- writing

    def update(self, account: CreditAccountState, market: Market, timestamp: int) -> AccountRisk:
        """Values `account` with `market`'s prices as the oracle would accept them at
        `timestamp` and files it (every account again if `market`'s fee or thresholds moved)."""
        self.revalue([account], market, timestamp)
        return self._risk(account.address)

    def revalue(
        self, accounts: Iterable[CreditAccountState], market: Market, timestamp: int
    ) -> None:
        """Values each of `accounts` alone (new or changed accounts)."""
        if not self.valued_with(market):
            for account in accounts:
                self._accounts[account.address] = account
            self._set_config(market)
            accounts = list(self._accounts.values())
        found = conversions(market, timestamp)
        for account in accounts:
            self._value(account, found, market, timestamp)

    def revalue_all(
        self,
        accounts: Mapping[str, CreditAccountState],
        holdings: Mapping[str, Mapping[str, int]],
        market: Market,
        timestamp: int,
        horizon_ray: int,
    ) -> None:
        """Values every account of the market from scratch, token by token in bulk: `holdings`
        is token -> account -> non-zero balance, for exactly `accounts`."""
        self._set_config(market)
        self._accounts = dict(accounts)
        self._columns, self._plain, self._unpriced, self._near = {}, {}, {}, {}
        self._horizon = horizon_ray
        found = conversions(market, timestamp)
        weighted = dict.fromkeys(accounts, 0)
        unpriced: set[str] = set()
        column_terms: dict[str, list[int]] = {}
        for token, holders in holdings.items():
            if not holders:
                continue
            conversion = found[token]
            if conversion is None:
                unpriced.update(holders)
                continue
            terms = weighted_terms(holders.values(), conversion)
            # weighted[account] += term for each holder, iterated in C.
            sums = map(add, map(weighted.__getitem__, holders), terms)
            weighted.update(zip(holders, sums, strict=True))
            if token != market.underlying:
                column_terms[token] = terms
        for account in unpriced:
            del weighted[account]
            self._unpriced[account] = _price_error(accounts[account], market, timestamp)
        bounds = self._bounds_at(horizon_ray)
        for token, terms in column_terms.items():
            column = _column(holdings[token], terms, weighted, bounds, unpriced)
            self._columns[token] = column
        columns = self._columns.values()
        in_columns = set().union(*(column.position for column in columns))
        if len(in_columns) < sum(len(column.holders) for column in columns):
            held = Counter(chain.from_iterable(column.holders for column in columns))
            shared = {account for account, count in held.items() if count > 1}
            for column in columns:
                column.shared = shared.intersection(column.position)
        self._plain = {account: weighted[account] for account in weighted.keys() - in_columns}
        self._near = self._near_among(weighted, bounds)

    def reprice(self, tokens: Iterable[str], market: Market, timestamp: int) -> None:
        """Revalues the holders of `tokens` (never the underlying; tokens no account holds, or
        that are not collateral here, are passed over) after their conversion changed: each
        holder's term of a token is replaced by its new one, all holders of the token at once.
        Unpriced holders are valued whole again."""
        found = conversions(market, timestamp)
        tokens = list(tokens)
        blocked = [
            account
            for account in self._unpriced
            if any(self._accounts[account].balances.get(token) for token in tokens)
        ]
        # Holders of an unusable token leave every column first, so that the columns repriced
        # next no longer hold them.
        for token in tokens:
            column = self._columns.get(token)
            if column is not None and found[token] is None:
                for account in list(column.holders):
                    self._set_unpriced(self._accounts[account], market, timestamp)
        usable = []
        for token in tokens:
            column = self._columns.get(token)
            if column is not None and column.holders:
                conversion = found[token]
                if conversion is not None:
                    usable.append((column, weighted_terms(column.balances, conversion)))
        for column, terms in usable:
            self._move_needs(column, terms)
            column.terms = terms
        for column, _ in usable:
            self._refile_column(column)
        for account in blocked:
            self._value(self._accounts[account], found, market, timestamp)

    def set_horizon(self, horizon_ray: int) -> None:
        """Moves the horizon (an index at or above the pool's now): every account's debt there,
        and the critical index of every account it does not cover."""
        self._horizon = horizon_ray
        weighted = self.weighted_values()
        bounds = self._bounds_at(horizon_ray)
        for column in self._columns.values():
            new_bounds = list(map(bounds.__getitem__, column.holders))
            # need = bound - rest, and the rest did not move.
            column.needs = list(map(add, column.needs, map(sub, new_bounds, column.bounds)))
            column.bounds = new_bounds
        self._near = self._near_among(weighted, bounds)

    def remove(self, account: str) -> None:
        self._forget_value(account)
        self._accounts.pop(account, None)

    # ---------------------------------------------------------------- internals

    def _risk(self, account: str) -> AccountRisk:
        error = self._unpriced.get(account)
        if error is not None:
            return AccountRisk(account, 0, NEVER, error)
        weighted = self._weighted(account)
        critical = self._near.get(account)
        if critical is None:
            critical = critical_index(self._accounts[account], weighted, self._fee_interest_bps)
        return AccountRisk(account, weighted, critical, None)

    def _weighted(self, account: str) -> int:
        plain = self._plain.get(account)
        if plain is not None:
            return plain
        for column in self._columns.values():
            position = column.position.get(account)
            if position is not None:
                return column.weighted(position)
        raise KeyError(account)

    def _bounds_at(self, horizon_ray: int) -> dict[str, int]:
        """Every account's debt at the horizon."""
        accounts = self._accounts
        debts = map(
            total_debt_at, accounts.values(), repeat(horizon_ray), repeat(self._fee_interest_bps)
        )
        return dict(zip(accounts, debts, strict=True))

    def _near_among(self, weighted: Mapping[str, int], bounds: Mapping[str, int]) -> dict[str, int]:
        """The critical index of each of `weighted`'s accounts that its bound does not cover."""
        accounts, fee = self._accounts, self._fee_interest_bps
        below = map(lt, weighted.values(), map(bounds.__getitem__, weighted))
        return {
            account: critical_index(accounts[account], weighted[account], fee)
            for account in compress(weighted, below)
        }

    def _set_config(self, market: Market) -> None:
        self._underlying = market.underlying
        self._fee_interest_bps = market.fees.fee_interest_bps
        self._thresholds = dict(market.liquidation_thresholds_bps)

    def _value(
        self,
        account: CreditAccountState,
        found: Mapping[str, Conversion | None],
        market: Market,
        timestamp: int,
    ) -> None:
        address = account.address
        self._forget_value(address)
        self._accounts[address] = account
        terms = account_terms(account, found)
        if terms is None:
            self._set_unpriced(account, market, timestamp)
            return
        weighted = sum(terms.values())
        bound = (
            NEVER
            if self._horizon is None
            else total_debt_at(account, self._horizon, self._fee_interest_bps)
        )
        held = [token for token in terms if token != self._underlying]
        for token in held:
            column = self._columns.setdefault(token, _Column())
            term = terms[token]
            column.add(address, account.balances[token], term, weighted, bound)
            if len(held) > 1:
                column.shared.add(address)
        if not held:
            self._plain[address] = weighted
        if weighted < bound:
            self._near[address] = critical_index(account, weighted, self._fee_interest_bps)

    def _set_unpriced(self, account: CreditAccountState, market: Market, timestamp: int) -> None:
        self._forget_value(account.address)
        self._unpriced[account.address] = _price_error(account, market, timestamp)

    def _forget_value(self, account: str) -> None:
        self._plain.pop(account, None)
        self._unpriced.pop(account, None)
        self._near.pop(account, None)
        for column in self._columns.values():
            column.discard(account)

    def _move_needs(self, column: _Column, terms: list[int]) -> None:
        """A holder's new term in `column` moves its need in every other column it is in."""
        for account in column.shared:
            position = column.position[account]
            change = terms[position] - column.terms[position]
            for other in self._columns.values():
                at = other.position.get(account)
                if other is not column and at is not None:
                    other.needs[at] -= change

    def _refile_column(self, column: _Column) -> None:
        """Files every holder of `column` (just repriced) as near, under its new critical
        index, or far: one pass (in C) comparing each term with its need."""
        near = self._near
        for account in [a for a in near if a in column.position]:
            del near[account]
        fee = self._fee_interest_bps
        for position in compress(range(len(column.terms)), map(lt, column.terms, column.needs)):
            account = column.holders[position]
            near[account] = critical_index(self._accounts[account], column.weighted(position), fee)


def _column(
    holders: Mapping[str, int],
    terms: list[int],
    weighted: Mapping[str, int],
    bounds: Mapping[str, int],
    unpriced: AbstractSet[str],
) -> _Column:
    """The column of a token from its holders' balances and terms, leaving out the `unpriced`
    holders."""
    accounts, balances = list(holders), list(holders.values())
    if unpriced and not unpriced.isdisjoint(accounts):
        kept = [i for i, account in enumerate(accounts) if account not in unpriced]
        accounts = [accounts[i] for i in kept]
        balances = [balances[i] for i in kept]
        terms = [terms[i] for i in kept]
    column_bounds = list(map(bounds.__getitem__, accounts))
    rests = map(sub, map(weighted.__getitem__, accounts), terms)
    return _Column(
        accounts,
        balances,
        terms,
        column_bounds,
        list(map(sub, column_bounds, rests)),
        dict(zip(accounts, range(len(accounts)), strict=True)),
    )


def _price_error(
    account: CreditAccountState, market: Market, timestamp: int
) -> PriceUnavailableError:
    """The oracle's refusal for `account`, naming the token the contract's revert names."""
    try:
        collateral_value(account, market, timestamp)
    except PriceUnavailableError as error:
        return error
    raise AssertionError(f"{account.address} has an unusable price, yet the oracle values it")
