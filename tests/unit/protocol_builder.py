"""Hand-built protocol events for state and risk tests without a chain.

`Chain` hands out log positions in order, so events built with it apply in chain order. `Deployed`
is one market as its deployment announces it: the events a keeper back-filling from the deploy
block would see first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils.address import to_checksum_address

from keeper.protocol.events import (
    AnswerUpdated,
    BalanceUpdated,
    CollateralTokenSet,
    CreditAccountClosed,
    CreditAccountLiquidated,
    CreditAccountOpened,
    CreditManagerInitialized,
    DebtUpdated,
    FeesSet,
    InterestRateUpdated,
    LogPosition,
    PriceFeedSet,
    ProtocolEvent,
)
from keeper.state.store import MarketState

RAY = 10**27
T0 = 1_700_000_000


def address(label: int) -> str:
    """A distinct checksummed address per label (mixed case, as the decoder produces)."""
    return to_checksum_address(f"0x{label:08x}" + "c0ffee" * 5 + "ab")


@dataclass(frozen=True, slots=True)
class Token:
    symbol: str
    address: str
    decimals: int
    feed: str
    feed_decimals: int
    staleness: int
    threshold_bps: int


@dataclass
class Chain:
    """Positions in chain order: each call is the next log, a new block every `per_block`."""

    block: int = 100
    index: int = 0
    per_block: int = 1_000

    def at(self, emitter: str) -> LogPosition:
        position = LogPosition(emitter, self.block, f"0x{self.block:064x}", self.index)
        self.index += 1
        if self.index == self.per_block:
            self.block, self.index = self.block + 1, 0
        return position


@dataclass
class Deployed:
    """One market: manager, pool, oracle, and its tokens with their feeds."""

    chain: Chain
    manager: str
    pool: str
    oracle: str
    underlying: Token
    tokens: dict[str, Token] = field(default_factory=dict)

    def market_state(self) -> MarketState:
        return MarketState(self.manager, self.underlying.address, self.pool, self.oracle)

    def token(self, symbol: str) -> str:
        return self.tokens[symbol].address

    def deploy_events(
        self,
        *,
        rate_ray: int = 0,
        index_ray: int = RAY,
        timestamp: int = T0,
        fee_interest_bps: int = 1_000,
        answers: dict[str, int] | None = None,
        updated_at: int = T0,
    ) -> list[ProtocolEvent]:
        at = self.chain.at
        events: list[ProtocolEvent] = [
            CreditManagerInitialized(
                at(self.manager), self.underlying.address, self.pool, self.oracle, address(999)
            )
        ]
        events += [
            CollateralTokenSet(at(self.manager), t.address, t.threshold_bps)
            for t in self.tokens.values()
        ]
        events.append(FeesSet(at(self.manager), fee_interest_bps, 150, 400))
        events.append(InterestRateUpdated(at(self.pool), rate_ray, index_ray, timestamp))
        events += [
            PriceFeedSet(
                at(self.oracle), t.address, t.feed, t.decimals, t.feed_decimals, t.staleness
            )
            for t in self.tokens.values()
        ]
        for symbol, answer in (answers or {}).items():
            events.append(self.answer(symbol, answer, updated_at))
        return events

    def answer(self, symbol: str, answer: int, updated_at: int, round_id: int = 1) -> AnswerUpdated:
        token = self.tokens[symbol]
        return AnswerUpdated(self.chain.at(token.feed), answer, round_id, updated_at)

    def open(
        self,
        account: str,
        owner: str,
        *,
        principal: int,
        index_ray: int = RAY,
        balances: dict[str, int] | None = None,
        accrued_interest: int = 0,
        accrued_fees: int = 0,
    ) -> list[ProtocolEvent]:
        """The events of an open (and of any later actions) leaving the account in this state."""
        events: list[ProtocolEvent] = [
            CreditAccountOpened(self.chain.at(self.manager), account, owner)
        ]
        events.append(self.debt(account, principal, index_ray, accrued_interest, accrued_fees))
        events += [
            self.balance(account, symbol, amount) for symbol, amount in (balances or {}).items()
        ]
        return events

    def debt(
        self,
        account: str,
        principal: int,
        index_ray: int = RAY,
        accrued_interest: int = 0,
        accrued_fees: int = 0,
    ) -> DebtUpdated:
        return DebtUpdated(
            self.chain.at(self.manager),
            account,
            principal,
            index_ray,
            accrued_interest,
            accrued_fees,
        )

    def balance(self, account: str, symbol: str, amount: int) -> BalanceUpdated:
        return BalanceUpdated(self.chain.at(self.manager), account, self.token(symbol), amount)

    def close(self, account: str, owner: str) -> CreditAccountClosed:
        return CreditAccountClosed(self.chain.at(self.manager), account, owner, owner)

    def liquidated(self, account: str, owner: str, liquidator: str) -> CreditAccountLiquidated:
        return CreditAccountLiquidated(
            self.chain.at(self.manager), account, owner, liquidator, liquidator, 10, 9, 8, 1, 0, 0
        )


def usdc_market(chain: Chain, *, base: int = 0, oracle: str | None = None) -> Deployed:
    """A USDC market with WETH and WBTC collateral; labels offset by `base` so two markets
    built in one test have distinct addresses (except a shared `oracle`, if given)."""

    def token(symbol: str, n: int, decimals: int, staleness: int, lt: int) -> Token:
        return Token(symbol, address(base + n), decimals, address(base + 100 + n), 8, staleness, lt)

    usdc = token("USDC", 1, 6, 86_400, 9_000)
    return Deployed(
        chain,
        manager=address(base + 10),
        pool=address(base + 11),
        oracle=oracle or address(base + 12),
        underlying=usdc,
        tokens={
            "USDC": usdc,
            "WETH": token("WETH", 2, 18, 3_600, 8_000),
            "WBTC": token("WBTC", 3, 8, 7_200, 7_500),
        },
    )


PRICES = {"USDC": 1_00000000, "WETH": 2_000_00000000, "WBTC": 60_000_00000000}
