"""The `/metrics` health census: counted a slice of accounts at a time with the event loop free
between slices, once per processed block, and equal to the risk summary's (no chain)."""

from __future__ import annotations

import asyncio

import pytest

from keeper.ops.metrics import CensusTaker
from keeper.risk.monitor import RiskMonitor
from keeper.risk.summary import market_health
from keeper.state.store import ProtocolState
from tests.unit.protocol_builder import PRICES, T0, Chain, Deployed, address, usdc_market

OWNER = address(720)
USDC6 = 10**6


def market_with_accounts(count: int) -> tuple[Deployed, ProtocolState, RiskMonitor]:
    usdc = usdc_market(Chain())
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events(answers=PRICES))
    for n in range(count):
        # TWV 900 USDC; principals from 400 to 1,000: health factors across the ranges.
        principal = (400 + 100 * n) * USDC6
        balances = {"USDC": 1_000 * USDC6}
        state.apply(usdc.open(address(730 + n), OWNER, principal=principal, balances=balances))
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    return usdc, state, monitor


@pytest.mark.asyncio
async def test_the_loop_turns_between_slices_and_the_census_is_the_summarys() -> None:
    _, state, monitor = market_with_accounts(7)
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    try:
        await asyncio.sleep(0)
        before = turns
        taker = CensusTaker(accounts_per_slice=2)
        await taker.take(state, monitor, block=5, timestamp=T0)
        # Seven accounts, two per slice: four slices, the loop turning between each two.
        assert turns - before >= 3
    finally:
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
    assert taker.block == 5
    assert taker.markets == market_health(state, monitor, T0)
    assert sum(taker.markets[next(iter(state.markets))].accounts_by_range.values()) == 7


@pytest.mark.asyncio
async def test_one_census_per_processed_block() -> None:
    usdc, state, monitor = market_with_accounts(3)
    taker = CensusTaker(accounts_per_slice=2)
    await taker.take(state, monitor, block=5, timestamp=T0)
    first = taker.markets

    # A fourth account, below 1: the same block keeps its census, the next block counts it.
    state.apply(usdc.open(address(790), OWNER, principal=10_000 * USDC6, balances={}))
    monitor.rebuild(T0)
    await taker.take(state, monitor, block=5, timestamp=T0)
    assert taker.markets is first
    await taker.take(state, monitor, block=6, timestamp=T0)
    assert taker.markets[usdc.manager].accounts_by_range["below_1"] == 1
    assert taker.markets == market_health(state, monitor, T0)
