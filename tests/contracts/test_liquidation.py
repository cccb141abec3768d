"""Liquidation: who pays what to whom, in every branch of `calcLiquidationPayout`.

This is the keeper's business: it pays `amountPaid` of the underlying and receives every asset of
the account, so every figure of the split is pinned here, by hand, for the three branches (the
liquidator's payment covers pool + fees with a remainder for the owner; covers the pool but the
fees only in part; does not even cover the pool, a loss only if it falls short of the principal),
each without interest and with the index doubled so the interest fee is part of what the treasury
is owed. For each, the test checks the
`CreditAccountLiquidated` event, the real token movements (liquidator, pool, treasury, owner,
recipient, account), the pool's `totalBorrowed` / `totalInterestEarned` / `totalLosses`, and that
the account is forgotten. `loss` means one thing everywhere: bad debt, the principal the pool lent
and did not get back. Interest left unpaid is income the pool never earned, not a loss. The event's
`loss`, the pool's `Repay.loss` and the increase of `totalLosses` are the same number in every
scenario; the pool's `Repay.interest` is what it got above the principal. So the pool's balance
sheet (totalDeposits + totalInterestEarned - totalLosses == availableLiquidity + totalBorrowed)
holds after every step of every test here. It also covers liquidation while paused (emergency
liquidator only), the liquidator's approval, and an interest-driven liquidation after two years at
a high rate, checked against the keeper's Python risk math.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from web3.types import TxReceipt

from keeper.devnet.controls import advance_time, refresh_feeds, set_price
from keeper.devnet.network import Devnet
from keeper.devnet.spec import SECONDS_PER_YEAR
from keeper.devnet.tx import send
from keeper.risk.health import Debt, account_health
from keeper.risk.liquidation import liquidation_payout
from tests.contracts.helpers import (
    DOUBLING_RATE_RAY,
    ONE_MILLION_SECONDS,
    RAY,
    WAD,
    ZERO_ADDRESS,
    OpenedAccount,
    approve,
    assert_pool_books_balance,
    block_timestamp,
    erc20_balance,
    events,
    freeze_interest,
    fresh_address,
    market,
    open_account,
    read_account_state,
    read_market_state,
    reverted,
    run_rate_for,
    snapshot_erc20,
    token_address,
    units,
)

pytestmark = pytest.mark.chain

USDC_UNIT = 10**6


@dataclass(frozen=True, slots=True)
class Scenario:
    """An account borrowing 10_000 USDC, made liquidatable; amounts in whole USDC."""

    weth_collateral: int  # WETH deposited, then the 10_000 borrowed USDC withdrawn
    usdc_collateral: int  # USDC deposited (used when weth_collateral is 0)
    weth_price_usd: int
    index_doubled: bool  # interest = principal, fee = 10 % of it
    total_value: int
    # amountPaid, repaidToPool, protocolFees, remainingFunds, loss
    payout: tuple[int, int, int, int, int]
    pool_interest: int  # what the pool books as interest earned: repaidToPool above principal
    pool_loss: int  # what the pool books as loss: principal - repaidToPool, if positive


# Premium 4 %: amountPaid = 0.96 TV. Fees owed: 10 % of interest + 1.5 % of TV.
SCENARIOS = {
    # TV 4 * 2900 = 11_600; pays 11_136 >= 10_000 + 174.
    "remainder to owner": Scenario(
        weth_collateral=4,
        usdc_collateral=0,
        weth_price_usd=2_900,
        index_doubled=False,
        total_value=11_600,
        payout=(11_136, 10_000, 174, 962, 0),
        pool_interest=0,
        pool_loss=0,
    ),
    # TV 4 * 2625 = 10_500; pays 10_080: the pool's 10_000, then 80 of 157.5 in fees.
    "fees partly paid": Scenario(
        weth_collateral=4,
        usdc_collateral=0,
        weth_price_usd=2_625,
        index_doubled=False,
        total_value=10_500,
        payout=(10_080, 10_000, 80, 0, 0),
        pool_interest=0,
        pool_loss=0,
    ),
    # TV 4 * 2000 = 8_000; pays 7_680 < 10_000: 10_000 - 7_680 = 2_320 of principal lost. No
    # interest was owed, so nothing is earned.
    "loss": Scenario(
        weth_collateral=4,
        usdc_collateral=0,
        weth_price_usd=2_000,
        index_doubled=False,
        total_value=8_000,
        payout=(7_680, 7_680, 0, 0, 2_320),
        pool_interest=0,
        pool_loss=2_320,
    ),
    # Owed 20_000 to the pool, 1_000 + 360 in fees; TV 8 * 3000 = 24_000 pays 23_040.
    "remainder to owner with interest": Scenario(
        weth_collateral=8,
        usdc_collateral=0,
        weth_price_usd=3_000,
        index_doubled=True,
        total_value=24_000,
        payout=(23_040, 20_000, 1_360, 1_680, 0),
        pool_interest=10_000,
        pool_loss=0,
    ),
    # TV 21_000 of USDC pays 20_160: the pool's 20_000, then 160 of 1_315 in fees.
    "fees partly paid with interest": Scenario(
        weth_collateral=0,
        usdc_collateral=11_000,
        weth_price_usd=3_000,
        index_doubled=True,
        total_value=21_000,
        payout=(20_160, 20_000, 160, 0, 0),
        pool_interest=10_000,
        pool_loss=0,
    ),
    # TV 11_000 pays 10_560 of the 20_000 owed: all 10_000 of principal, then 560 of the 10_000
    # interest. The pool earns the 560 above the principal; the principal came back whole, so the
    # loss is 0. The other 9_440 of interest was never earned: it is neither income nor a loss.
    "interest lost": Scenario(
        weth_collateral=0,
        usdc_collateral=1_000,
        weth_price_usd=3_000,
        index_doubled=True,
        total_value=11_000,
        payout=(10_560, 10_560, 0, 0, 0),
        pool_interest=560,
        pool_loss=0,
    ),
    # TV 8_000 pays 7_680 of the 20_000 owed: nothing above the principal, so no interest earned;
    # the loss is only the principal not recovered, 10_000 - 7_680 = 2_320. The 10_000 of interest
    # was never earned and is not booked at all.
    "principal and interest lost": Scenario(
        weth_collateral=4,
        usdc_collateral=0,
        weth_price_usd=2_000,
        index_doubled=True,
        total_value=8_000,
        payout=(7_680, 7_680, 0, 0, 2_320),
        pool_interest=0,
        pool_loss=2_320,
    ),
}


def _make_liquidatable(chain: Devnet, scenario: Scenario) -> OpenedAccount:
    manager, pool = market(chain).manager, market(chain).pool
    borrower = chain.roles.borrowers[0].address
    debt = units(chain, "USDC", 10_000)
    assert_pool_books_balance(pool)
    freeze_interest(chain)
    assert_pool_books_balance(pool)
    if scenario.weth_collateral:
        opened = open_account(
            chain,
            borrower,
            debt,
            units(chain, "WETH", scenario.weth_collateral),
            collateral_symbol="WETH",
        )
        assert_pool_books_balance(pool)
        send(
            chain.w3,
            manager.functions.withdrawCollateral(
                opened.address, token_address(chain, "USDC"), debt, borrower
            ),
            borrower,
        )
    else:
        opened = open_account(chain, borrower, debt, units(chain, "USDC", scenario.usdc_collateral))
    assert_pool_books_balance(pool)
    if scenario.index_doubled:
        # Interest accrues on the account, but the pool books none of it until it is paid.
        run_rate_for(chain, "USDC", DOUBLING_RATE_RAY, ONE_MILLION_SECONDS)
        assert_pool_books_balance(pool)
        refresh_feeds(chain.w3, chain.deployment, chain.roles.deployer.address)
        assert_pool_books_balance(pool)
    set_price(
        chain.w3,
        chain.deployment,
        "WETH",
        scenario.weth_price_usd * 10**8,
        chain.roles.deployer.address,
    )
    assert_pool_books_balance(pool)
    assert manager.functions.isLiquidatable(opened.address).call()
    return opened


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_liquidation_payout_and_token_movements(chain: Devnet, scenario: Scenario) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    liquidator = chain.roles.keeper.address
    treasury = chain.roles.treasury.address
    recipient = fresh_address("liquidation-recipient")
    opened = _make_liquidatable(chain, scenario)
    account = opened.address
    principal, interest, fee = manager.functions.calcDebt(account).call()
    expected_interest = 10_000 * USDC_UNIT if scenario.index_doubled else 0
    assert (principal, interest, fee) == (
        10_000 * USDC_UNIT,
        expected_interest,
        expected_interest // 10,
    )
    total_value = manager.functions.calcTotalValue(account).call()[0]
    assert total_value == scenario.total_value * USDC_UNIT
    expected_payout = [amount * USDC_UNIT for amount in scenario.payout]
    # The hand-computed pool figures agree with the split: the pool's income is what it got above
    # the principal, its loss (the event's loss) is the principal it did not get back, and so
    # income - loss = repaid - principal: the pool's books move by exactly what it received.
    assert scenario.pool_loss == scenario.payout[4]
    assert scenario.pool_interest == max(scenario.payout[1] - 10_000, 0)
    assert scenario.pool_loss == max(10_000 - scenario.payout[1], 0)
    assert scenario.pool_interest - scenario.pool_loss == scenario.payout[1] - 10_000
    assert (
        list(manager.functions.calcLiquidationPayout(total_value, principal, interest, fee).call())
        == expected_payout
    )
    account_assets = {s: erc20_balance(chain, s, account) for s in ("USDC", "WETH")}
    approve(chain, "USDC", liquidator, manager.address)
    assert_pool_books_balance(pool)
    pool_totals_before = _pool_totals(chain)
    count_before = manager.functions.creditAccountsCount().call()
    changes = snapshot_erc20(
        chain,
        {
            "liquidator": liquidator,
            "pool": pool.address,
            "treasury": treasury,
            "owner": opened.owner,
            "recipient": recipient,
            "account": account,
        },
        ("USDC", "WETH"),
    )

    receipt = send(
        chain.w3, manager.functions.liquidateCreditAccount(account, recipient), liquidator
    )

    assert_pool_books_balance(pool, receipt["blockNumber"])
    assert events(manager, "CreditAccountLiquidated", receipt) == [
        {
            "creditAccount": account,
            "owner": opened.owner,
            "liquidator": liquidator,
            "to": recipient,
            "totalValue": total_value,
            "amountPaid": expected_payout[0],
            "repaidToPool": expected_payout[1],
            "protocolFees": expected_payout[2],
            "remainingFunds": expected_payout[3],
            "loss": expected_payout[4],
        }
    ]
    assert changes() == {
        ("liquidator", "USDC"): -expected_payout[0],
        ("liquidator", "WETH"): 0,
        ("pool", "USDC"): expected_payout[1],
        ("pool", "WETH"): 0,
        ("treasury", "USDC"): expected_payout[2],
        ("treasury", "WETH"): 0,
        ("owner", "USDC"): expected_payout[3],
        ("owner", "WETH"): 0,
        ("recipient", "USDC"): account_assets["USDC"],
        ("recipient", "WETH"): account_assets["WETH"],
        ("account", "USDC"): -account_assets["USDC"],
        ("account", "WETH"): -account_assets["WETH"],
    }
    assert _pool_totals(chain) == {
        "totalBorrowed": pool_totals_before["totalBorrowed"] - principal,
        "totalInterestEarned": pool_totals_before["totalInterestEarned"]
        + scenario.pool_interest * USDC_UNIT,
        "totalLosses": pool_totals_before["totalLosses"] + scenario.pool_loss * USDC_UNIT,
    }
    assert events(pool, "Repay", receipt) == [
        {
            "creditAccount": account,
            "principal": principal,
            "interest": scenario.pool_interest * USDC_UNIT,
            "loss": scenario.pool_loss * USDC_UNIT,
        }
    ]
    _assert_one_loss(
        chain, receipt, pool_totals_before["totalLosses"], scenario.pool_loss * USDC_UNIT
    )
    assert manager.functions.creditAccountInfo(account).call() == [ZERO_ADDRESS, 0, 0, 0, 0]
    assert manager.functions.creditAccountsCount().call() == count_before - 1
    assert account not in manager.functions.creditAccounts(0, count_before).call()
    assert manager.functions.balances(account).call()[1] == [0, 0, 0, 0]


def test_the_python_payout_matches_the_contract_in_every_branch(chain: Devnet) -> None:
    manager = market(chain).manager
    fees = read_market_state(chain).fees
    for scenario in SCENARIOS.values():
        principal = 10_000 * USDC_UNIT
        interest = principal if scenario.index_doubled else 0
        python_payout = liquidation_payout(
            scenario.total_value * USDC_UNIT, Debt(principal, interest, interest // 10), fees
        )
        contract_payout = manager.functions.calcLiquidationPayout(
            scenario.total_value * USDC_UNIT, principal, interest, interest // 10
        ).call()
        assert list(contract_payout) == [
            python_payout.amount_paid,
            python_payout.repaid_to_pool,
            python_payout.protocol_fees,
            python_payout.remaining_funds,
            python_payout.loss,
        ]
        assert list(contract_payout) == [amount * USDC_UNIT for amount in scenario.payout]


def test_payout_branch_boundaries(chain: Devnet) -> None:
    manager = market(chain).manager
    fees = read_market_state(chain).fees
    total_value = 10_000 * USDC_UNIT  # pays 9_600; liquidation fee 150

    def payout(total_value: int, principal: int, interest: int, fee: int) -> list[int]:
        """The contract's split, checked against the keeper's Python mirror at each boundary."""
        split = list(
            manager.functions.calcLiquidationPayout(total_value, principal, interest, fee).call()
        )
        python = liquidation_payout(total_value, Debt(principal, interest, fee), fees)
        assert split == [
            python.amount_paid,
            python.repaid_to_pool,
            python.protocol_fees,
            python.remaining_funds,
            python.loss,
        ]
        return split

    # Exactly enough for pool + fees: branch 1 with nothing left for the owner.
    assert payout(total_value, 9_000 * USDC_UNIT, 400 * USDC_UNIT, 50 * USDC_UNIT) == [
        9_600 * USDC_UNIT,
        9_400 * USDC_UNIT,
        200 * USDC_UNIT,
        0,
        0,
    ]
    # Exactly enough for the pool: branch 2 with no fees at all.
    assert payout(total_value, 9_000 * USDC_UNIT, 600 * USDC_UNIT, 60 * USDC_UNIT) == [
        9_600 * USDC_UNIT,
        9_600 * USDC_UNIT,
        0,
        0,
        0,
    ]
    # One unit short of the pool: branch 3, but the principal came back whole, so no loss: the
    # unit of interest left unpaid was never earned.
    assert payout(total_value, 9_000 * USDC_UNIT, 600 * USDC_UNIT + 1, 0) == [
        9_600 * USDC_UNIT,
        9_600 * USDC_UNIT,
        0,
        0,
        0,
    ]
    # Exactly the principal, with interest owed on top: all interest unpaid, still no loss.
    assert payout(total_value, 9_600 * USDC_UNIT, 5_000 * USDC_UNIT, 500 * USDC_UNIT) == [
        9_600 * USDC_UNIT,
        9_600 * USDC_UNIT,
        0,
        0,
        0,
    ]
    # One unit short of the principal: a loss of one unit, however much interest was owed.
    for interest in (0, 1, 5_000 * USDC_UNIT):
        assert payout(total_value, 9_600 * USDC_UNIT + 1, interest, interest // 10) == [
            9_600 * USDC_UNIT,
            9_600 * USDC_UNIT,
            0,
            0,
            1,
        ]
    # No value at all: the whole principal is lost; the 20 of interest is not.
    assert payout(0, 500, 20, 2) == [0, 0, 0, 0, 500]


# ------------------------------------------------------------------ pause and permissions


def test_emergency_liquidator_liquidates_while_paused(chain: Devnet) -> None:
    manager, pool = market(chain).manager, market(chain).pool
    emergency = chain.roles.emergency_liquidator.address
    opened = _make_liquidatable(chain, SCENARIOS["remainder to owner"])
    approve(chain, "USDC", emergency, manager.address)
    send(chain.w3, manager.functions.pause(), chain.roles.deployer.address)
    assert_pool_books_balance(pool)
    emergency_usdc_before = erc20_balance(chain, "USDC", emergency)

    receipt = send(
        chain.w3, manager.functions.liquidateCreditAccount(opened.address, emergency), emergency
    )

    assert_pool_books_balance(pool, receipt["blockNumber"])
    (liquidated,) = events(manager, "CreditAccountLiquidated", receipt)
    assert liquidated["liquidator"] == emergency
    assert liquidated["amountPaid"] == 11_136 * USDC_UNIT
    assert erc20_balance(chain, "USDC", emergency) == emergency_usdc_before - 11_136 * USDC_UNIT
    assert erc20_balance(chain, "WETH", opened.address) == 0
    assert manager.functions.creditAccountInfo(opened.address).call()[0] == ZERO_ADDRESS


def test_plain_liquidator_is_refused_while_paused(chain: Devnet) -> None:
    manager, pool = market(chain).manager, market(chain).pool
    liquidator = chain.roles.keeper.address
    opened = _make_liquidatable(chain, SCENARIOS["remainder to owner"])
    approve(chain, "USDC", liquidator, manager.address)
    send(chain.w3, manager.functions.pause(), chain.roles.deployer.address)
    assert_pool_books_balance(pool)

    reason = reverted(
        chain, manager.functions.liquidateCreditAccount(opened.address, liquidator), liquidator
    )

    assert reason.name == "NotEmergencyLiquidator"
    assert reason.args == {"caller": liquidator}
    assert_pool_books_balance(pool)
    send(chain.w3, manager.functions.unpause(), chain.roles.deployer.address)
    assert_pool_books_balance(pool)
    send(chain.w3, manager.functions.liquidateCreditAccount(opened.address, liquidator), liquidator)
    assert_pool_books_balance(pool)
    assert manager.functions.creditAccountInfo(opened.address).call()[0] == ZERO_ADDRESS


def test_emergency_flag_does_not_bypass_the_health_check(chain: Devnet) -> None:
    manager, pool = market(chain).manager, market(chain).pool
    emergency = chain.roles.emergency_liquidator.address
    freeze_interest(chain)
    opened = open_account(
        chain,
        chain.roles.borrowers[0].address,
        units(chain, "USDC", 10_000),
        units(chain, "USDC", 1_000),
    )
    assert_pool_books_balance(pool)
    send(chain.w3, manager.functions.pause(), chain.roles.deployer.address)

    reason = reverted(
        chain, manager.functions.liquidateCreditAccount(opened.address, emergency), emergency
    )

    assert reason.name == "NotLiquidatable"
    assert reason.args == {"healthFactor": 1045 * 10**15}
    assert_pool_books_balance(pool)


def test_liquidator_must_approve_the_underlying(chain: Devnet) -> None:
    manager = market(chain).manager
    competitor = chain.roles.competitor.address
    opened = _make_liquidatable(chain, SCENARIOS["remainder to owner"])
    usdc = token_address(chain, "USDC")
    assert (
        chain.deployment.contract(chain.w3, "USDC")
        .functions.allowance(competitor, manager.address)
        .call()
        == 0
    )

    reason = reverted(
        chain, manager.functions.liquidateCreditAccount(opened.address, competitor), competitor
    )

    assert reason.name == "TokenCallFailed"
    assert reason.args == {"token": usdc}
    assert_pool_books_balance(market(chain).pool)


# ------------------------------------------------------------------ interest over years


def test_interest_alone_makes_an_account_liquidatable_after_years(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    deployer = chain.roles.deployer.address
    liquidator = chain.roles.keeper.address
    recipient = fresh_address("interest-liquidation-recipient")
    opened = open_account(
        chain,
        chain.roles.borrowers[2].address,
        units(chain, "USDC", 20_000),
        units(chain, "WETH", 5),
        collateral_symbol="WETH",
    )
    assert_pool_books_balance(pool)
    health_factor_at_open = manager.functions.calcHealthFactor(opened.address).call()
    assert health_factor_at_open > 15 * 10**17
    # 40 % a year, for two years, without a price move.
    send(chain.w3, pool.functions.setInterestRate(4 * RAY // 10 // SECONDS_PER_YEAR), deployer)
    assert_pool_books_balance(pool)
    advance_time(chain.w3, 2 * SECONDS_PER_YEAR)
    assert_pool_books_balance(pool)
    refresh_feeds(chain.w3, chain.deployment, deployer)
    assert_pool_books_balance(pool)

    assert manager.functions.isLiquidatable(opened.address).call()
    principal, interest, fee = manager.functions.calcDebt(opened.address).call()
    assert principal == units(chain, "USDC", 20_000)
    assert interest > units(chain, "USDC", 15_000)
    assert fee == interest // 10
    market_state = read_market_state(chain)
    account_state = read_account_state(chain, opened.address)
    approve(chain, "USDC", liquidator, manager.address)
    assert_pool_books_balance(pool)
    liquidator_usdc_before = erc20_balance(chain, "USDC", liquidator)
    losses_before = pool.functions.totalLosses().call()
    earned_before = pool.functions.totalInterestEarned().call()

    receipt = send(
        chain.w3, manager.functions.liquidateCreditAccount(opened.address, recipient), liquidator
    )

    assert_pool_books_balance(pool, receipt["blockNumber"])
    # The Python model, at the liquidation block, predicts every figure of the event.
    health = account_health(account_state, market_state, block_timestamp(chain, receipt))
    assert health.health_factor_wad < WAD
    expected = liquidation_payout(health.value.total_value, health.debt, market_state.fees)
    (liquidated,) = events(manager, "CreditAccountLiquidated", receipt)
    assert (
        liquidated["totalValue"],
        liquidated["amountPaid"],
        liquidated["repaidToPool"],
        liquidated["protocolFees"],
        liquidated["remainingFunds"],
        liquidated["loss"],
    ) == (
        health.value.total_value,
        expected.amount_paid,
        expected.repaid_to_pool,
        expected.protocol_fees,
        expected.remaining_funds,
        expected.loss,
    )
    assert erc20_balance(chain, "USDC", liquidator) == liquidator_usdc_before - expected.amount_paid
    assert erc20_balance(chain, "WETH", recipient) == units(chain, "WETH", 5)
    assert erc20_balance(chain, "USDC", recipient) == units(chain, "USDC", 20_000)
    # TV 15_000 of WETH + 20_000 USDC = 35_000 pays 33_600, against about 20_000 + 16_000 owed to
    # the pool: the principal is covered, only part of the interest is. The pool earns what it got
    # above the principal; the principal came back whole, so there is no loss. The rest of the
    # interest (about 2_400) was never earned and is booked nowhere.
    assert principal < expected.repaid_to_pool < principal + health.debt.interest
    assert pool.functions.totalInterestEarned().call() == (
        earned_before + expected.repaid_to_pool - principal
    )
    assert expected.loss == 0
    _assert_one_loss(chain, receipt, losses_before, 0)
    (repaid,) = events(pool, "Repay", receipt)
    assert (repaid["principal"], repaid["interest"]) == (
        principal,
        expected.repaid_to_pool - principal,
    )
    assert manager.functions.creditAccountInfo(opened.address).call()[0] == ZERO_ADDRESS
    assert health.debt.interest >= interest  # the liquidation block is not earlier


def _assert_one_loss(chain: Devnet, receipt: TxReceipt, losses_before: int, loss: int) -> None:
    """`CreditAccountLiquidated.loss` == the pool's `Repay.loss` == the rise of `totalLosses`
    == `loss`."""
    usdc = market(chain)
    (liquidated,) = events(usdc.manager, "CreditAccountLiquidated", receipt)
    (repaid,) = events(usdc.pool, "Repay", receipt)
    losses_after = usdc.pool.functions.totalLosses().call(block_identifier=receipt["blockNumber"])
    assert (liquidated["loss"], repaid["loss"], losses_after - losses_before) == (loss,) * 3


def _pool_totals(chain: Devnet) -> dict[str, int]:
    pool = market(chain).pool
    return {
        name: pool.functions[name]().call()
        for name in ("totalBorrowed", "totalInterestEarned", "totalLosses")
    }
