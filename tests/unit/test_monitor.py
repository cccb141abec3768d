"""RiskMonitor over a ProtocolState built from events: what it revalues, and that its candidates
are exactly the accounts the health math says are below 1 (no chain)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from keeper.protocol.events import FeesSet, InterestRateUpdated, ProtocolEvent
from keeper.risk.book import NEVER, AccountRisk
from keeper.risk.health import PriceUnavailableError, account_health, cumulative_index_at
from keeper.risk.monitor import RiskMonitor
from keeper.state.store import ProtocolState, StateChanges
from tests.unit.protocol_builder import PRICES, RAY, T0, Chain, Deployed, address, usdc_market

THOROUGH = os.environ.get("ASGARD_HYPOTHESIS_PROFILE") == "thorough"
PROPERTY = settings(
    max_examples=1_000 if THOROUGH else 100,
    deadline=None,
    derandomize=not THOROUGH,
    print_blob=True,
)

OWNER = address(600)
A, B, C, D = (address(n) for n in range(601, 605))
USDC6, WETH18, WBTC8 = 10**6, 10**18, 10**8


def brute_force(state: ProtocolState, timestamp: int) -> set[tuple[str, str]]:
    """Every account the health math calls liquidatable at `timestamp`; an account the oracle
    cannot value is not liquidatable (the contract's views revert)."""
    found = set()
    for manager, market in state.markets.items():
        view = state.market_view(manager)
        for address_, account in market.accounts.items():
            try:
                health = account_health(account, view, timestamp)
            except PriceUnavailableError:
                continue
            if health.is_liquidatable:
                found.add((manager, address_))
    return found


def candidate_keys(monitor: RiskMonitor, timestamp: int) -> set[tuple[str, str]]:
    return {(c.manager, c.account) for c in monitor.candidates(timestamp)}


@dataclass
class Scene:
    usdc: Deployed
    state: ProtocolState
    monitor: RiskMonitor

    def apply(self, events: Sequence[ProtocolEvent], timestamp: int) -> int:
        return self.monitor.apply(self.state.apply(events), timestamp)

    def risk_of(self, account: str) -> AccountRisk | None:
        return self.monitor.books[self.usdc.manager].get(account)

    def weighted(self, account: str) -> int:
        risk = self.risk_of(account)
        assert risk is not None, f"{account} not in the book"
        return risk.weighted_value


@pytest.fixture
def scene() -> Scene:
    """Four accounts, fee 10 %, no interest:
    A: 1,000 USDC + 1 WETH    TWV   900 + 1,600 = 2,500   principal 2,400
    B: 1,000 USDC + 0.1 WBTC  TWV   900 + 4,500 = 5,400   principal 5,000
    C: 10,000 USDC            TWV 9,000                   principal 8,000
    D: 2 WETH                 TWV 3,200                   principal 3,000
    """
    usdc = usdc_market(Chain())
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events(answers=PRICES))
    for account, principal, balances in (
        (A, 2_400 * USDC6, {"USDC": 1_000 * USDC6, "WETH": WETH18}),
        (B, 5_000 * USDC6, {"USDC": 1_000 * USDC6, "WBTC": WBTC8 // 10}),
        (C, 8_000 * USDC6, {"USDC": 10_000 * USDC6}),
        (D, 3_000 * USDC6, {"WETH": 2 * WETH18}),
    ):
        state.apply(usdc.open(account, OWNER, principal=principal, balances=balances))
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    return Scene(usdc, state, monitor)


def test_rebuild_values_every_account(scene: Scene) -> None:
    book = scene.monitor.books[scene.usdc.manager]
    assert len(book) == 4
    weighted = {risk.account: risk.weighted_value for risk in book.nearest()}
    assert weighted == {
        A: 2_500 * USDC6,
        B: 5_400 * USDC6,
        C: 9_000 * USDC6,
        D: 3_200 * USDC6,
    }
    assert scene.monitor.candidates(T0) == []
    assert scene.monitor.stale_prices() == []
    assert scene.monitor.unpriced() == []


def test_a_price_update_revalues_only_its_holders(scene: Scene) -> None:
    before = {account: scene.risk_of(account) for account in (A, B, C, D)}

    revalued = scene.apply([scene.usdc.answer("WETH", 1_900_00000000, T0 + 1)], T0 + 1)

    assert revalued == 2  # A and D: B and C hold no WETH
    for account in (B, C):
        assert scene.risk_of(account) == before[account]
    for account in (A, D):
        assert scene.risk_of(account) != before[account]
    assert scene.weighted(A) == (900 + 1_520) * USDC6


def test_an_underlying_price_update_revalues_the_whole_market(scene: Scene) -> None:
    revalued = scene.apply([scene.usdc.answer("USDC", 99_990000, T0 + 1)], T0 + 1)
    assert revalued == 4
    # 1 WETH at 2,000 / 0.9999 USDC, floored, at 80 %; the USDC part does not move.
    weth_in_usdc = WETH18 * 2_000_00000000 * 10 ** (6 + 8) // (99_990000 * 10 ** (18 + 8))
    assert weth_in_usdc == 2_000_200_020
    assert scene.weighted(A) == 900 * USDC6 + weth_in_usdc * 8_000 // 10_000
    assert scene.weighted(C) == 9_000 * USDC6


def test_an_account_event_revalues_that_account_alone(scene: Scene) -> None:
    assert scene.apply([scene.usdc.debt(C, 9_001 * USDC6)], T0 + 1) == 1
    assert candidate_keys(scene.monitor, T0 + 1) == {(scene.usdc.manager, C)}
    assert scene.apply([scene.usdc.close(C, OWNER)], T0 + 2) == 0
    assert C not in scene.monitor.books[scene.usdc.manager]
    assert scene.monitor.candidates(T0 + 2) == []


def test_a_feed_going_stale_by_time_alone_sets_its_holders_aside(scene: Scene) -> None:
    usdc, monitor = scene.usdc, scene.monitor
    weth_key = (usdc.oracle, usdc.token("WETH"))
    crash_at = T0 + 100
    # WETH at 1,500: A's TWV 900 + 1,200 = 2,100 < 2,400 and D's 2,400 < 3,000.
    assert scene.apply([usdc.answer("WETH", 1_500_00000000, crash_at)], crash_at) == 2
    under = {(usdc.manager, A), (usdc.manager, D)}
    assert candidate_keys(monitor, crash_at) == under
    for candidate in monitor.candidates(crash_at):
        account = scene.state.markets[usdc.manager].accounts[candidate.account]
        view = scene.state.market_view(usdc.manager)
        assert candidate.health == account_health(account, view, crash_at)
        assert candidate.timestamp == crash_at

    # Exactly the staleness period later the price is still good (the oracle's check is `>`).
    assert scene.apply([], crash_at + 3_600) == 0
    assert monitor.stale_prices() == []
    assert candidate_keys(monitor, crash_at + 3_600) == under

    # One second more and it is stale: nothing happened on chain, only time passed.
    assert monitor.apply(StateChanges(), crash_at + 3_601) == 2
    assert monitor.stale_prices() == [weth_key]
    unpriced = monitor.unpriced()
    assert {(manager, risk.account) for manager, risk in unpriced} == under
    for _, risk in unpriced:
        assert risk.critical_index_ray == NEVER
        assert risk.unpriced is not None
        assert risk.unpriced.token == usdc.token("WETH")
    assert monitor.candidates(crash_at + 3_601) == []
    assert brute_force(scene.state, crash_at + 3_601) == set()  # the contract would revert too
    # Staying stale is not a flip: nothing to revalue.
    assert monitor.apply(StateChanges(), crash_at + 3_700) == 0

    # A fresh round at the same price brings them back.
    fresh_at = crash_at + 3_800
    assert scene.apply([usdc.answer("WETH", 1_500_00000000, fresh_at, round_id=3)], fresh_at) == 2
    assert monitor.stale_prices() == []
    assert monitor.unpriced() == []
    assert candidate_keys(monitor, fresh_at) == under


def test_a_stale_underlying_sets_aside_every_account_holding_another_token(scene: Scene) -> None:
    usdc, monitor = scene.usdc, scene.monitor
    # Keep WETH and WBTC fresh; let USDC (staleness one day) lapse.
    later = T0 + 86_401
    refreshed = [
        usdc.answer("WETH", 2_000_00000000, later),
        usdc.answer("WBTC", 60_000 * 10**8, later),
    ]
    assert scene.apply(refreshed, later) == 4  # USDC flipped: the whole market
    assert monitor.stale_prices() == [(usdc.oracle, usdc.token("USDC"))]
    # C holds only the underlying: it needs no price at all.
    assert {risk.account for _, risk in monitor.unpriced()} == {A, B, D}


def test_candidates_follow_interest_without_any_event() -> None:
    """Index RAY + t * 1e21 (1e-6 per second), no fee, principal 1,000 USDC, threshold 90 %."""
    usdc = usdc_market(Chain())
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events(rate_ray=RAY // 10**6, answers=PRICES, fee_interest_bps=0))
    # 1,111 USDC is a TWV of 999.9: under from the start.
    state.apply(usdc.open(A, OWNER, principal=1_000 * USDC6, balances={"USDC": 1_111 * USDC6}))
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    assert candidate_keys(monitor, T0) == {(usdc.manager, A)}

    # 1,112 USDC is a TWV of 1,000.8 USDC: 800,000 wei of headroom. The debt reaches exactly
    # the TWV (Hf 1, not liquidatable) at index 1.0008 (t = 800 s) and passes it at t = 801 s.
    assert monitor.apply(state.apply([usdc.balance(A, "USDC", 1_112 * USDC6)]), T0) == 1
    assert monitor.candidates(T0) == []
    assert monitor.candidates(T0 + 800) == []
    assert brute_force(state, T0 + 800) == set()
    assert candidate_keys(monitor, T0 + 801) == {(usdc.manager, A)}
    assert brute_force(state, T0 + 801) == {(usdc.manager, A)}


def test_two_markets_on_one_oracle_each_reprice_their_own_collateral() -> None:
    """A feed of the shared oracle prices a token that only one market lists: the other market
    passes over it; a token both list revalues both markets' holders."""
    chain = Chain()
    first = usdc_market(chain)
    second = usdc_market(chain, base=1_000, oracle=first.oracle)
    second.tokens["WETH"] = first.tokens["WETH"]
    state = ProtocolState([first.market_state(), second.market_state()])
    state.apply(first.deploy_events(answers=PRICES))
    state.apply(second.deploy_events(answers=PRICES))
    state.apply(first.open(A, OWNER, principal=1_500 * USDC6, balances={"WETH": WETH18}))
    state.apply(second.open(B, OWNER, principal=3_000 * USDC6, balances={"WETH": 2 * WETH18}))
    state.apply(second.open(C, OWNER, principal=10_000 * USDC6, balances={"WBTC": WBTC8 // 4}))
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    assert candidate_keys(monitor, T0) == set()

    # WBTC of the first market: only the first market lists it, and nobody holds it there.
    assert monitor.apply(state.apply([first.answer("WBTC", 1, T0 + 1)]), T0 + 1) == 0
    # WETH at 1,000: A's 800 < 1,500 and B's 1,600 < 3,000; C holds no WETH.
    revaluation = monitor.revalue(
        state.apply([first.answer("WETH", 1_000_00000000, T0 + 2)]), T0 + 2
    )
    assert revaluation.revalued == 2
    found = {(c.manager, c.account) for c in revaluation.candidates}
    assert found == {(first.manager, A), (second.manager, B)} == brute_force(state, T0 + 2)
    # WBTC of the second market at 30,000: C's 7,500 * 75 % < 10,000.
    assert monitor.apply(state.apply([second.answer("WBTC", 30_000 * 10**8, T0 + 3)]), T0 + 3) == 1
    assert candidate_keys(monitor, T0 + 3) == brute_force(state, T0 + 3)
    assert (second.manager, C) in brute_force(state, T0 + 3)


# ------------------------------------------------------------------ property: exact candidates

ACCOUNTS = [address(700 + n) for n in range(8)]
SYMBOLS = ("USDC", "WETH", "WBTC")
UNITS = {"USDC": USDC6, "WETH": WETH18, "WBTC": WBTC8}


@st.composite
def balances(draw: st.DrawFn) -> dict[str, int]:
    return {
        symbol: draw(st.integers(0, 50_000 * UNITS[symbol] // (PRICES[symbol] // 10**8)))
        for symbol in SYMBOLS
        if draw(st.booleans())
    }


def price_answer(symbol: str) -> st.SearchStrategy[int]:
    base = PRICES[symbol]
    return st.one_of(st.integers(base // 3, base * 2), st.sampled_from([0, -1, base]))


KINDS = ("price", "time", "debt", "balance", "close", "rate", "fees")


def random_step(
    data: st.DataObject, chain: Chain, usdc: Deployed, state: ProtocolState, now: int
) -> tuple[list[ProtocolEvent], int]:
    """One random thing happening in a block at or after `now`: its events and its time."""
    kind = data.draw(st.sampled_from(KINDS), label="step")
    index = cumulative_index_at(state.market_view(usdc.manager).interest_rate, now)
    live = sorted(state.markets[usdc.manager].accounts)
    if kind == "time":
        return [], now + data.draw(st.integers(0, 5_000), label="seconds")
    if kind == "price":
        symbol = data.draw(st.sampled_from(SYMBOLS), label="symbol")
        age = data.draw(st.integers(0, 8_000), label="age")
        answer = data.draw(price_answer(symbol), label="answer")
        return [usdc.answer(symbol, answer, max(T0, now - age))], now
    if kind == "rate":
        rate = data.draw(st.integers(0, 10**20), label="rate")
        return [InterestRateUpdated(chain.at(usdc.pool), rate, index, now)], now
    if kind == "fees":
        fee = data.draw(st.integers(0, 10_000), label="fee")
        return [FeesSet(chain.at(usdc.manager), fee, 150, 400)], now
    if not live:
        return [], now
    account = data.draw(st.sampled_from(live), label="account")
    if kind == "debt":
        principal = data.draw(st.integers(0, 60_000 * USDC6), label="principal")
        return [usdc.debt(account, principal, index)], now
    if kind == "balance":
        symbol = data.draw(st.sampled_from(SYMBOLS), label="symbol")
        amount = data.draw(st.integers(0, 20 * UNITS[symbol]), label="amount")
        return [usdc.balance(account, symbol, amount)], now
    return [usdc.close(account, OWNER)], now


def assert_same_books(monitor: RiskMonitor, state: ProtocolState, now: int) -> None:
    """Incremental upkeep ends where a rebuild from scratch ends."""
    fresh = RiskMonitor(state)
    fresh.rebuild(now)
    for manager, book in monitor.books.items():
        ours = [
            (r.account, r.weighted_value, r.critical_index_ray, r.valued) for r in book.nearest()
        ]
        theirs = [
            (r.account, r.weighted_value, r.critical_index_ray, r.valued)
            for r in fresh.books[manager].nearest()
        ]
        assert ours == theirs
    assert monitor.stale_prices() == fresh.stale_prices()


@PROPERTY
@given(
    opening=st.lists(
        st.tuples(st.integers(0, 60_000 * USDC6), balances()),
        min_size=1,
        max_size=len(ACCOUNTS),
    ),
    rate=st.integers(0, 10**20),
    fee=st.integers(0, 10_000),
    steps=st.integers(0, 12),
    data=st.data(),
)
def test_candidates_are_exactly_the_accounts_below_one(
    opening: list[tuple[int, dict[str, int]]],
    rate: int,
    fee: int,
    steps: int,
    data: st.DataObject,
) -> None:
    chain = Chain()
    usdc = usdc_market(chain)
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events(rate_ray=rate, fee_interest_bps=fee, answers=PRICES))
    for account, (principal, held) in zip(ACCOUNTS, opening, strict=False):
        state.apply(usdc.open(account, OWNER, principal=principal, balances=held))
    monitor = RiskMonitor(state)
    now = T0
    monitor.rebuild(now)

    def check() -> None:
        expected = brute_force(state, now)
        assert candidate_keys(monitor, now) == expected
        event(f"below 1: {'some' if expected else 'none'}")
        event(f"unpriced: {'some' if monitor.unpriced() else 'none'}")
        assert_same_books(monitor, state, now)

    check()
    for _ in range(steps):
        events, now = random_step(data, chain, usdc, state, now)
        monitor.apply(state.apply(events), now)
        check()
        # A later block with no events: only time moves (interest, staleness).
        now += data.draw(st.integers(0, 4_000), label="later")
        monitor.apply(StateChanges(), now)
        check()
