"""The go/no-go of a liquidation and the value of its gas in the underlying, worked by hand."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.execution.decide import (
    LiquidationDecision,
    decide_liquidation,
    gas_cost_in_underlying,
)
from keeper.risk.health import convert
from keeper.state.model import TokenPrice

NOW = 1_700_000_000
GWEI = 10**9


def price(answer: int, *, feed_decimals: int = 8, token_decimals: int) -> TokenPrice:
    return TokenPrice(answer, feed_decimals, token_decimals, updated_at=NOW, staleness_period=3600)


WETH = price(3_000_00000000, token_decimals=18)  # $3,000
USDC = price(1_00000000, token_decimals=6)  # $1
DAI_AT_7 = price(7 * 10**18, feed_decimals=18, token_decimals=18)  # $7 through an 18-decimal feed


def test_profitable_when_the_profit_reaches_the_minimum() -> None:
    # 1,000 premium - 300 gas = 700 >= 500; exactly the minimum is enough too.
    assert decide_liquidation(premium=1_000, gas_cost=300, min_profit=500, emergency=False) == (
        LiquidationDecision(True, "profitable", 700)
    )
    assert decide_liquidation(premium=1_000, gas_cost=500, min_profit=500, emergency=False) == (
        LiquidationDecision(True, "profitable", 500)
    )


def test_unprofitable_below_the_minimum() -> None:
    # 1,000 - 600 = 400 < 500: a gain, but not enough.
    assert decide_liquidation(premium=1_000, gas_cost=600, min_profit=500, emergency=False) == (
        LiquidationDecision(False, "unprofitable", 400)
    )


def test_emergency_liquidates_even_at_a_loss() -> None:
    # 100 - 300 = -200: the keeper pays 200 to protect the protocol.
    assert decide_liquidation(premium=100, gas_cost=300, min_profit=500, emergency=True) == (
        LiquidationDecision(True, "emergency", -200)
    )


def test_a_profitable_emergency_is_reported_as_profitable() -> None:
    assert decide_liquidation(premium=1_000, gas_cost=300, min_profit=500, emergency=True) == (
        LiquidationDecision(True, "profitable", 700)
    )


def test_gas_in_a_six_decimal_underlying() -> None:
    # 21,000 gas at 10 gwei = 2.1e14 wei = 0.00021 ETH; at $3,000 that is $0.63 = 630,000 units
    # of USDC. Exact, so no rounding.
    assert gas_cost_in_underlying(21_000 * 10 * GWEI, WETH, USDC) == 630_000


def test_gas_is_rounded_up_never_down() -> None:
    # 1 wei = $3e-15 = 3e-9 units of USDC: the oracle's floor says 0, a cost is at least 1.
    assert convert(1, WETH, USDC) == 0
    assert gas_cost_in_underlying(1, WETH, USDC) == 1
    assert gas_cost_in_underlying(0, WETH, USDC) == 0


def test_gas_in_an_underlying_with_more_scale_than_the_native() -> None:
    # 1 ETH = 3,000 / 7 = 428.571428... DAI (18 decimals): 428571428571428571428.57 -> ...429.
    assert gas_cost_in_underlying(10**18, WETH, DAI_AT_7) == 428_571_428_571_428_571_429
    # 1 wei = 428.57... of its smallest units -> 429.
    assert gas_cost_in_underlying(1, WETH, DAI_AT_7) == 429


def test_gas_needs_an_18_decimal_native_and_positive_prices() -> None:
    with pytest.raises(ValueError, match="18 decimals"):
        gas_cost_in_underlying(1, price(3_000_00000000, token_decimals=8), USDC)
    with pytest.raises(ValueError, match="positive"):
        gas_cost_in_underlying(1, WETH, price(0, token_decimals=6))
    with pytest.raises(ValueError, match="positive"):
        gas_cost_in_underlying(1, price(0, token_decimals=18), USDC)


@given(
    gas_cost_wei=st.integers(0, 10**24),
    native=st.builds(
        price, st.integers(1, 10**30), feed_decimals=st.integers(0, 18), token_decimals=st.just(18)
    ),
    underlying=st.builds(
        price,
        st.integers(1, 10**30),
        feed_decimals=st.integers(0, 18),
        token_decimals=st.integers(0, 24),
    ),
)
def test_gas_is_the_ceiling_of_the_oracles_exact_value(
    gas_cost_wei: int, native: TokenPrice, underlying: TokenPrice
) -> None:
    native_usd = Fraction(native.answer, 10 ** (native.token_decimals + native.feed_decimals))
    underlying_usd = Fraction(
        underlying.answer, 10 ** (underlying.token_decimals + underlying.feed_decimals)
    )
    exact = gas_cost_wei * native_usd / underlying_usd
    cost = gas_cost_in_underlying(gas_cost_wei, native, underlying)
    assert cost - 1 < exact <= cost
    assert cost - convert(gas_cost_wei, native, underlying) in (0, 1)
