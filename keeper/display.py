"""Numbers and tables for people: amounts truncated, never rounded up (a health factor of
0.99999 must not read as 1.0000), and aligned text columns."""

from __future__ import annotations

from collections.abc import Sequence

from keeper.risk.health import MAX_UINT256


def format_units(amount: int, decimals: int, places: int = 2) -> str:
    """A token amount for display, truncated (never rounded up) to `places` decimals."""
    whole, fraction = divmod(amount, 10**decimals)
    if places == 0:
        return f"{whole:,}"
    shown = fraction * 10**places // 10**decimals
    return f"{whole:,}.{shown:0{places}d}"


def format_health_factor(health_factor_wad: int) -> str:
    """0.9731 (4 places, truncated); "inf" for an account without debt."""
    return "inf" if health_factor_wad == MAX_UINT256 else format_units(health_factor_wad, 18, 4)


def aligned_columns(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under a header row and a rule."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths if width).rstrip())
    return "\n".join(lines)
