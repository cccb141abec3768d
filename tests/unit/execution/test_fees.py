"""EIP-1559 pricing and replacement bumps: hand-computed cases and the bump's guarantees."""

from __future__ import annotations

from fractions import Fraction
from math import ceil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeper.execution.fees import (
    DEFAULT_MIN_BUMP_BPS,
    Eip1559Fees,
    bumped_fees,
    initial_fees,
    max_cost_wei,
)

GWEI = 10**9


def test_default_bump_meets_the_geth_ten_percent_rule() -> None:
    assert DEFAULT_MIN_BUMP_BPS >= 1_000


def test_initial_max_fee_is_twice_the_base_fee_plus_the_tip() -> None:
    # 2 * 10 gwei + 1 gwei = 21 gwei, well under the 100 gwei cap.
    assert initial_fees(10 * GWEI, GWEI, max_fee_cap=100 * GWEI) == Eip1559Fees(21 * GWEI, GWEI)


def test_initial_max_fee_stops_at_the_cap() -> None:
    # 2 * 10 + 2 = 22 gwei wanted, 15 allowed; the 2 gwei tip still fits under it.
    assert initial_fees(10 * GWEI, 2 * GWEI, max_fee_cap=15 * GWEI) == Eip1559Fees(
        15 * GWEI, 2 * GWEI
    )


def test_initial_tip_is_clipped_to_a_cap_below_it() -> None:
    assert initial_fees(10 * GWEI, 2 * GWEI, max_fee_cap=GWEI) == Eip1559Fees(GWEI, GWEI)


@pytest.mark.parametrize(
    ("base", "tip", "cap"), [(-1, 0, 10), (1, -1, 10), (1, 0, -1)], ids=["base", "tip", "cap"]
)
def test_initial_fees_refuse_negative_inputs(base: int, tip: int, cap: int) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        initial_fees(base, tip, max_fee_cap=cap)


def test_bump_refuses_negative_inputs() -> None:
    with pytest.raises(ValueError, match="min_bump_bps must not be negative"):
        bumped_fees(Eip1559Fees(10, 1), 1, min_bump_bps=-1, max_fee_cap=100)


def test_fees_refuse_a_tip_above_the_max_fee() -> None:
    with pytest.raises(ValueError, match="above max fee"):
        Eip1559Fees(max_fee_per_gas=1, max_priority_fee_per_gas=2)
    with pytest.raises(ValueError, match="negative priority fee"):
        Eip1559Fees(max_fee_per_gas=1, max_priority_fee_per_gas=-1)


def test_bump_raises_both_fields_by_the_minimum() -> None:
    # 21 gwei * 1.1 = 23.1 gwei beats 2 * 10 + 1.1 = 21.1 gwei; tip 1 gwei * 1.1 = 1.1 gwei.
    previous = Eip1559Fees(21 * GWEI, GWEI)
    assert bumped_fees(previous, 10 * GWEI, min_bump_bps=1_000, max_fee_cap=100 * GWEI) == (
        Eip1559Fees(23_100_000_000, 1_100_000_000)
    )


def test_bump_follows_a_risen_base_fee() -> None:
    # Base fee now 20 gwei: 2 * 20 + 1.1 = 41.1 gwei is more than the 23.1 gwei minimum.
    previous = Eip1559Fees(21 * GWEI, GWEI)
    assert bumped_fees(previous, 20 * GWEI, min_bump_bps=1_000, max_fee_cap=100 * GWEI) == (
        Eip1559Fees(41_100_000_000, 1_100_000_000)
    )


def test_bump_rounds_up_and_is_strictly_higher() -> None:
    # 11 * 1.1 = 12.1 -> 13; 1 * 1.1 = 1.1 -> 2 (a floor would leave the tip at 1 and geth would
    # refuse). A zero tip still has to rise, by 1 wei.
    assert bumped_fees(Eip1559Fees(11, 1), 0, min_bump_bps=1_000, max_fee_cap=100) == (
        Eip1559Fees(13, 2)
    )
    assert bumped_fees(Eip1559Fees(10, 0), 0, min_bump_bps=1_000, max_fee_cap=100) == (
        Eip1559Fees(11, 1)
    )


def test_bump_is_capped_but_kept_while_the_cap_allows_the_minimum() -> None:
    # Wanted 41.1 gwei for the base fee of 20 gwei, capped at 30: still above the 23.1 minimum.
    previous = Eip1559Fees(21 * GWEI, GWEI)
    assert bumped_fees(previous, 20 * GWEI, min_bump_bps=1_000, max_fee_cap=30 * GWEI) == (
        Eip1559Fees(30 * GWEI, 1_100_000_000)
    )


def test_no_bump_when_the_cap_is_below_the_minimum_max_fee() -> None:
    previous = Eip1559Fees(21 * GWEI, GWEI)
    assert bumped_fees(previous, GWEI, min_bump_bps=1_000, max_fee_cap=23_100_000_000) == (
        Eip1559Fees(23_100_000_000, 1_100_000_000)
    )
    assert bumped_fees(previous, GWEI, min_bump_bps=1_000, max_fee_cap=23_099_999_999) is None


def test_max_cost_is_the_gas_limit_at_the_max_fee() -> None:
    # 21,000 gas at 21 gwei = 441,000 gwei = 0.000441 ETH.
    assert max_cost_wei(21_000, Eip1559Fees(21 * GWEI, GWEI)) == 441_000 * GWEI


@st.composite
def fees(draw: st.DrawFn) -> Eip1559Fees:
    max_fee = draw(st.integers(0, 10**13))
    return Eip1559Fees(max_fee, draw(st.integers(0, max_fee)))


def minimum(previous: int, bump_bps: int) -> int:
    """What a replacement field must reach: the bump rounded up, and strictly above."""
    return max(ceil(Fraction(previous * (10_000 + bump_bps), 10_000)), previous + 1)


@given(
    previous=fees(),
    base=st.integers(0, 10**13),
    bump_bps=st.integers(0, 20_000),
    cap=st.integers(0, 10**14),
)
def test_bump_meets_both_minimums_and_the_cap_or_is_refused_only_by_the_cap(
    previous: Eip1559Fees, base: int, bump_bps: int, cap: int
) -> None:
    bumped = bumped_fees(previous, base, min_bump_bps=bump_bps, max_fee_cap=cap)
    min_max_fee = minimum(previous.max_fee_per_gas, bump_bps)
    if bumped is None:
        assert cap < min_max_fee
        return
    assert bumped.max_fee_per_gas >= min_max_fee
    assert bumped.max_priority_fee_per_gas >= minimum(previous.max_priority_fee_per_gas, bump_bps)
    assert bumped.max_fee_per_gas <= cap
    assert bumped.max_fee_per_gas >= min(cap, 2 * base + bumped.max_priority_fee_per_gas)


@given(base=st.integers(0, 10**13), tip=st.integers(0, 10**12), cap=st.integers(0, 10**14))
def test_initial_fees_are_valid_and_within_the_cap(base: int, tip: int, cap: int) -> None:
    first = initial_fees(base, tip, max_fee_cap=cap)
    assert first.max_fee_per_gas == min(cap, 2 * base + tip)
    assert first.max_priority_fee_per_gas == min(tip, first.max_fee_per_gas)
