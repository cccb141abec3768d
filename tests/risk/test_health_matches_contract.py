"""Property: the keeper's exact math equals the contract's views to the last wei, at any block.

Hypothesis drives random accounts on the real devnet: markets with a 6- or 18-decimal underlying,
collateral in tokens of 6/8/18 decimals plus one freshly deployed token of random decimals behind
a feed of random decimals, random prices, liquidation thresholds, fees, interest rates, debt
changes and time jumps (some long enough to make feeds stale). At two blocks of each example, the
second one read again after more blocks were mined (a historical query), every figure the
contract computes is compared with the math fed only the stored inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from web3.contract import Contract
from web3.logs import DISCARD

from keeper.devnet.controls import advance_time, refresh_feeds, reverted_after
from keeper.devnet.network import Devnet
from keeper.devnet.tx import TransactionRevertedError, contract_at, deploy, send
from keeper.risk.health import AccountHealth, PriceUnavailableError, account_health
from keeper.state.model import CreditAccountState, Market
from tests.risk.chain_inputs import read_account, read_market, read_views

MAX_UINT256 = 2**256 - 1
YEAR = 365 * 24 * 3600

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile(
    "thorough", max_examples=400, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
settings.load_profile(os.environ.get("ASGARD_HYPOTHESIS_PROFILE", "ci"))


@dataclass(frozen=True)
class Scenario:
    market: str
    extra_token_decimals: int
    extra_feed_decimals: int
    debt_usd: int
    collateral: dict[str, int]  # symbol -> amount in that token's smallest unit
    extra_token_amount: int
    fee_interest_bps: int
    apr_bps: int
    first_jump_s: int
    debt_change_bps: int  # of the debt, after the first jump: + borrow more, - repay
    price_moves_bps: dict[str, int]
    thresholds_bps: dict[str, int]
    second_jump_s: int
    refresh_after_second_jump: bool


def amounts(decimals: int) -> st.SearchStrategy[int]:
    """From dust to a large holding, with arbitrary low digits."""
    return st.integers(min_value=0, max_value=10 ** (decimals + 7))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    market = draw(st.sampled_from(["USDC", "WETH"]))
    symbols = ["USDC", "WETH", "WBTC", "LINK"]
    decimals = {"USDC": 6, "WETH": 18, "WBTC": 8, "LINK": 18}
    extra_decimals = draw(st.sampled_from([0, 2, 6, 8, 12, 18, 24]))
    return Scenario(
        market=market,
        extra_token_decimals=extra_decimals,
        extra_feed_decimals=draw(st.sampled_from([0, 6, 8, 18])),
        debt_usd=draw(st.integers(min_value=1, max_value=10_000_000)),
        collateral={
            s: draw(amounts(decimals[s])) for s in symbols if s != market and draw(st.booleans())
        },
        extra_token_amount=draw(amounts(extra_decimals)),
        fee_interest_bps=draw(st.integers(0, 10_000)),
        apr_bps=draw(st.sampled_from([0, 1, 500, 2_500, 10_000, 50_000])),
        first_jump_s=draw(st.integers(0, 2 * YEAR)),
        debt_change_bps=draw(st.integers(-5_000, 5_000)),
        price_moves_bps={s: draw(st.integers(-9_990, 40_000)) for s in [*symbols, "EXTRA"]},
        thresholds_bps={s: draw(st.integers(0, 10_000)) for s in [*symbols, "EXTRA"]},
        second_jump_s=draw(st.sampled_from([0, 1, 3_600, 3 * 3_600 + 1, 30 * 24 * 3_600, YEAR])),
        refresh_after_second_jump=draw(st.booleans()),
    )


@dataclass(frozen=True)
class ExtraToken:
    token: Contract
    feed: Contract


def _configure_market(devnet: Devnet, scenario: Scenario) -> ExtraToken:
    """Adds a token of random decimals, and sets the scenario's fees and interest rate."""
    w3, deployment, admin = devnet.w3, devnet.deployment, devnet.roles.deployer.address
    manager = deployment.contract(w3, f"CreditManager.{scenario.market}")
    pool = deployment.contract(w3, f"LendingPool.{scenario.market}")
    token = deploy(w3, "TestToken", admin, "Extra", "EXTRA", scenario.extra_token_decimals)
    decimals = scenario.extra_feed_decimals
    feed = deploy(w3, "PriceFeed", admin, decimals, "EXTRA / USD", 7 * 10**decimals + 3)
    oracle = deployment.contract(w3, "PriceOracle")
    send(w3, oracle.functions.setPriceFeed(token, feed, 3 * 3600), admin)
    send(w3, manager.functions.addCollateralToken(token, 5_000), admin)
    send(w3, manager.functions.setFees(scenario.fee_interest_bps, 150, 400), admin)
    send(w3, pool.functions.setInterestRate(scenario.apr_bps * 10**27 // (10_000 * YEAR)), admin)
    return ExtraToken(contract_at(w3, "TestToken", token), contract_at(w3, "PriceFeed", feed))


def _open_account(devnet: Devnet, scenario: Scenario, extra: ExtraToken) -> str:
    """Opens the account with underlying collateral, then adds the scenario's other tokens."""
    w3, deployment, admin = devnet.w3, devnet.deployment, devnet.roles.deployer.address
    borrower = devnet.roles.borrowers[0].address
    manager = deployment.contract(w3, f"CreditManager.{scenario.market}")
    underlying = deployment.contract(w3, scenario.market)
    price = deployment.contract(w3, f"PriceFeed.{scenario.market}").functions.latestAnswer().call()
    debt = scenario.debt_usd * 10 ** deployment.decimals[scenario.market] * 10**8 // price or 1
    send(w3, underlying.functions.mint(borrower, 10 * debt), admin)
    send(w3, underlying.functions.approve(manager.address, MAX_UINT256), borrower)
    opened = send(w3, manager.functions.openCreditAccount(debt, underlying.address, debt), borrower)
    account: str = manager.events.CreditAccountOpened().process_receipt(opened, errors=DISCARD)[0][
        "args"
    ]["creditAccount"]
    holdings = [(deployment.contract(w3, s), a) for s, a in scenario.collateral.items() if a]
    if scenario.extra_token_amount:
        holdings.append((extra.token, scenario.extra_token_amount))
    for token, amount in holdings:
        send(w3, token.functions.mint(borrower, amount), admin)
        send(w3, token.functions.approve(manager.address, amount), borrower)
        send(w3, manager.functions.addCollateral(account, token.address, amount), borrower)
    return account


def _change_debt(devnet: Devnet, scenario: Scenario, account: str) -> None:
    """Borrows more or repays part, folding accrued interest and fees into the account."""
    manager = devnet.deployment.contract(devnet.w3, f"CreditManager.{scenario.market}")
    principal = manager.functions.creditAccountInfo(account).call()[1]
    change = principal * abs(scenario.debt_change_bps) // 10_000
    if change == 0:
        return
    borrow_more = scenario.debt_change_bps > 0
    change_debt = manager.functions.increaseDebt if borrow_more else manager.functions.decreaseDebt
    call = change_debt(account, change)
    try:
        send(devnet.w3, call, devnet.roles.borrowers[0].address)
    except TransactionRevertedError as refused:  # a refused change still leaves a valid case
        if refused.reason.name not in {"HealthFactorBelowOne", "RepaymentExceedsDebt"}:
            raise


def _move_market(devnet: Devnet, scenario: Scenario, extra: ExtraToken) -> None:
    w3, deployment, admin = devnet.w3, devnet.deployment, devnet.roles.deployer.address
    manager = deployment.contract(w3, f"CreditManager.{scenario.market}")
    for symbol, move in scenario.price_moves_bps.items():
        feed = extra.feed if symbol == "EXTRA" else deployment.contract(w3, f"PriceFeed.{symbol}")
        new_answer = feed.functions.latestAnswer().call() * (10_000 + move) // 10_000
        send(w3, feed.functions.updateAnswer(max(new_answer, 1)), admin)
    for symbol, threshold in scenario.thresholds_bps.items():
        token = extra.token.address if symbol == "EXTRA" else deployment.address(symbol)
        send(w3, manager.functions.setLiquidationThreshold(token, threshold), admin)


def _play(devnet: Devnet, scenario: Scenario) -> tuple[str, list[int]]:
    """Builds the scenario on chain; returns the account and the blocks to check it at."""
    w3, admin = devnet.w3, devnet.roles.deployer.address
    extra = _configure_market(devnet, scenario)
    account = _open_account(devnet, scenario, extra)
    advance_time(w3, scenario.first_jump_s)
    refresh_feeds(w3, devnet.deployment, admin)
    send(w3, extra.feed.functions.updateAnswer(extra.feed.functions.latestAnswer().call()), admin)
    _change_debt(devnet, scenario, account)
    _move_market(devnet, scenario, extra)
    first_block = w3.eth.block_number
    advance_time(w3, scenario.second_jump_s)
    if scenario.refresh_after_second_jump:
        refresh_feeds(w3, devnet.deployment, admin)
    second_block = w3.eth.block_number
    advance_time(w3, 12)  # later blocks exist, so both checks are historical queries
    return account, [first_block, second_block]


def _math(
    state: CreditAccountState, market: Market, timestamp: int
) -> AccountHealth | PriceUnavailableError:
    try:
        return account_health(state, market, timestamp)
    except PriceUnavailableError as unavailable:
        return unavailable


@pytest.mark.chain
@given(scenario=scenarios())
def test_math_equals_views_at_every_block(devnet: Devnet, scenario: Scenario) -> None:
    with reverted_after(devnet.w3):
        account, blocks = _play(devnet, scenario)
        for block in blocks:
            manager, market = read_market(devnet.w3, devnet.deployment, scenario.market, block)
            state = read_account(manager, account, block)
            expected = _math(state, market, devnet.w3.eth.get_block(block)["timestamp"])
            views = read_views(manager, account, block)
            if isinstance(expected, PriceUnavailableError):
                event(f"price unavailable: {expected.reason.split()[0]}")
                assert views.revert is not None, f"math refused ({expected}), views did not"
                assert views.revert.name in {"StalePrice", "NonPositivePrice"}
                assert views.revert.args["token"] == expected.token
                continue
            assert views.revert is None, f"views reverted with {views.revert}, math did not"
            assert (expected.debt.principal, expected.debt.interest, expected.debt.fee) == (
                views.principal, views.interest, views.fee,
            )  # fmt: skip
            assert expected.value.total_value == views.total_value
            assert expected.value.weighted_value == views.weighted_value
            assert expected.health_factor_wad == views.health_factor_wad
            assert expected.is_liquidatable == views.is_liquidatable
            event("liquidatable" if expected.is_liquidatable else "healthy")
            event("debt with accrued fees" if state.accrued_fees else "no accrued fees")
