"""The three branches of a liquidation's split, worked out by hand."""

from __future__ import annotations

from keeper.risk.health import Debt
from keeper.risk.liquidation import liquidation_payout
from keeper.state.model import Fees

FEES = Fees(fee_interest_bps=1_000, liquidation_fee_bps=150, liquidation_premium_bps=400)


def test_enough_for_everyone_leaves_the_owner_a_remainder() -> None:
    # TV 10,000: liquidator pays 9,600; pool 8,000 + 100; fees 10 + 150; owner 1,340.
    payout = liquidation_payout(10_000, Debt(8_000, 100, 10), FEES)
    assert payout.amount_paid == 9_600
    assert payout.repaid_to_pool == 8_100
    assert payout.protocol_fees == 160
    assert payout.remaining_funds == 1_340
    assert payout.loss == 0
    assert payout.premium(10_000) == 400


def test_fees_take_what_is_left_after_the_pool() -> None:
    # TV 10,000: pays 9,600; pool 9,500 + 50; fees would be 5 + 150 but only 50 remain.
    payout = liquidation_payout(10_000, Debt(9_500, 50, 5), FEES)
    assert (payout.repaid_to_pool, payout.protocol_fees, payout.remaining_funds) == (9_550, 50, 0)
    assert payout.loss == 0


def test_unpaid_interest_is_not_a_loss() -> None:
    # TV 10,000: pays 9,600 against 9,500 + 200 owed: the principal is whole, 100 interest unpaid.
    payout = liquidation_payout(10_000, Debt(9_500, 200, 20), FEES)
    assert (payout.repaid_to_pool, payout.protocol_fees, payout.remaining_funds) == (9_600, 0, 0)
    assert payout.loss == 0


def test_unrecovered_principal_is_the_loss() -> None:
    # TV 10,000: pays 9,600 against a principal of 9,900: 300 of bad debt, no fees.
    payout = liquidation_payout(10_000, Debt(9_900, 200, 20), FEES)
    assert (payout.repaid_to_pool, payout.protocol_fees, payout.remaining_funds) == (9_600, 0, 0)
    assert payout.loss == 300


def test_every_unit_paid_is_accounted_for() -> None:
    for total_value in (0, 1, 999, 10_000, 123_456_789):
        for debt in (Debt(0, 0, 0), Debt(5_000, 77, 7), Debt(10**9, 10**6, 10**5)):
            payout = liquidation_payout(total_value, debt, FEES)
            assert (
                payout.repaid_to_pool + payout.protocol_fees + payout.remaining_funds
                == payout.amount_paid
            )
            assert payout.loss == max(debt.principal - payout.repaid_to_pool, 0)
