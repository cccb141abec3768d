"""Which way the keeper liquidates in a market (no chain): through its BatchLiquidator when the
market is active, or paused with the batch contract among its emergency liquidators; one
transaction per account from the signer when it alone is an emergency liquidator of a paused
market (or no batch contract is configured); not at all otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import cast

import pytest

from keeper.chain.rpc import RpcClient
from keeper.execution.dispatcher import Dispatcher
from keeper.execution.liquidator import LiquidationPolicy, Liquidator, Permission
from keeper.state.store import MarketState, ProtocolState
from tests.unit.protocol_builder import address

MANAGER, UNDERLYING, POOL, ORACLE = (address(i) for i in range(4))
SIGNER = address(10)
BATCH = address(11)


def _liquidator(
    *, batch: str | None, paused: bool, emergency: set[str]
) -> tuple[Liquidator, ProtocolState]:
    market = MarketState(MANAGER, UNDERLYING, POOL, ORACLE, paused=paused)
    market.emergency_liquidators.update(emergency)
    state = ProtocolState([market])
    policy = LiquidationPolicy(
        native_token=UNDERLYING,
        min_profit_usd=Decimal(0),
        emergency=False,
        priority_fee_wei=10**9,
        max_fee_wei=100 * 10**9,
        gas_limit_margin_bps=2_000,
        max_failures=3,
        failure_cooldown_s=60.0,
        batch_liquidator=batch,
        batch_size=100,
    )
    # Deciding the route reads only the state: no node and no dispatcher are touched.
    liquidator = Liquidator(cast(RpcClient, None), state, cast(Dispatcher, None), SIGNER, policy)
    return liquidator, state


@dataclass(frozen=True, slots=True)
class Case:
    batch: str | None  # the configured BatchLiquidator
    paused: bool
    emergency: frozenset[str]  # the market's emergency liquidators
    can_liquidate: bool
    through_batch: bool
    why: str  # in the permission's reason


CASES = {
    "active, batch": Case(BATCH, False, frozenset(), True, True, "protocol active"),
    "active, no batch": Case(None, False, frozenset(), True, False, "protocol active"),
    "paused, batch emergency": Case(
        BATCH, True, frozenset({BATCH}), True, True, "through the BatchLiquidator"
    ),
    "paused, both emergency": Case(
        BATCH, True, frozenset({BATCH, SIGNER}), True, True, "through the BatchLiquidator"
    ),
    "paused, signer emergency": Case(
        BATCH, True, frozenset({SIGNER}), True, False, "as an emergency liquidator"
    ),
    "paused, no batch, signer emergency": Case(
        None, True, frozenset({SIGNER}), True, False, "as an emergency liquidator"
    ),
    "paused, neither": Case(
        BATCH, True, frozenset(), False, False, "neither the signer nor the BatchLiquidator is"
    ),
    "paused, no batch configured": Case(
        None, True, frozenset({BATCH}), False, False, "the signer is not an emergency liquidator"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_route_follows_the_pause_and_the_emergency_roles(case: Case) -> None:
    liquidator, _ = _liquidator(batch=case.batch, paused=case.paused, emergency=set(case.emergency))

    permission = liquidator.permission(MANAGER)

    assert (permission.can_liquidate, permission.batch) == (case.can_liquidate, case.through_batch)
    assert case.why in permission.why


def test_one_transaction_per_account_is_judged_on_the_signer_alone() -> None:
    liquidator, state = _liquidator(batch=BATCH, paused=True, emergency={BATCH})
    assert not liquidator.permission(MANAGER, through_batch=False).can_liquidate
    state.markets[MANAGER].emergency_liquidators.add(SIGNER)
    assert liquidator.permission(MANAGER, through_batch=False) == Permission(
        True, "protocol paused: liquidating as an emergency liquidator", batch=False
    )


def test_the_keepers_liquidations_name_the_signer_or_its_batch_contract() -> None:
    with_batch, _ = _liquidator(batch=BATCH, paused=False, emergency=set())
    alone, _ = _liquidator(batch=None, paused=False, emergency=set())
    assert with_batch.liquidating_addresses == {SIGNER, BATCH}
    assert alone.liquidating_addresses == {SIGNER}
