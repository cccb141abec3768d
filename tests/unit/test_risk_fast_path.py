"""The risk stage's fast path ends exactly where the reference health math ends (no chain).

`RiskMonitor` values accounts in bulk by token columns, revalues a repriced token's holders by
replacing one term each, and only tracks critical indexes within a horizon above the pool index.
After every block of a random history (crashes and recoveries across Hf 1, feeds going stale or
unusable and back, account events, fee, threshold and rate changes, interest moving the index past
the horizon), every account in the books must carry the weighted value and critical index that
`keeper.risk.health` gives, the unpriced ones the oracle's own refusal, and the candidates must be
exactly the accounts below 1, each with the reference's health.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from keeper.protocol.events import (
    CollateralTokenSet,
    FeesSet,
    InterestRateUpdated,
    ProtocolEvent,
)
from keeper.risk.book import NEVER, critical_index
from keeper.risk.health import (
    RAY,
    CollateralValue,
    PriceUnavailableError,
    account_health,
    collateral_value,
    cumulative_index_at,
    debt_at,
    health_factor_wad,
)
from keeper.risk.monitor import RiskMonitor
from keeper.risk.summary import HEALTH_RANGES, UNPRICED, HealthCensus, MarketHealth
from keeper.state.model import CreditAccountState, Market
from keeper.state.store import ProtocolState, StateChanges
from tests.unit.protocol_builder import T0, Chain, Deployed, Token, address
from tests.unit.test_monitor import brute_force

THOROUGH = os.environ.get("ASGARD_HYPOTHESIS_PROFILE") == "thorough"
PROPERTY = settings(
    max_examples=400 if THOROUGH else 60,
    deadline=None,
    derandomize=not THOROUGH,
    print_blob=True,
)

OWNER = address(900)
ACCOUNTS = [address(910 + n) for n in range(12)]
COLLATERALS = ("AAA", "BBB", "CCC")


@dataclass(frozen=True)
class Scenario:
    market: Deployed
    usd: dict[str, int]  # symbol -> dollars per whole token at the start


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A market whose underlying has 6, 8 or 18 decimals, and three collaterals, each behind a
    feed of 8 or 18 decimals with its own staleness period."""
    decimals = st.sampled_from([6, 8, 18])
    feed_decimals = st.sampled_from([8, 18])
    staleness = st.sampled_from([600, 3_600, 86_400])

    def token(symbol: str, n: int) -> Token:
        threshold = draw(st.one_of(st.integers(1_000, 10_000), st.sampled_from([0, 10_000])))
        return Token(
            symbol,
            address(800 + n),
            draw(decimals),
            address(850 + n),
            draw(feed_decimals),
            draw(staleness),
            threshold,
        )

    underlying = token("USD", 0)
    tokens = {"USD": underlying} | {s: token(s, n + 1) for n, s in enumerate(COLLATERALS)}
    market = Deployed(Chain(), address(810), address(811), address(812), underlying, tokens=tokens)
    usd = {"USD": 1} | {s: draw(st.integers(1, 100_000)) for s in COLLATERALS}
    return Scenario(market, usd)


def answer(token: Token, usd: int) -> int:
    scale: int = 10**token.feed_decimals
    return usd * scale


def units(token: Token, dollars: int, usd_per_token: int) -> int:
    """About `dollars` worth of `token`, in its smallest units (at least one)."""
    scale: int = 10**token.decimals
    return max(1, dollars * scale // usd_per_token)


@st.composite
def holdings(draw: st.DrawFn, scenario: Scenario) -> dict[str, int]:
    """Some underlying and any subset of the collaterals, as balances."""
    held = {}
    for symbol in ("USD", *COLLATERALS):
        if draw(st.booleans()):
            dollars = draw(st.integers(0, 100_000))
            held[symbol] = units(scenario.market.tokens[symbol], dollars, scenario.usd[symbol])
    return held


def reference_value(
    account: CreditAccountState, market: Market, timestamp: int
) -> CollateralValue | PriceUnavailableError:
    """The contract's valuation, or its refusal."""
    try:
        return collateral_value(account, market, timestamp)
    except PriceUnavailableError as error:
        return error


def assert_books_match_reference(monitor: RiskMonitor, state: ProtocolState, now: int) -> None:
    for manager, market in state.markets.items():
        view = state.market_view(manager)
        book = monitor.books[manager]
        assert len(book) == len(market.accounts)
        for address_, account in market.accounts.items():
            risk = book.get(address_)
            assert risk is not None, address_
            value = reference_value(account, view, now)
            if isinstance(value, PriceUnavailableError):
                assert str(risk.unpriced) == str(value), address_
                assert risk.critical_index_ray == NEVER
                continue
            assert risk.unpriced is None, address_
            assert risk.weighted_value == value.weighted_value, address_
            fee = view.fees.fee_interest_bps
            assert risk.critical_index_ray == critical_index(account, value.weighted_value, fee)


def reference_census(state: ProtocolState, now: int) -> dict[str, MarketHealth]:
    """Each account's range from its exact health factor, one account at a time."""
    found = {}
    for manager, market in state.markets.items():
        view = state.market_view(manager)
        counts = dict.fromkeys([label for label, _ in HEALTH_RANGES] + [UNPRICED], 0)
        lowest: int | None = None
        for account in market.accounts.values():
            value = reference_value(account, view, now)
            if isinstance(value, PriceUnavailableError):
                counts[UNPRICED] += 1
                continue
            index = cumulative_index_at(view.interest_rate, now)
            total_debt = debt_at(account, index, view.fees.fee_interest_bps).total
            health = health_factor_wad(value.weighted_value, total_debt)
            counts[[label for label, bound in HEALTH_RANGES if health >= bound][-1]] += 1
            if total_debt and (lowest is None or health < lowest):
                lowest = health
        found[manager] = MarketHealth(counts, lowest)
    return found


def finish(census: HealthCensus, accounts_per_slice: int) -> dict[str, MarketHealth]:
    slices = 1
    while not census.advance(accounts_per_slice):
        slices += 1
    assert slices == max(1, -(-len(census) // accounts_per_slice))
    return census.result()


KINDS = (
    "crash",
    "recovery",
    "underlying",
    "unusable",
    "time",
    "debt",
    "balance",
    "close",
    "open",
    "fees",
    "threshold",
    "rate",
)


def random_block(
    data: st.DataObject, scenario: Scenario, state: ProtocolState, now: int, prices: dict[str, int]
) -> tuple[list[ProtocolEvent], int]:
    """One random block after `now`: its events and its time. `prices` (symbol -> answer) is
    kept up to date."""
    market, chain = scenario.market, scenario.market.chain
    kind = data.draw(st.sampled_from(KINDS), label="block")
    now += data.draw(st.integers(0, 900), label="seconds")
    index = cumulative_index_at(state.market_view(market.manager).interest_rate, now)
    live = sorted(state.markets[market.manager].accounts)
    if kind in ("crash", "recovery", "underlying", "unusable"):
        symbol = (
            "USD"
            if kind == "underlying"
            else data.draw(st.sampled_from(COLLATERALS), label="symbol")
        )
        if kind == "unusable":
            new = data.draw(st.sampled_from([0, -1]), label="answer")
        else:
            low, high = (3_000, 9_999) if kind == "crash" else (10_001, 30_000)
            if kind == "underlying":
                low, high = 9_000, 11_000
            base = max(prices[symbol], 1)
            new = max(1, base * data.draw(st.integers(low, high), label="bps") // 10_000)
        prices[symbol] = new
        age = data.draw(st.sampled_from([0, 0, 590, 3_590, 86_000]), label="age")
        return [market.answer(symbol, new, max(T0, now - age))], now
    if kind == "time":
        return [], now + data.draw(st.integers(0, 20_000), label="more seconds")
    if kind == "fees":
        fee = data.draw(st.integers(0, 10_000), label="fee")
        return [FeesSet(chain.at(market.manager), fee, 150, 400)], now
    if kind == "threshold":
        token = market.tokens[data.draw(st.sampled_from(("USD", *COLLATERALS)), label="token")]
        threshold = data.draw(st.integers(0, 10_000), label="threshold")
        return [CollateralTokenSet(chain.at(market.manager), token.address, threshold)], now
    if kind == "rate":
        rate = data.draw(st.sampled_from([0, RAY // 10**6, 5 * 10**21]), label="rate")
        return [InterestRateUpdated(chain.at(market.pool), rate, index, now)], now
    if kind == "open" or not live:
        fresh = [a for a in ACCOUNTS if a not in live]
        if not fresh:
            return [], now
        held = data.draw(holdings(scenario), label="holdings")
        principal = data.draw(st.integers(0, 200_000), label="principal dollars")
        debt = principal * 10**market.underlying.decimals
        return market.open(fresh[0], OWNER, principal=debt, index_ray=index, balances=held), now
    account = data.draw(st.sampled_from(live), label="account")
    if kind == "debt":
        dollars = data.draw(st.integers(0, 200_000), label="principal dollars")
        return [market.debt(account, dollars * 10**market.underlying.decimals, index)], now
    if kind == "balance":
        symbol = data.draw(st.sampled_from(("USD", *COLLATERALS)), label="symbol")
        dollars = data.draw(st.integers(0, 100_000), label="dollars")
        token = market.tokens[symbol]
        amount = 0 if dollars == 0 else units(token, dollars, scenario.usd[symbol])
        return [market.balance(account, symbol, amount)], now
    return [market.close(account, OWNER)], now


@PROPERTY
@given(scenario=scenarios(), data=st.data())
def test_the_fast_path_ends_where_the_reference_ends(
    scenario: Scenario, data: st.DataObject
) -> None:
    market = scenario.market
    prices = {symbol: answer(market.tokens[symbol], usd) for symbol, usd in scenario.usd.items()}
    state = ProtocolState([market.market_state()])
    rate = data.draw(st.sampled_from([0, RAY // 10**6, 5 * 10**21]), label="rate")
    fee = data.draw(st.integers(0, 10_000), label="fee")
    state.apply(market.deploy_events(rate_ray=rate, fee_interest_bps=fee, answers=prices))
    opened = data.draw(st.integers(1, len(ACCOUNTS)), label="accounts")
    for account in ACCOUNTS[:opened]:
        held = data.draw(holdings(scenario), label="holdings")
        # Debt about the size of the collateral: health factors on both sides of 1.
        dollars = sum(
            balance * scenario.usd[symbol] // 10 ** market.tokens[symbol].decimals
            for symbol, balance in held.items()
        )
        principal = dollars * data.draw(st.integers(5_000, 15_000), label="debt bps") // 10_000
        debt = principal * 10**market.underlying.decimals
        state.apply(market.open(account, OWNER, principal=debt, balances=held))
    monitor = RiskMonitor(state)
    now = T0
    monitor.rebuild(now)

    def check(candidates: set[tuple[str, str]] | None = None) -> None:
        expected = brute_force(state, now)
        found = (
            candidates
            if candidates is not None
            else {(c.manager, c.account) for c in monitor.candidates(now)}
        )
        assert found == expected
        event(f"below 1: {'some' if expected else 'none'}")
        event(f"unpriced: {'some' if monitor.unpriced() else 'none'}")
        assert_books_match_reference(monitor, state, now)

    check()
    for _ in range(data.draw(st.integers(1, 15), label="blocks")):
        # A census taken before the block and counted after it still describes the time before.
        census_before, reference_before = (
            HealthCensus(state, monitor, now),
            reference_census(state, now),
        )
        events, now = random_block(data, scenario, state, now, prices)
        revaluation = monitor.revalue(state.apply(events, undoable=True), now)
        per_slice = data.draw(st.integers(1, len(ACCOUNTS)), label="census slice")
        assert finish(census_before, per_slice) == reference_before
        assert finish(HealthCensus(state, monitor, now), per_slice) == reference_census(state, now)
        view = state.market_view(market.manager)
        for candidate in revaluation.candidates:
            valued = state.markets[candidate.manager].accounts[candidate.account]
            assert candidate.health == account_health(valued, view, now)
        check({(c.manager, c.account) for c in revaluation.candidates})
        if data.draw(st.booleans(), label="settle"):
            monitor.settle()
            check()
    # A block without events much later: only time moves (interest past the horizon, staleness).
    now += data.draw(st.integers(0, 100_000), label="later")
    monitor.apply(StateChanges(), now)
    check()
