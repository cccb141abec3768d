"""The split of a liquidation's funds, exactly as `CreditManager.calcLiquidationPayout`."""

from __future__ import annotations

from dataclasses import dataclass

from keeper.risk.health import PERCENTAGE_FACTOR, Debt
from keeper.state.model import Fees


@dataclass(frozen=True, slots=True)
class LiquidationPayout:
    """`amount_paid` comes from the liquidator, who receives assets worth the total value.
    `loss` is principal the pool does not get back (bad debt); unpaid interest is not a loss."""

    amount_paid: int
    repaid_to_pool: int
    protocol_fees: int
    remaining_funds: int
    loss: int

    def premium(self, total_value: int) -> int:
        """What the liquidator gains in the underlying, before gas."""
        return total_value - self.amount_paid


def liquidation_payout(total_value: int, debt: Debt, fees: Fees) -> LiquidationPayout:
    amount_paid = (
        total_value * (PERCENTAGE_FACTOR - fees.liquidation_premium_bps) // PERCENTAGE_FACTOR
    )
    owed_to_pool = debt.principal + debt.interest
    owed_fees = debt.fee + total_value * fees.liquidation_fee_bps // PERCENTAGE_FACTOR
    if amount_paid >= owed_to_pool + owed_fees:
        return LiquidationPayout(
            amount_paid, owed_to_pool, owed_fees, amount_paid - owed_to_pool - owed_fees, 0
        )
    if amount_paid >= owed_to_pool:
        return LiquidationPayout(amount_paid, owed_to_pool, amount_paid - owed_to_pool, 0, 0)
    return LiquidationPayout(amount_paid, amount_paid, 0, 0, max(debt.principal - amount_paid, 0))
