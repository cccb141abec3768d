"""Hand-computed cases for the exact health-factor math (no chain).

These pin the formulas to numbers worked out by hand, so a mistake shared by the Solidity and its
Python mirror cannot pass the property test unseen.
"""

from __future__ import annotations

import pytest

from keeper.risk.health import (
    MAX_UINT256,
    RAY,
    WAD,
    PriceUnavailableError,
    account_health,
    checked_price,
    collateral_value,
    convert,
    cumulative_index_at,
    debt_at,
    health_factor_wad,
)
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market, TokenPrice

USDC, WETH, LINK = "0xUSDC", "0xWETH", "0xLINK"
NOW = 1_700_000_000


def usd_price(answer: int, *, feed_decimals: int = 8, token_decimals: int) -> TokenPrice:
    return TokenPrice(answer, feed_decimals, token_decimals, updated_at=NOW, staleness_period=3600)


PRICES = {
    USDC: usd_price(1_00000000, token_decimals=6),
    WETH: usd_price(3_000_00000000, token_decimals=18),
    LINK: usd_price(15 * 10**18, feed_decimals=18, token_decimals=18),
}


def market(thresholds: dict[str, int], *, rate_ray: int = 0, fee_bps: int = 1_000) -> Market:
    return Market(
        underlying=USDC,
        interest_rate=InterestRate(RAY, NOW, rate_ray),
        fees=Fees(fee_bps, 150, 400),
        liquidation_thresholds_bps=thresholds,
        prices=PRICES,
    )


def account(
    balances: dict[str, int], principal: int, accrued: int = 0, fees: int = 0
) -> CreditAccountState:
    return CreditAccountState("0xCA", "0xOWNER", principal, RAY, accrued, fees, balances)


def test_index_grows_linearly_from_the_checkpoint() -> None:
    # 10 % a year for exactly one year on an index of 1.2 gives 1.2 * 1.1 = 1.32.
    year = 365 * 24 * 3600
    rate = InterestRate(12 * RAY // 10, NOW, RAY // 10 // year)
    index = cumulative_index_at(rate, NOW + year)
    assert index == 12 * RAY // 10 * (RAY + (RAY // 10 // year) * year) // RAY
    assert abs(index - 132 * RAY // 100) < 10**10
    assert cumulative_index_at(rate, NOW) == 12 * RAY // 10


def test_index_refuses_a_time_before_its_checkpoint() -> None:
    with pytest.raises(ValueError, match="precedes"):
        cumulative_index_at(InterestRate(RAY, NOW, 1), NOW - 1)


def test_debt_adds_new_interest_and_its_fee_to_what_was_accrued() -> None:
    # principal 1,000 USDC at index 1.0, now 1.05: 50 USDC new interest, 10 % fee on it (5);
    # 7 USDC of interest and 0.3 of fees were already accrued (at an earlier fee rate).
    position = account({}, principal=1_000_000000, accrued=7_000000, fees=300000)
    debt = debt_at(position, 105 * RAY // 100, fee_interest_bps=1_000)
    assert debt.principal == 1_000_000000
    assert debt.interest == 57_000000
    assert debt.fee == 5_300000
    assert debt.total == 1_062_300000


def test_conversion_scales_up_and_down_by_decimals() -> None:
    # 1 WETH at $3,000 is 3,000 USDC; 3,000 USDC is 1 WETH; 2 LINK (18-dec feed) at $15 is $30.
    assert convert(10**18, PRICES[WETH], PRICES[USDC]) == 3_000_000000
    assert convert(3_000_000000, PRICES[USDC], PRICES[WETH]) == 10**18
    assert convert(2 * 10**18, PRICES[LINK], PRICES[USDC]) == 30_000000


def test_conversion_rounds_down() -> None:
    # One USDC unit (1e-6) buys 1e-6 / 3,000 WETH = 333,333,333.3 wei: one wei less is 0 units.
    assert convert(333_333_333, PRICES[WETH], PRICES[USDC]) == 0
    assert convert(333_333_334, PRICES[WETH], PRICES[USDC]) == 1


def test_weighted_value_rounds_each_token_down() -> None:
    # 1,000 USDC at 95 % + 1 WETH ($3,000) at 85 % + 1 wei of LINK at 70 %.
    holdings = account({USDC: 1_000_000000, WETH: 10**18, LINK: 1}, principal=1)
    value = collateral_value(holdings, market({USDC: 9_500, WETH: 8_500, LINK: 7_000}), NOW)
    assert value.total_value == 4_000_000000
    assert value.weighted_value == 950_000000 + 2_550_000000


def test_zero_balances_need_no_price() -> None:
    prices = {USDC: PRICES[USDC]}  # no WETH feed at all
    holdings = account({USDC: 5, WETH: 0}, principal=1)
    thresholds = {USDC: 10_000, WETH: 10_000}
    value = collateral_value(
        holdings,
        Market(USDC, InterestRate(RAY, NOW, 0), Fees(0, 0, 0), thresholds, prices),
        NOW,
    )
    assert value.total_value == 5


def test_underlying_counts_one_to_one_even_with_a_stale_underlying_feed() -> None:
    stale = {USDC: TokenPrice(1_00000000, 8, 6, updated_at=0, staleness_period=1)}
    holdings = account({USDC: 123}, principal=1)
    thresholds = {USDC: 10_000}
    value = collateral_value(
        holdings,
        Market(USDC, InterestRate(RAY, NOW, 0), Fees(0, 0, 0), thresholds, stale),
        NOW,
    )
    assert value.total_value == 123


def test_staleness_boundary_matches_the_oracle() -> None:
    price = TokenPrice(1, 8, 18, updated_at=NOW, staleness_period=3600)
    assert checked_price(WETH, price, NOW + 3600) is price
    with pytest.raises(PriceUnavailableError, match="stale"):
        checked_price(WETH, price, NOW + 3601)


@pytest.mark.parametrize("answer", [0, -1])
def test_non_positive_answers_are_refused(answer: int) -> None:
    with pytest.raises(PriceUnavailableError, match="non-positive"):
        checked_price(WETH, TokenPrice(answer, 8, 18, NOW, 3600), NOW)


def test_missing_feed_is_refused() -> None:
    with pytest.raises(PriceUnavailableError, match="no price feed"):
        checked_price(WETH, None, NOW)


def test_health_factor_without_debt_is_max() -> None:
    assert health_factor_wad(10**30, 0) == MAX_UINT256


def test_unit_weights_give_the_seeds_formula() -> None:
    # Seeds: Hf = TV / (borrow + interest + fee). 4,000 USDC of value against 3,000 + 100 + 10.
    holdings = account({USDC: 1_000_000000, WETH: 10**18}, principal=3_000_000000)
    holdings = CreditAccountState(
        holdings.address,
        holdings.owner,
        3_000_000000,
        RAY,
        100_000000,
        10_000000,
        holdings.balances,
    )
    health = account_health(holdings, market({USDC: 10_000, WETH: 10_000}), NOW)
    assert health.debt.total == 3_110_000000
    assert health.health_factor_wad == 4_000_000000 * WAD // 3_110_000000
    assert not health.is_liquidatable


def test_an_account_exactly_at_one_is_not_liquidatable() -> None:
    holdings = account({USDC: 1_000_000000}, principal=1_000_000000)
    health = account_health(holdings, market({USDC: 10_000}), NOW)
    assert health.health_factor_wad == WAD
    assert not health.is_liquidatable
    below = account({USDC: 999_999999}, principal=1_000_000000)
    assert account_health(below, market({USDC: 10_000}), NOW).is_liquidatable
