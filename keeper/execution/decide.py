"""Whether a liquidation is worth sending: its premium against the gas it costs.

Both sides are in the market's underlying, in its smallest unit. Gas is paid in the native coin,
so its cost is valued through the oracle's prices of the wrapped native token and the underlying,
rounded up: a keeper that underestimates cost sends losing transactions.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeper.state.model import TokenPrice

NATIVE_DECIMALS = 18


@dataclass(frozen=True, slots=True)
class LiquidationDecision:
    liquidate: bool
    reason: str  # "profitable", "emergency" or "unprofitable"
    expected_profit: int  # premium - gas cost, in the underlying; negative when it loses money


def decide_liquidation(
    *, premium: int, gas_cost: int, min_profit: int, emergency: bool
) -> LiquidationDecision:
    """Liquidate when the premium covers gas and leaves at least `min_profit`; in an emergency
    (the protocol's solvency at stake) liquidate even at a loss."""
    profit = premium - gas_cost
    if profit >= min_profit:
        return LiquidationDecision(True, "profitable", profit)
    if emergency:
        return LiquidationDecision(True, "emergency", profit)
    return LiquidationDecision(False, "unprofitable", profit)


def gas_cost_in_underlying(
    gas_cost_wei: int, native_price: TokenPrice, underlying_price: TokenPrice
) -> int:
    """`gas_cost_wei` of the native coin in the underlying's smallest unit, rounded up.

    The same scaling as `PriceOracle.convert` (see `keeper.risk.health.convert`), with a ceiling
    instead of its floor. `native_price` is the wrapped native token's (e.g. WETH), which must have
    the native coin's 18 decimals for one wei to be one unit of it."""
    if native_price.token_decimals != NATIVE_DECIMALS:
        raise ValueError(
            f"the wrapped native token must have {NATIVE_DECIMALS} decimals, "
            f"not {native_price.token_decimals}"
        )
    if native_price.answer <= 0 or underlying_price.answer <= 0:
        raise ValueError("prices must be positive to value gas")
    scale_to = underlying_price.token_decimals + underlying_price.feed_decimals
    scale_from = native_price.token_decimals + native_price.feed_decimals
    numerator = gas_cost_wei * native_price.answer
    denominator = underlying_price.answer
    if scale_to >= scale_from:
        numerator *= 10 ** (scale_to - scale_from)
    else:
        denominator *= 10 ** (scale_from - scale_to)
    return -(-numerator // denominator)
