"""Numbers for people: a health factor is truncated, never rounded up, so an account below 1
never reads as 1.0000 (no chain)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from keeper.display import aligned_columns, format_health_factor, format_units
from keeper.risk.health import MAX_UINT256, WAD


@pytest.mark.parametrize(
    ("wad", "shown"),
    [
        (WAD - 1, "0.9999"),
        (WAD - 10**13, "0.9999"),
        (99_995 * 10**13, "0.9999"),  # 0.99995 would round half-up to 1.0000: it must not
        (9_999 * 10**14, "0.9999"),
        (9_999 * 10**14 - 1, "0.9998"),
        (WAD, "1.0000"),
        (WAD + 10**14, "1.0001"),
        (97_319_999 * 10**10, "0.9731"),
        (WAD // 2, "0.5000"),
        (10**14, "0.0001"),
        (10**14 - 1, "0.0000"),
        (0, "0.0000"),
        (123 * WAD + 45_678 * 10**13, "123.4567"),
        (MAX_UINT256, "inf"),
    ],
)
def test_health_factor_truncates_to_four_places(wad: int, shown: str) -> None:
    assert format_health_factor(wad) == shown


def test_health_factor_below_one_never_reads_as_one() -> None:
    for wad in (WAD - 1, WAD - 10**10, WAD - 10**14, WAD - 10**14 - 1):
        assert Decimal(format_health_factor(wad)) < 1


def test_units_are_truncated_with_thousands_separators() -> None:
    assert format_units(1_234_567_891, 6) == "1,234.56"
    assert format_units(999_999, 6, 0) == "0"


def test_columns_align_under_a_rule() -> None:
    table = aligned_columns([("a", "bb"), ("ccc", "d")])
    assert table.splitlines() == ["a    bb", "---  --", "ccc  d"]
