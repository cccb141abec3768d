"""The risk book's critical index, and the book's sorted-prefix semantics (no chain).

The claim everything rests on: for an account whose weighted value does not move, at any pool
index at or above the account's own cumulative index,

    index >= critical_index  <=>  calcDebt total > weighted value  <=>  Hf < 1 (WAD floors)

so "who is under 1 at this block" is a prefix of the accounts sorted by critical index.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keeper.risk.book import NEVER, AccountRisk, RiskBook, critical_index
from keeper.risk.health import (
    MAX_UINT256,
    RAY,
    WAD,
    PriceUnavailableError,
    collateral_value,
    debt_at,
    health_factor_wad,
)
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market, TokenPrice

THOROUGH = os.environ.get("ASGARD_HYPOTHESIS_PROFILE") == "thorough"
# Pure integer math: cheap, so many more examples than the chain-backed property test.
PROPERTY = settings(
    max_examples=5_000 if THOROUGH else 400,
    deadline=None,
    derandomize=not THOROUGH,
    print_blob=True,
)


def _state(
    principal: int,
    index: int = RAY,
    accrued_interest: int = 0,
    accrued_fees: int = 0,
    *,
    balances: dict[str, int] | None = None,
    address: str = "0xA",
) -> CreditAccountState:
    return CreditAccountState(
        address, "0xOWNER", principal, index, accrued_interest, accrued_fees, balances or {}
    )


def _liquidatable_at(
    account: CreditAccountState, weighted_value: int, index: int, fee_bps: int
) -> bool:
    """Both sides of the claim at `index`, checked equal to each other."""
    total = debt_at(account, index, fee_bps).total
    over = total > weighted_value
    assert over == (health_factor_wad(weighted_value, total) < WAD), (index, total)
    return over


def _check_claim(
    account: CreditAccountState, weighted_value: int, index: int, fee_bps: int, critical: int
) -> None:
    assert index >= account.cumulative_index_ray
    assert _liquidatable_at(account, weighted_value, index, fee_bps) == (index >= critical), (
        f"index {index}, critical {critical}"
    )


# ------------------------------------------------------------------ critical_index: property


@st.composite
def account_and_value(draw: st.DrawFn) -> tuple[CreditAccountState, int]:
    """An account and a weighted value spread around its fixed debt: already under, exactly
    at, a few wei of headroom, or a lot of it."""
    principal = draw(
        st.one_of(
            st.integers(0, 10**30),
            st.integers(0, 1_000),
            st.sampled_from([0, 1, 10**6, 10**18, 10**30]),
        )
    )
    index = draw(st.one_of(st.integers(RAY, 3 * RAY), st.sampled_from([RAY, RAY + 1, 3 * RAY])))
    accrued_interest = draw(st.one_of(st.just(0), st.integers(0, 10**30)))
    accrued_fees = draw(st.one_of(st.just(0), st.integers(0, 10**28)))
    account = _state(principal, index, accrued_interest, accrued_fees)
    fixed = principal + accrued_interest + accrued_fees
    headroom = draw(
        st.one_of(
            st.integers(-1_000, 1_000),
            st.integers(-(10**30), 10**31),
            st.integers(0, max(principal, 1) * 3),
        )
    )
    return account, max(0, fixed + headroom)


@PROPERTY
@given(
    case=account_and_value(),
    fee_bps=st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 9_999, 10_000])),
    offsets=st.lists(
        st.one_of(st.integers(0, 10**6), st.integers(0, 10**28), st.integers(0, 3 * RAY)),
        max_size=5,
    ),
)
@example(case=(_state(1, RAY), 0), fee_bps=10_000, offsets=[0])
@example(case=(_state(1, RAY), 1), fee_bps=0, offsets=[0, RAY, RAY - 1])
@example(case=(_state(10**30, 3 * RAY - 1, 7, 3), 10**30 + 10), fee_bps=1, offsets=[1])
def test_critical_index_is_exactly_where_debt_first_exceeds_the_weighted_value(
    case: tuple[CreditAccountState, int], fee_bps: int, offsets: list[int]
) -> None:
    account, weighted = case
    own_index = account.cumulative_index_ray
    critical = critical_index(account, weighted, fee_bps)

    assert critical >= own_index
    if critical == NEVER:
        # Interest cannot move a debt that is not already over: only principal 0 allows that.
        assert account.principal == 0
        assert not _liquidatable_at(account, weighted, own_index, fee_bps)
        assert not _liquidatable_at(account, weighted, MAX_UINT256, fee_bps)
    else:
        # The boundary itself, and the wei on either side of it.
        _check_claim(account, weighted, critical, fee_bps, critical)
        _check_claim(account, weighted, critical + 1, fee_bps, critical)
        if critical > own_index:
            _check_claim(account, weighted, critical - 1, fee_bps, critical)
        else:
            # Only an account already under at its own index sits at its own index.
            assert _liquidatable_at(account, weighted, own_index, fee_bps)
    for offset in offsets:
        _check_claim(account, weighted, own_index + offset, fee_bps, critical)
        if critical != NEVER:
            _check_claim(account, weighted, critical + offset, fee_bps, critical)


# ------------------------------------------------------------------ critical_index: edges


def test_principal_zero_is_never_liquidated_by_interest() -> None:
    account = _state(0, 2 * RAY, accrued_interest=500, accrued_fees=100)
    assert critical_index(account, 600, 1_000) == NEVER
    assert critical_index(account, 10**40, 10_000) == NEVER
    assert debt_at(account, MAX_UINT256, 10_000).total == 600


def test_principal_zero_already_under_is_liquidatable_at_its_own_index() -> None:
    # Interest and fees left over with no principal, and less value than that.
    account = _state(0, 2 * RAY, accrued_interest=500, accrued_fees=100)
    assert critical_index(account, 599, 1_000) == 2 * RAY
    assert _liquidatable_at(account, 599, 2 * RAY, 1_000)


def test_negative_headroom_returns_the_accounts_own_index() -> None:
    account = _state(1_000, 12 * RAY // 10, accrued_interest=10, accrued_fees=1)
    assert critical_index(account, 1_010, 500) == 12 * RAY // 10
    assert critical_index(account, 0, 500) == 12 * RAY // 10


def test_zero_headroom_needs_one_wei_of_new_debt() -> None:
    # Debt equal to the weighted value is Hf exactly 1: not liquidatable. principal 1,000 at
    # index 1: one wei of interest needs floor(1000 * i / RAY) >= 1001, i.e. i >= 1.001 RAY.
    account = _state(1_000, RAY)
    assert critical_index(account, 1_000, 0) == RAY + RAY // 1_000
    assert health_factor_wad(1_000, debt_at(account, RAY + RAY // 1_000 - 1, 0).total) == WAD


def test_fee_zero_hand_worked() -> None:
    # principal 1e6 at index 1.0, TWV 1.1e6: 100,000 of headroom, so 100,001 of new interest:
    # floor(1e6 * i / RAY) >= 1,100,001  <=>  i >= 1.100001 RAY.
    account = _state(10**6, RAY)
    assert critical_index(account, 1_100_000, 0) == RAY * 1_100_001 // 10**6


def test_fee_ten_thousand_doubles_every_wei_of_interest() -> None:
    # With a 100 % fee each wei of interest adds two of debt: 100,000 of headroom is exceeded at
    # 50,001 wei of interest (100,002 of debt), not at 50,000 (exactly 100,000: Hf 1).
    account = _state(10**6, RAY)
    critical = critical_index(account, 1_100_000, 10_000)
    assert critical == RAY * 1_050_001 // 10**6
    assert debt_at(account, critical, 10_000).total == 1_100_002
    assert debt_at(account, critical - 1, 10_000).total == 1_100_000


def test_fee_floor_needs_the_next_wei_of_interest() -> None:
    # Fee 15 %: n + floor(0.15 n) > 22. n = 20 gives 23; n = 19 gives 19 + 2 = 21. So 20.
    account = _state(100, RAY)
    assert critical_index(account, 122, 1_500) == RAY * 120 // 100
    assert debt_at(account, RAY * 120 // 100, 1_500).total == 123
    assert debt_at(account, RAY * 120 // 100 - 1, 1_500).total == 121


# ------------------------------------------------------------------ RiskBook

NOW = 1_700_000_000
USDC, WETH = "0xUSDC", "0xWETH"


def _market(*, weth_updated_at: int = NOW, usdc_updated_at: int = NOW, fee_bps: int = 0) -> Market:
    return Market(
        underlying=USDC,
        interest_rate=InterestRate(RAY, NOW, 0),
        fees=Fees(fee_bps, 150, 400),
        liquidation_thresholds_bps={USDC: 10_000, WETH: 8_000},
        prices={
            USDC: TokenPrice(1_00000000, 8, 6, usdc_updated_at, 3_600),
            WETH: TokenPrice(2_000_00000000, 8, 18, weth_updated_at, 3_600),
        },
    )


def _usdc_account(address: str, principal: int, held: int) -> CreditAccountState:
    """An account holding only underlying: TWV = held, critical index principal-exact."""
    return _state(principal, RAY, balances={USDC: held}, address=address)


def test_book_files_accounts_by_critical_index_and_liquidates_a_prefix() -> None:
    book, market = RiskBook(), _market()
    # TWV 1,100 / 1,050 / 2,000 against principal 1,000 at index 1: critical 1.101, 1.051, 2.001.
    risks = {
        address: book.update(_usdc_account(address, 1_000, held), market, NOW)
        for address, held in (("0xA", 1_100), ("0xB", 1_050), ("0xC", 2_000))
    }
    assert risks["0xB"] == AccountRisk("0xB", 1_050, RAY * 1_051 // 1_000, None)
    assert risks["0xB"].valued
    assert len(book) == 3
    assert "0xA" in book
    assert book.get("0xA") == risks["0xA"]

    assert book.liquidatable(RAY) == []
    assert book.liquidatable(RAY * 1_051 // 1_000 - 1) == []
    assert book.liquidatable(RAY * 1_051 // 1_000) == ["0xB"]
    assert book.liquidatable(RAY * 1_101 // 1_000) == ["0xB", "0xA"]
    assert book.liquidatable(RAY * 2_001 // 1_000 - 1) == ["0xB", "0xA"]
    assert book.liquidatable(MAX_UINT256) == ["0xB", "0xA", "0xC"]
    assert [risk.account for risk in book.nearest()] == ["0xB", "0xA", "0xC"]


def test_re_update_moves_the_account_and_remove_forgets_it() -> None:
    book, market = RiskBook(), _market()
    book.update(_usdc_account("0xA", 1_000, 1_100), market, NOW)
    book.update(_usdc_account("0xB", 1_000, 1_050), market, NOW)
    # 0xB is topped up: it now sits behind 0xA, and only once.
    moved = book.update(_usdc_account("0xB", 1_000, 5_000), market, NOW)
    assert moved.critical_index_ray == RAY * 5_001 // 1_000
    assert len(book) == 2
    assert [risk.account for risk in book.nearest()] == ["0xA", "0xB"]
    assert book.liquidatable(RAY * 1_101 // 1_000) == ["0xA"]
    assert book.liquidatable(MAX_UINT256) == ["0xA", "0xB"]

    book.remove("0xA")
    book.remove("0xA")  # twice, and an unknown account: no-ops
    book.remove("0xZ")
    assert "0xA" not in book
    assert book.get("0xA") is None
    assert len(book) == 1
    assert book.liquidatable(MAX_UINT256) == ["0xB"]


def test_accounts_with_equal_critical_index_are_kept_apart() -> None:
    book, market = RiskBook(), _market()
    for address in ("0xC", "0xA", "0xB"):
        book.update(_usdc_account(address, 1_000, 1_100), market, NOW)
    critical = RAY * 1_101 // 1_000
    assert book.liquidatable(critical) == ["0xA", "0xB", "0xC"]
    book.remove("0xB")
    assert book.liquidatable(critical) == ["0xA", "0xC"]
    book.update(_usdc_account("0xC", 1_000, 1_000), market, NOW)  # headroom 0 now
    assert book.liquidatable(critical) == ["0xC", "0xA"]


def test_an_account_already_under_is_liquidatable_at_its_own_index() -> None:
    book = RiskBook()
    risk = book.update(_usdc_account("0xA", 1_000, 999), _market(), NOW)
    assert risk.critical_index_ray == RAY
    assert book.liquidatable(RAY) == ["0xA"]


def test_unpriced_accounts_are_set_aside_and_never_liquidatable() -> None:
    book = RiskBook()
    stale_weth = _market(weth_updated_at=NOW - 3_601)
    # Deeply under water at any price it could be given, but its WETH cannot be valued.
    under = _state(10**9, RAY, balances={USDC: 1, WETH: 1}, address="0xA")
    risk = book.update(under, stale_weth, NOW)
    assert not risk.valued
    assert isinstance(risk.unpriced, PriceUnavailableError)
    assert risk.unpriced.token == WETH
    assert "stale" in risk.unpriced.reason
    assert risk.critical_index_ray == NEVER
    # Underlying alone needs no price, and a zero WETH balance needs none either.
    book.update(_usdc_account("0xB", 1_000, 999), stale_weth, NOW)
    book.update(_state(1_000, RAY, balances={USDC: 999, WETH: 0}, address="0xC"), stale_weth, NOW)

    assert book.liquidatable(MAX_UINT256) == ["0xB", "0xC"]
    assert book.unpriced() == [risk]
    assert [r.account for r in book.nearest()] == ["0xB", "0xC", "0xA"]

    # A fresh price brings it back, at its true critical index (already under).
    revalued = book.update(under, _market(), NOW)
    assert revalued.valued
    assert revalued.critical_index_ray == RAY
    assert book.unpriced() == []
    assert book.liquidatable(RAY) == ["0xA", "0xB", "0xC"]


def test_a_stale_underlying_price_leaves_pure_underlying_accounts_valued() -> None:
    book = RiskBook()
    stale_usdc = _market(usdc_updated_at=NOW - 3_601)
    assert book.update(_usdc_account("0xA", 1_000, 1_100), stale_usdc, NOW).valued
    mixed = book.update(
        _state(1_000, RAY, balances={USDC: 1, WETH: 10**18}, address="0xB"), stale_usdc, NOW
    )
    assert mixed.unpriced is not None
    assert mixed.unpriced.token == USDC  # the contract checks the token, then the underlying


def test_book_weighted_value_and_critical_index_match_the_health_math() -> None:
    market = _market(fee_bps=1_000)
    account = _state(
        2_500 * 10**6,
        11 * RAY // 10,
        accrued_interest=3 * 10**6,
        accrued_fees=10**5,
        balances={USDC: 500 * 10**6, WETH: 15 * 10**17},
    )
    risk = RiskBook().update(account, market, NOW)
    # 1.5 WETH at 2,000 = 3,000 USDC at 80 % = 2,400, plus 500 at 100 %.
    assert risk.weighted_value == collateral_value(account, market, NOW).weighted_value
    assert risk.weighted_value == 2_900 * 10**6
    assert risk.critical_index_ray == critical_index(account, 2_900 * 10**6, 1_000)
    assert not _liquidatable_at(account, risk.weighted_value, risk.critical_index_ray - 1, 1_000)
    assert _liquidatable_at(account, risk.weighted_value, risk.critical_index_ray, 1_000)


@pytest.mark.parametrize("fee_bps", [0, 1, 2_500, 10_000])
def test_liquidatable_prefix_equals_brute_force(fee_bps: int) -> None:
    market = _market(fee_bps=fee_bps)
    accounts = [
        _state(
            1_000 + 37 * i,
            RAY + i * 10**24,
            accrued_interest=i % 5,
            accrued_fees=i % 3,
            balances={USDC: 1_000 + 53 * i},
            address=f"0x{i:02d}",
        )
        for i in range(40)
    ]
    book = RiskBook()
    for account in accounts:
        book.update(account, market, NOW)
    for index in range(RAY, 2 * RAY, RAY // 97):
        expected = {
            a.address
            for a in accounts
            if index >= a.cumulative_index_ray
            and debt_at(a, index, fee_bps).total > a.balances[USDC]
        }
        found = book.liquidatable(index)
        # Critical indexes are never below an account's own index, so accounts the pool index
        # has not reached yet (the keeper never meets them) are not in the prefix either.
        assert set(found) == expected
        assert found == [risk.account for risk in book.nearest()][: len(found)]


# ------------------------------------------------------------------ rebuild in bulk


def _bulk_book(accounts: list[CreditAccountState], market: Market, horizon: int) -> RiskBook:
    """A book valued from scratch as the monitor's rebuild does: token columns, sorted once."""
    holdings: dict[str, dict[str, int]] = {}
    for account in accounts:
        for token, balance in account.balances.items():
            if balance:
                holdings.setdefault(token, {})[account.address] = balance
    book = RiskBook()
    book.revalue_all({a.address: a for a in accounts}, holdings, market, NOW, horizon)
    return book


def _filed(book: RiskBook) -> list[tuple[str, int, int, str | None]]:
    """The book's order with each account's figures (refusals by message: errors compare by
    identity)."""
    return [
        (r.account, r.weighted_value, r.critical_index_ray, None if r.valued else str(r.unpriced))
        for r in book.nearest()
    ]


def test_rebuild_orders_every_account_as_one_by_one_updates_do() -> None:
    """The bulk rebuild files every account under the critical index the health math gives,
    ties by address, unpriced ones last: the order one `update` per account gives, whatever
    the order accounts come in."""
    market = _market(weth_updated_at=NOW, fee_bps=700)
    weth_only = _market(usdc_updated_at=NOW - 3_601)  # USDC stale: WETH holders unpriced
    accounts = [
        _state(
            1_000 + 37 * (i % 7),
            RAY + (i % 3) * 10**24,
            accrued_interest=i % 5,
            balances={USDC: 1_100 + 53 * (i % 4), WETH: (i % 3) * 10**14},
            address=f"0x{i:02d}",
        )
        for i in range(40)
    ]
    accounts.append(_state(0, RAY, balances={USDC: 5}, address="0xNOPRINCIPAL"))
    for valued_with in (market, weth_only):
        one_by_one = RiskBook()
        for account in reversed(accounts):
            one_by_one.update(account, valued_with, NOW)
        expected = _filed(one_by_one)
        for horizon in (RAY, RAY + RAY // 100, 3 * RAY):
            bulk = _bulk_book(accounts[::2] + accounts[1::2], valued_with, horizon)
            assert _filed(bulk) == expected
            for index in (RAY, RAY + RAY // 1_000, 2 * RAY, MAX_UINT256):
                assert bulk.liquidatable(index) == one_by_one.liquidatable(index)
    # The order itself: by critical index (ties by address), as the health math gives it.
    keys = [(r.critical_index_ray, r.account) for r in _bulk_book(accounts, market, RAY).nearest()]
    assert keys == sorted(keys)
    for critical, address in keys:
        account = next(a for a in accounts if a.address == address)
        weighted = collateral_value(account, market, NOW).weighted_value
        assert critical == critical_index(account, weighted, 700)


def test_an_account_beyond_the_horizon_is_found_once_interest_reaches_it() -> None:
    """Far accounts carry no critical index; the monitor moves the horizon as the index nears
    it, and an account interest alone puts under is found at exactly its critical index."""
    book = _bulk_book([_usdc_account("0xA", 1_000, 1_100)], _market(), RAY + RAY // 100)
    critical = RAY * 1_101 // 1_000  # 10 % of headroom: far beyond a 1 % horizon
    assert book.liquidatable(RAY + RAY // 100) == []
    assert book.liquidatable(critical - 1) == []  # beyond the horizon: every account walked
    assert book.liquidatable(critical) == ["0xA"]
    book.set_horizon(critical)
    assert book.liquidatable(critical - 1) == []
    assert book.liquidatable(critical) == ["0xA"]
    risk = book.get("0xA")
    assert risk is not None
    assert risk.critical_index_ray == critical
