"""The bulk valuation (`keeper.risk.terms`) equals the contract-mirroring reference
(`keeper.risk.health`) exactly: per-token terms sum to the weighted value, a price update moves the
sum by exactly the difference of one term, and the candidates' health is the reference's (no
chain)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from keeper.risk.health import (
    RAY,
    PriceUnavailableError,
    account_health,
    collateral_value,
    cumulative_index_at,
    debt_at,
)
from keeper.risk.terms import (
    Conversion,
    account_terms,
    conversions,
    health_at,
    total_debt_at,
    weighted_terms,
)
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market, TokenPrice
from tests.unit.test_risk_book import PROPERTY

NOW = 1_700_000_000
UNDERLYING = "0xUNDERLYING"
TOKENS = ("0xT1", "0xT2", "0xT3")
STALENESS = 3_600


def price(
    decimals: int, feed_decimals: int, *, usable: bool = True
) -> st.SearchStrategy[TokenPrice]:
    """A feed answer of between a millionth and a million dollars (or an unusable one)."""
    answers = st.integers(10 ** max(feed_decimals - 6, 0), 10 ** (feed_decimals + 6))
    fresh = st.integers(NOW - STALENESS, NOW)
    if not usable:
        answers = st.one_of(answers, st.sampled_from([0, -1]))
        fresh = st.one_of(fresh, st.integers(NOW - 3 * STALENESS, NOW - STALENESS - 1))
    return st.builds(
        TokenPrice, answers, st.just(feed_decimals), st.just(decimals), fresh, st.just(STALENESS)
    )


@st.composite
def markets(draw: st.DrawFn, *, usable: bool = False) -> Market:
    """An underlying of 6, 8 or 18 decimals and three collaterals, each behind a feed of 8 or 18
    decimals; some prices may be missing, non-positive or stale unless `usable`."""
    decimals = st.sampled_from([6, 8, 18])
    feeds = st.sampled_from([8, 18])
    prices = {UNDERLYING: draw(price(draw(decimals), draw(feeds), usable=usable))}
    for token in TOKENS:
        if usable or draw(st.integers(0, 9)):
            prices[token] = draw(price(draw(decimals), draw(feeds), usable=usable))
    thresholds = {
        token: draw(st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 9_999, 10_000])))
        for token in (UNDERLYING, *TOKENS)
    }
    rate = InterestRate(RAY + draw(st.integers(0, RAY)), NOW - 1_000, draw(st.integers(0, 10**20)))
    fees = Fees(draw(st.integers(0, 10_000)), 150, 400)
    return Market(UNDERLYING, rate, fees, thresholds, prices)


@st.composite
def accounts(draw: st.DrawFn) -> CreditAccountState:
    """Any mix of balances (zeros included, in token order or not) and any debt."""
    tokens = draw(st.permutations((UNDERLYING, *TOKENS)))
    balances = {
        token: draw(st.one_of(st.just(0), st.integers(1, 10**30), st.integers(1, 1_000)))
        for token in tokens[: draw(st.integers(0, len(tokens)))]
    }
    return CreditAccountState(
        "0xA",
        "0xOWNER",
        draw(st.integers(0, 10**30)),
        RAY + draw(st.integers(0, RAY)),
        draw(st.integers(0, 10**24)),
        draw(st.integers(0, 10**24)),
        balances,
    )


@PROPERTY
@given(market=markets(), account=accounts())
def test_terms_sum_to_the_weighted_value_or_refuse_like_the_oracle(
    market: Market, account: CreditAccountState
) -> None:
    found = conversions(market, NOW)
    terms = account_terms(account, found)
    try:
        value = collateral_value(account, market, NOW)
    except PriceUnavailableError:
        assert terms is None
        return
    assert terms is not None
    assert sum(terms.values()) == value.weighted_value
    assert set(terms) == {token for token, balance in account.balances.items() if balance}


@PROPERTY
@given(market=markets(), account=accounts(), later=st.integers(0, 10_000))
def test_health_at_is_the_reference_health(
    market: Market, account: CreditAccountState, later: int
) -> None:
    timestamp = NOW + later
    index = cumulative_index_at(market.interest_rate, timestamp)
    fast = health_at(account, conversions(market, timestamp), index, market.fees.fee_interest_bps)
    try:
        reference = account_health(account, market, timestamp)
    except PriceUnavailableError:
        assert fast is None
        return
    assert fast == reference
    assert total_debt_at(account, index, market.fees.fee_interest_bps) == reference.debt.total


@PROPERTY
@given(
    account=accounts(),
    index_offset=st.one_of(st.integers(0, 10**6), st.integers(0, 10 * RAY)),
    fee_bps=st.integers(0, 10_000),
)
def test_total_debt_at_is_calc_debt(
    account: CreditAccountState, index_offset: int, fee_bps: int
) -> None:
    index = account.cumulative_index_ray + index_offset
    assert total_debt_at(account, index, fee_bps) == debt_at(account, index, fee_bps).total


@PROPERTY
@given(
    before=markets(usable=True),
    account=accounts(),
    token=st.sampled_from(TOKENS),
    factor_bps=st.one_of(st.integers(1, 30_000), st.sampled_from([1, 5_000, 10_000, 20_000])),
)
@example(
    before=Market(
        UNDERLYING,
        InterestRate(RAY, NOW, 0),
        Fees(0, 150, 400),
        {UNDERLYING: 10_000, "0xT1": 8_000, "0xT2": 1, "0xT3": 10_000},
        {
            UNDERLYING: TokenPrice(10**8, 8, 6, NOW, STALENESS),
            "0xT1": TokenPrice(3 * 10**21, 18, 18, NOW, STALENESS),
            "0xT2": TokenPrice(7, 8, 8, NOW, STALENESS),
            "0xT3": TokenPrice(10**8, 8, 18, NOW, STALENESS),
        },
    ),
    account=CreditAccountState(
        "0xA", "0xOWNER", 10**9, RAY, 0, 0, {"0xT1": 10**18 + 1, UNDERLYING: 999_999}
    ),
    token="0xT1",
    factor_bps=7_000,
)
def test_a_price_update_moves_the_sum_by_one_term_exactly(
    before: Market, account: CreditAccountState, token: str, factor_bps: int
) -> None:
    """What `RiskBook.reprice` relies on: replace the token's term, keep the others."""
    old_price = before.prices[token]
    new_price = TokenPrice(
        max(1, old_price.answer * factor_bps // 10_000),
        old_price.feed_decimals,
        old_price.token_decimals,
        NOW,
        STALENESS,
    )
    after = Market(
        before.underlying,
        before.interest_rate,
        before.fees,
        before.liquidation_thresholds_bps,
        {**before.prices, token: new_price},
    )
    old_terms = account_terms(account, conversions(before, NOW))
    assert old_terms is not None
    old_weighted = sum(old_terms.values())
    balance = account.balances.get(token, 0)
    conversion = conversions(after, NOW)[token]
    assert conversion is not None
    (new_term,) = weighted_terms([balance], conversion)
    moved = old_weighted - old_terms.get(token, 0) + (new_term if balance else 0)
    assert moved == collateral_value(account, after, NOW).weighted_value


@PROPERTY
@given(
    balances=st.lists(st.integers(0, 10**30), max_size=20),
    conversion=st.builds(
        Conversion, st.integers(1, 10**40), st.integers(1, 10**40), st.integers(0, 10_000)
    ),
)
def test_bulk_terms_are_each_holders_term(balances: list[int], conversion: Conversion) -> None:
    expected = [
        b * conversion.multiplier // conversion.divisor * conversion.threshold_bps // 10_000
        for b in balances
    ]
    assert weighted_terms(balances, conversion) == expected
    assert weighted_terms(balances, Conversion(1, 1, conversion.threshold_bps)) == [
        b * conversion.threshold_bps // 10_000 for b in balances
    ]
