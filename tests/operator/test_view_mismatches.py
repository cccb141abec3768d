"""The comparison behind `keeper account`'s verdict: a differing figure is named with both
values, and an account the keeper cannot value matches only views that refuse it too. (On a
healthy chain the views never differ, so the devnet tests can only show the match.)"""

from __future__ import annotations

from keeper.operator.accounts import Mismatch, view_mismatches
from keeper.operator.valuation import Valuation
from keeper.protocol.calls import CallResult
from keeper.protocol.errors import RevertReason
from keeper.risk.health import WAD, AccountHealth, CollateralValue, Debt
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market

MANAGER = "0x" + "aa" * 20
TOKEN = "0x" + "bb" * 20
STALE = RevertReason("StalePrice", {"token": TOKEN, "updatedAt": 5})
MARKET = Market(TOKEN, InterestRate(10**27, 0, 0), Fees(1_000, 100, 400), {TOKEN: 9_000}, {})
ACCOUNT = CreditAccountState("0x" + "cc" * 20, "0x" + "dd" * 20, 900, 10**27, 0, 0, {TOKEN: 1_000})
DEBT = Debt(900, 5, 1)


def valued() -> Valuation:
    health = AccountHealth(CollateralValue(1_000, 900), DEBT, 900 * WAD // 906)
    return Valuation(MANAGER, MARKET, ACCOUNT, DEBT, health, None)


def matching_views() -> list[CallResult]:
    """calcDebt, calcTotalValue, calcHealthFactor and calcLiquidationPayout as the contract
    answers them for `valued()`."""
    return [
        CallResult((900, 5, 1), None),
        CallResult((1_000, 900), None),
        CallResult((900 * WAD // 906,), None),
        CallResult(((960, 905, 11, 44, 0),), None),
    ]


def test_equal_figures_match() -> None:
    payout = valued().payout()
    assert payout is not None
    assert (payout.amount_paid, payout.repaid_to_pool, payout.protocol_fees) == (960, 905, 11)
    assert view_mismatches(valued(), matching_views()) == []


def test_each_differing_figure_is_named_with_both_values() -> None:
    results = matching_views()
    results[1] = CallResult((1_001, 900), None)
    results[3] = CallResult(((961, 905, 11, 44, 0),), None)
    assert view_mismatches(valued(), results) == [
        Mismatch("total value", 1_000, 1_001),
        Mismatch("payout amount paid", 960, 961),
    ]


def test_unpriced_matches_only_a_refusing_view() -> None:
    unpriced = Valuation(MANAGER, MARKET, ACCOUNT, DEBT, None, "price of X unavailable: stale")
    refused = [
        CallResult((900, 5, 1), None),
        CallResult(None, STALE),
        CallResult(None, STALE),
    ]
    assert view_mismatches(unpriced, refused) == []
    answered = [CallResult((900, 5, 1), None), CallResult((1_000, 900), None), refused[2]]
    (first, second) = view_mismatches(unpriced, answered)
    assert first == Mismatch("total value", "unpriced (price of X unavailable: stale)", 1_000)
    assert second.figure == "weighted value"
