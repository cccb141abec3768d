"""What the devnet deploys: tokens, feeds, markets and their risk parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keeper.risk.health import RAY

SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class TokenSpec:
    symbol: str
    decimals: int
    feed_decimals: int
    price_answer: int  # USD, in feed decimals


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One CreditManager and its pool, lending `underlying`."""

    underlying: str
    apr_bps: int
    liquidation_thresholds_bps: Mapping[str, int]  # includes the underlying
    pool_liquidity: int  # whole tokens

    @property
    def rate_per_second_ray(self) -> int:
        return self.apr_bps * RAY // (10_000 * SECONDS_PER_YEAR)


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    tokens: tuple[TokenSpec, ...]
    markets: tuple[MarketSpec, ...]
    fee_interest_bps: int = 1_000
    liquidation_fee_bps: int = 150
    liquidation_premium_bps: int = 400
    staleness_period_s: int = 3 * 3600
    dex_fee_bps: int = 30

    def token(self, symbol: str) -> TokenSpec:
        return next(t for t in self.tokens if t.symbol == symbol)


DEFAULT_SPEC = ProtocolSpec(
    tokens=(
        TokenSpec("USDC", decimals=6, feed_decimals=8, price_answer=1_00000000),
        TokenSpec("WETH", decimals=18, feed_decimals=8, price_answer=3_000_00000000),
        TokenSpec("WBTC", decimals=8, feed_decimals=8, price_answer=60_000_00000000),
        # An 18-decimal feed, so conversions scale in both directions.
        TokenSpec("LINK", decimals=18, feed_decimals=18, price_answer=15 * 10**18),
    ),
    markets=(
        MarketSpec(
            underlying="USDC",
            apr_bps=500,
            liquidation_thresholds_bps={"USDC": 9_500, "WETH": 8_500, "WBTC": 8_000, "LINK": 7_000},
            pool_liquidity=100_000_000,
        ),
        MarketSpec(
            underlying="WETH",
            apr_bps=200,
            liquidation_thresholds_bps={"WETH": 9_500, "USDC": 9_000, "WBTC": 8_500, "LINK": 7_000},
            pool_liquidity=50_000,
        ),
    ),
)
