"""The liquidator's two number helpers: USD thresholds in token units (exact, rounded up) and
health factors for people (never rounded up to 1)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from keeper.execution.liquidator import _usd_in_units

WAD = 10**18


@pytest.mark.parametrize(
    ("usd", "answer", "feed_decimals", "token_decimals", "units"),
    [
        # $5 of WETH at $2,000 (8-decimal feed): 0.0025 WETH, exact.
        (Decimal(5), 2_000_00000000, 8, 18, 2_500_000_000_000_000),
        # $5 of USDC at $1: 5,000,000 units, exact.
        (Decimal("5"), 1_00000000, 8, 6, 5_000_000),
        # $1 of USDC at $0.9999: 1,000,100.010001... units, rounded up.
        (Decimal(1), 99_990000, 8, 6, 1_000_101),
        # $0.1 at $3 (feed 8, token 6): 33,333.33... units -> 33,334. 0.1 is exact in Decimal.
        (Decimal("0.1"), 3_00000000, 8, 6, 33_334),
        # A third of a unit rounds up to a whole one.
        (Decimal(1), 3, 0, 0, 1),
        (Decimal(3), 3, 0, 0, 1),
        (Decimal(4), 3, 0, 0, 2),
        # $2.5 of WBTC at $60,000 with an 18-decimal feed: 4,166.66... sat -> 4,167.
        (Decimal("2.5"), 60_000 * 10**18, 18, 8, 4_167),
        # A price so high that the amount is a fraction of the smallest unit: still 1, not 0.
        (Decimal("0.000001"), 10**30, 8, 0, 1),
        (Decimal(0), 2_000_00000000, 8, 18, 0),
        # 1e-18 USD, 18-decimal token at $1 (feed 0): exactly one unit.
        (Decimal("1E-18"), 1, 0, 18, 1),
    ],
)
def test_usd_in_units_is_exact_and_rounds_up(
    usd: Decimal, answer: int, feed_decimals: int, token_decimals: int, units: int
) -> None:
    assert _usd_in_units(usd, answer, feed_decimals, token_decimals) == units


def test_usd_in_units_is_the_smallest_amount_worth_at_least_usd() -> None:
    # Worth of n units in USD is n * answer / 10^(token + feed); check the minimality exactly.
    usd, answer, feed_decimals, token_decimals = Decimal("12.345"), 1_234_56789012, 8, 18
    units = _usd_in_units(usd, answer, feed_decimals, token_decimals)
    scale = 10 ** (token_decimals + feed_decimals)
    numerator, denominator = usd.as_integer_ratio()
    assert units * answer * denominator >= numerator * scale
    assert (units - 1) * answer * denominator < numerator * scale
