"""Health-factor ranges for dashboards: each account lands in the range of its exact health
factor (as `account_health` computes it), and the lowest is the true minimum (no chain)."""

from __future__ import annotations

from keeper.risk.health import WAD, account_health
from keeper.risk.monitor import RiskMonitor
from keeper.risk.summary import HEALTH_RANGES, UNPRICED, market_health
from keeper.state.store import ProtocolState
from tests.unit.protocol_builder import PRICES, T0, Chain, address, usdc_market

OWNER = address(700)
USDC6, WETH18 = 10**6, 10**18


def test_each_account_lands_in_the_range_of_its_exact_health_factor() -> None:
    usdc = usdc_market(Chain())
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events(answers=PRICES))
    # Collateral 1,000 USDC weighted at 90 %: TWV 900 USDC; principal sets the health factor.
    principals = {
        address(701): 1_000,  # 0.9 -> below_1
        address(702): 900,  # exactly 1.0 -> 1_to_1.05 (a bound belongs to the range above it)
        address(703): 800,  # 1.125
        address(704): 450,  # exactly 2.0
        address(705): 0,  # no debt: infinitely healthy
    }
    for account, principal in principals.items():
        state.apply(
            usdc.open(account, OWNER, principal=principal * USDC6, balances={"USDC": 1_000 * USDC6})
        )
    state.apply(usdc.open(address(706), OWNER, principal=USDC6, balances={"WETH": WETH18}))
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    # WETH's feed (staleness 1 h) goes stale; USDC's (1 day) stays fresh.
    later = T0 + 3_601
    monitor.apply(state.apply([]), later)

    summary = market_health(state, monitor, later)[usdc.manager]

    expected = dict.fromkeys([label for label, _ in HEALTH_RANGES] + [UNPRICED], 0)
    expected.update({"below_1": 1, "1_to_1.05": 1, "1.1_to_1.25": 1, "2_or_more": 2, UNPRICED: 1})
    assert summary.accounts_by_range == expected
    view = state.market_view(usdc.manager)
    exact = account_health(state.markets[usdc.manager].accounts[address(701)], view, later)
    assert summary.lowest_health_factor_wad == exact.health_factor_wad == 9 * WAD // 10


def test_a_market_without_priced_debt_has_no_lowest_health_factor() -> None:
    usdc = usdc_market(Chain())
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events(answers=PRICES))
    state.apply(usdc.open(address(710), OWNER, principal=0, balances={"USDC": USDC6}))
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)

    summary = market_health(state, monitor, T0)[usdc.manager]

    assert summary.lowest_health_factor_wad is None
    assert summary.accounts_by_range["2_or_more"] == 1
