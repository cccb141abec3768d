"""Every borrower action of `CreditManager` and its effects, against the real anvil.

Covers openCreditAccount (a separate EIP-1167 clone bound to the manager, listed and paged,
`creditAccountInfo`, balances, the pool's `totalBorrowed`), addCollateral (by anyone, and below Hf
1: the one action without a health check, so an account is rescued in steps), withdrawCollateral,
increaseDebt (interest folded into `accruedInterest`, its fee into `accruedFees`), decreaseDebt (the
protocol fee first, then interest, then principal; total debt falls by exactly the amount), swap
through the whitelisted `OracleSwapAdapter`, and closeCreditAccount (the shortfall of the account's
accounted underlying pulled from the caller, every asset to `to`, account forgotten). These are the
state transitions the keeper rebuilds from events, so each test checks both the views and the real
ERC-20 balances, and each ends by checking every pool's balance sheet (totalDeposits +
totalInterestEarned - totalLosses == availableLiquidity + totalBorrowed). Most tests freeze the pool
rate so the numbers they assert are computed by hand; a few use the keeper's Python risk math as the
oracle.
"""

from __future__ import annotations

import pytest
from web3 import Web3
from web3.contract import Contract

from keeper.devnet.controls import advance_time, refresh_feeds, set_price
from keeper.devnet.network import Devnet
from keeper.devnet.tx import contract_at, send
from keeper.risk.health import account_health, cumulative_index_at
from tests.contracts.helpers import (
    DOUBLING_RATE_RAY,
    MAX_UINT256,
    ONE_MILLION_SECONDS,
    POOL_BOOK_FIELDS,
    WAD,
    approve,
    assert_every_pool_books_balance,
    assert_pool_books_balance,
    block_timestamp,
    debt_fields,
    erc20_balance,
    events,
    freeze_interest,
    fresh_address,
    market,
    mint,
    open_account,
    read_account_state,
    read_market_state,
    run_rate_for,
    snapshot_erc20,
    token_address,
    units,
    view_revert,
)

pytestmark = pytest.mark.chain

EIP1167_PREFIX = bytes.fromhex("363d3d373d3d3d363d73")
EIP1167_SUFFIX = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")


# ------------------------------------------------------------------ openCreditAccount


def test_open_creates_a_listed_clone_bound_to_the_manager(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    debt, collateral = units(chain, "USDC", 10_000), units(chain, "USDC", 2_000)
    count_before = manager.functions.creditAccountsCount().call()
    borrowed_before = pool.functions.totalBorrowed().call()
    liquidity_before = pool.functions.availableLiquidity().call()
    borrower_usdc_before = erc20_balance(chain, "USDC", borrower)

    opened = open_account(chain, borrower, debt, collateral)
    account = opened.address
    block = opened.receipt["blockNumber"]

    implementation = manager.functions.accountImplementation().call()
    code = bytes(chain.w3.eth.get_code(Web3.to_checksum_address(account)))
    assert code == EIP1167_PREFIX + bytes.fromhex(implementation[2:]) + EIP1167_SUFFIX
    assert account not in (manager.address, implementation)
    credit_account = contract_at(chain.w3, "CreditAccount", account)
    assert credit_account.functions.creditManager().call() == manager.address

    assert manager.functions.creditAccountsCount().call() == count_before + 1
    listed = manager.functions.creditAccounts(0, count_before + 1).call()
    assert listed[-1] == account

    index_at_open = pool.functions.calcCumulativeIndex().call(block_identifier=block)
    # owner, principal, cumulativeIndex, accruedInterest, accruedFees
    assert manager.functions.creditAccountInfo(account).call() == [
        borrower,
        debt,
        index_at_open,
        0,
        0,
    ]
    tokens, amounts = manager.functions.balances(account).call()
    assert tokens == manager.functions.collateralTokens().call()
    assert tokens[0] == usdc.underlying.address
    assert amounts == [debt + collateral, 0, 0, 0]
    assert erc20_balance(chain, "USDC", account) == debt + collateral
    # open_account minted the collateral to the borrower first; all of it moved into the account.
    assert erc20_balance(chain, "USDC", borrower) == borrower_usdc_before

    assert pool.functions.totalBorrowed().call() == borrowed_before + debt
    assert pool.functions.availableLiquidity().call() == liquidity_before - debt
    borrows = events(pool, "Borrow", opened.receipt)
    assert [(b["creditAccount"], b["amount"]) for b in borrows] == [(account, debt)]

    # Hf = 12_000 * 0.95 / 10_000, exactly 1.14, in the block the account opened.
    health_factor_wad = manager.functions.calcHealthFactor(account).call(block_identifier=block)
    assert health_factor_wad == 114 * 10**16
    assert_every_pool_books_balance(chain)


def test_open_with_other_collateral_values_it_through_the_oracle(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    debt, collateral = units(chain, "USDC", 10_000), units(chain, "WETH", 2)

    opened = open_account(chain, borrower, debt, collateral, collateral_symbol="WETH")
    account = opened.address
    block = opened.receipt["blockNumber"]

    assert manager.functions.balanceOf(account, token_address(chain, "WETH")).call() == collateral
    assert manager.functions.balanceOf(account, token_address(chain, "USDC")).call() == debt
    assert erc20_balance(chain, "WETH", account) == collateral
    # 2 WETH at 3000 = 6_000 USDC, weighted at 85 %; the borrowed USDC at 95 %.
    total_value, weighted_value = manager.functions.calcTotalValue(account).call(
        block_identifier=block
    )
    assert (total_value, weighted_value) == (16_000 * 10**6, 14_600 * 10**6)
    assert manager.functions.calcHealthFactor(account).call(block_identifier=block) == (
        146 * 10**16
    )
    assert_every_pool_books_balance(chain)


def test_open_in_the_weth_market_borrows_weth(chain: Devnet) -> None:
    weth = market(chain, "WETH")
    borrower = chain.roles.borrowers[1].address
    debt, collateral = units(chain, "WETH", 10), units(chain, "USDC", 6_000)
    borrowed_before = weth.pool.functions.totalBorrowed().call()

    opened = open_account(
        chain, borrower, debt, collateral, market_symbol="WETH", collateral_symbol="USDC"
    )
    block = opened.receipt["blockNumber"]

    assert weth.pool.functions.totalBorrowed().call() == borrowed_before + debt
    assert erc20_balance(chain, "WETH", opened.address) == debt
    assert weth.manager.functions.creditAccountInfo(opened.address).call()[:2] == [borrower, debt]
    # 6_000 USDC = 2 WETH weighted at 90 %, 10 WETH at 95 %: Hf = 11.3 / 10.
    assert weth.manager.functions.calcHealthFactor(opened.address).call(block_identifier=block) == (
        113 * 10**16
    )
    assert_every_pool_books_balance(chain)


def test_accounts_are_listed_and_paged_in_opening_order(chain: Devnet) -> None:
    manager = market(chain).manager
    count_before = manager.functions.creditAccountsCount().call()
    opened = [
        open_account(
            chain, borrower.address, units(chain, "USDC", 1_000), units(chain, "USDC", 100)
        )
        for borrower in chain.roles.borrowers[:3]
    ]
    addresses = [account.address for account in opened]

    assert len(set(addresses)) == 3
    assert manager.functions.creditAccountsCount().call() == count_before + 3
    assert manager.functions.creditAccounts(count_before, 10).call() == addresses
    assert manager.functions.creditAccounts(count_before + 1, 1).call() == addresses[1:2]
    assert manager.functions.creditAccounts(count_before + 2, 5).call() == addresses[2:]
    assert manager.functions.creditAccounts(count_before + 3, 5).call() == []
    assert manager.functions.creditAccounts(count_before, 0).call() == []
    for account, borrower in zip(addresses, chain.roles.borrowers[:3], strict=False):
        assert manager.functions.creditAccountInfo(account).call()[0] == borrower.address
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ addCollateral


def test_anyone_may_add_collateral_to_an_account(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    helper = chain.roles.competitor.address
    freeze_interest(chain)  # before opening: a second between the two would accrue interest
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 1_000)
    )
    weth = token_address(chain, "WETH")
    approve(chain, "WETH", helper, manager.address)
    helper_weth_before = erc20_balance(chain, "WETH", helper)

    send(
        chain.w3,
        manager.functions.addCollateral(opened.address, weth, units(chain, "WETH", 1)),
        helper,
    )

    assert manager.functions.balanceOf(opened.address, weth).call() == units(chain, "WETH", 1)
    assert erc20_balance(chain, "WETH", opened.address) == units(chain, "WETH", 1)
    assert erc20_balance(chain, "WETH", helper) == helper_weth_before - units(chain, "WETH", 1)
    assert manager.functions.creditAccountInfo(opened.address).call()[0] == borrower
    # 11_000 USDC at 95 % + 3_000 USDC of WETH at 85 % = 13_000 against 10_000 of debt.
    assert manager.functions.calcHealthFactor(opened.address).call() == 13 * 10**17
    assert_every_pool_books_balance(chain)


def test_add_collateral_is_allowed_below_health_factor_one(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 1),
        collateral_symbol="WETH",
    )
    set_price(chain.w3, chain.deployment, "WETH", 100 * 10**8, chain.roles.deployer.address)
    # 9_500 + 100 * 0.85 = 9_585 against 10_000.
    assert manager.functions.calcHealthFactor(opened.address).call() == 9585 * 10**14
    mint(chain, "WETH", borrower, units(chain, "WETH", 1))

    send(
        chain.w3,
        manager.functions.addCollateral(
            opened.address, token_address(chain, "WETH"), units(chain, "WETH", 1)
        ),
        borrower,
    )

    # 9_500 + 200 * 0.85 = 9_670: higher, still below 1, and accepted.
    assert manager.functions.calcHealthFactor(opened.address).call() == 9670 * 10**14
    assert manager.functions.isLiquidatable(opened.address).call()
    assert manager.functions.balanceOf(opened.address, token_address(chain, "WETH")).call() == (
        units(chain, "WETH", 2)
    )

    # A second step, by someone else, finishes the rescue: 9_670 + 500 * 0.95 = 10_145.
    helper = chain.roles.competitor.address
    mint(chain, "USDC", helper, units(chain, "USDC", 500))
    approve(chain, "USDC", helper, manager.address)
    send(
        chain.w3,
        manager.functions.addCollateral(
            opened.address, token_address(chain, "USDC"), units(chain, "USDC", 500)
        ),
        helper,
    )
    assert manager.functions.calcHealthFactor(opened.address).call() == 10_145 * 10**14
    assert not manager.functions.isLiquidatable(opened.address).call()
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ withdrawCollateral


def test_withdraw_collateral_sends_it_to_the_recipient(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    recipient = fresh_address("withdraw-recipient")
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 2),
        collateral_symbol="WETH",
    )
    weth = token_address(chain, "WETH")

    send(
        chain.w3,
        manager.functions.withdrawCollateral(
            opened.address, weth, units(chain, "WETH", 1), recipient
        ),
        borrower,
    )

    assert manager.functions.balanceOf(opened.address, weth).call() == units(chain, "WETH", 1)
    assert erc20_balance(chain, "WETH", opened.address) == units(chain, "WETH", 1)
    assert erc20_balance(chain, "WETH", recipient) == units(chain, "WETH", 1)
    assert manager.functions.calcHealthFactor(opened.address).call() == 1205 * 10**15
    assert_every_pool_books_balance(chain)


def test_withdraw_of_the_borrowed_underlying_is_allowed_while_healthy(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 4),
        collateral_symbol="WETH",
    )
    borrower_usdc_before = erc20_balance(chain, "USDC", borrower)

    send(
        chain.w3,
        manager.functions.withdrawCollateral(
            opened.address, token_address(chain, "USDC"), units(chain, "USDC", 10_000), borrower
        ),
        borrower,
    )

    assert erc20_balance(chain, "USDC", borrower) == borrower_usdc_before + units(
        chain, "USDC", 10_000
    )
    assert manager.functions.balanceOf(opened.address, token_address(chain, "USDC")).call() == 0
    # Only 12_000 USDC of WETH at 85 % remains: Hf = 10_200 / 10_000.
    assert manager.functions.calcHealthFactor(opened.address).call() == 102 * 10**16
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ increaseDebt


def test_increase_debt_folds_interest_and_borrows_more(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    freeze_interest(chain)
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 20_000)
    )
    index_at_open = manager.functions.creditAccountInfo(opened.address).call()[2]
    run_rate_for(chain, "USDC", DOUBLING_RATE_RAY, ONE_MILLION_SECONDS)
    assert pool.functions.calcCumulativeIndex().call() == 2 * index_at_open
    borrowed_before = pool.functions.totalBorrowed().call()

    receipt = send(
        chain.w3,
        manager.functions.increaseDebt(opened.address, units(chain, "USDC", 5_000)),
        borrower,
    )

    # The index doubled: 10_000 of interest is folded in with its 10 % fee (1_000), the account
    # moves to the new index and the principal grows by 5_000.
    expected = [15_000 * 10**6, 2 * index_at_open, 10_000 * 10**6, 1_000 * 10**6]
    assert manager.functions.creditAccountInfo(opened.address).call()[1:] == expected
    updates = events(manager, "DebtUpdated", receipt)
    assert [debt_fields(u) for u in updates] == [expected]
    # The rate is frozen again, so nothing is new: the view is exactly what was folded.
    assert manager.functions.calcDebt(opened.address).call() == [
        15_000 * 10**6,
        10_000 * 10**6,
        1_000 * 10**6,
    ]
    assert pool.functions.totalBorrowed().call() == borrowed_before + units(chain, "USDC", 5_000)
    assert erc20_balance(chain, "USDC", opened.address) == units(chain, "USDC", 35_000)
    assert manager.functions.balanceOf(opened.address, usdc.underlying.address).call() == (
        units(chain, "USDC", 35_000)
    )
    assert_every_pool_books_balance(chain)


def test_increase_debt_after_a_year_matches_the_python_model(chain: Devnet) -> None:
    manager, pool = market(chain).manager, market(chain).pool
    borrower = chain.roles.borrowers[0].address
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 5_000)
    )
    principal_before, index_at_open = manager.functions.creditAccountInfo(opened.address).call()[
        1:3
    ]
    advance_time(chain.w3, 365 * 24 * 3600)

    receipt = send(
        chain.w3,
        manager.functions.increaseDebt(opened.address, units(chain, "USDC", 1_000)),
        borrower,
    )

    block = receipt["blockNumber"]
    index_now = pool.functions.calcCumulativeIndex().call(block_identifier=block)
    rate = read_market_state(chain).interest_rate
    assert index_now == cumulative_index_at(rate, block_timestamp(chain, receipt))
    interest = principal_before * index_now // index_at_open - principal_before
    assert interest > 490 * 10**6  # about 5 % APR on 10_000 USDC
    fee_interest = read_market_state(chain).fees.fee_interest_bps
    assert manager.functions.creditAccountInfo(opened.address).call()[1:] == [
        principal_before + units(chain, "USDC", 1_000),
        index_now,
        interest,
        interest * fee_interest // 10_000,
    ]
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ decreaseDebt


def test_decrease_debt_pays_the_fee_first_then_interest(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    treasury = chain.roles.treasury.address
    freeze_interest(chain)
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 20_000)
    )
    index_at_open = manager.functions.creditAccountInfo(opened.address).call()[2]
    run_rate_for(chain, "USDC", DOUBLING_RATE_RAY, ONE_MILLION_SECONDS)
    index = 2 * index_at_open
    # Interest 10_000, fee 10 % of it = 1_000: 21_000 in all.
    assert manager.functions.calcDebt(opened.address).call() == [
        10_000 * 10**6,
        10_000 * 10**6,
        1_000 * 10**6,
    ]
    borrowed_before = pool.functions.totalBorrowed().call()
    earned_before = pool.functions.totalInterestEarned().call()
    pool_book_before = _pool_book(pool)
    changes = snapshot_erc20(
        chain, {"pool": pool.address, "treasury": treasury, "account": opened.address}, ("USDC",)
    )

    # 600 is less than the 1_000 fee: all of it goes to the treasury, 400 of fee is left.
    receipt = send(chain.w3, manager.functions.decreaseDebt(opened.address, 600 * 10**6), borrower)

    assert changes() == {
        ("pool", "USDC"): 0,
        ("treasury", "USDC"): 600 * 10**6,
        ("account", "USDC"): -600 * 10**6,
    }
    # Folding moved the account to the doubled index; nothing of interest or principal was paid.
    expected = [10_000 * 10**6, index, 10_000 * 10**6, 400 * 10**6]
    assert manager.functions.creditAccountInfo(opened.address).call()[1:] == expected
    assert [debt_fields(u) for u in events(manager, "DebtUpdated", receipt)] == [expected]
    assert manager.functions.calcTotalDebt(opened.address).call() == 20_400 * 10**6
    # A fee-only repayment does not touch the pool: no Repay, no transfer to it, its books as
    # they were. The one token movement is the fee, from the account to the treasury.
    assert events(pool, "Repay", receipt) == []
    assert [
        (t["from"], t["to"], t["value"]) for t in events(usdc.underlying, "Transfer", receipt)
    ] == [(opened.address, treasury, 600 * 10**6)]
    assert _pool_book(pool) == pool_book_before
    assert_pool_books_balance(pool)

    # 4_900: the remaining 400 of fee, then 4_500 of the 10_000 interest; principal untouched.
    receipt = send(
        chain.w3, manager.functions.decreaseDebt(opened.address, 4_900 * 10**6), borrower
    )

    assert changes() == {
        ("pool", "USDC"): 4_500 * 10**6,
        ("treasury", "USDC"): 1_000 * 10**6,
        ("account", "USDC"): -5_500 * 10**6,
    }
    expected = [10_000 * 10**6, index, 5_500 * 10**6, 0]
    assert manager.functions.creditAccountInfo(opened.address).call()[1:] == expected
    # 21_000 - 600 - 4_900 = 15_500: the total fell by exactly what was repaid.
    assert manager.functions.calcTotalDebt(opened.address).call() == 15_500 * 10**6
    assert [tuple(r.values()) for r in events(pool, "Repay", receipt)] == [
        (opened.address, 0, 4_500 * 10**6, 0)
    ]
    assert [
        (t["from"], t["to"], t["value"]) for t in events(usdc.underlying, "Transfer", receipt)
    ] == [(opened.address, treasury, 400 * 10**6), (opened.address, pool.address, 4_500 * 10**6)]
    assert pool.functions.totalBorrowed().call() == borrowed_before
    assert pool.functions.totalInterestEarned().call() == earned_before + 4_500 * 10**6
    # 30_000 held, 5_500 repaid.
    assert manager.functions.balanceOf(opened.address, usdc.underlying.address).call() == (
        24_500 * 10**6
    )
    assert_every_pool_books_balance(chain)


def test_decrease_debt_pays_principal_once_interest_and_fee_are_paid(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    treasury = chain.roles.treasury.address
    freeze_interest(chain)
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 20_000)
    )
    run_rate_for(chain, "USDC", DOUBLING_RATE_RAY, ONE_MILLION_SECONDS)
    borrowed_before = pool.functions.totalBorrowed().call()
    earned_before = pool.functions.totalInterestEarned().call()
    changes = snapshot_erc20(
        chain, {"pool": pool.address, "treasury": treasury, "account": opened.address}, ("USDC",)
    )

    receipt = send(
        chain.w3, manager.functions.decreaseDebt(opened.address, 13_800 * 10**6), borrower
    )

    # 1_000 fee, then 10_000 interest, then 2_800 of principal.
    assert changes() == {
        ("pool", "USDC"): 12_800 * 10**6,
        ("treasury", "USDC"): 1_000 * 10**6,
        ("account", "USDC"): -13_800 * 10**6,
    }
    info = manager.functions.creditAccountInfo(opened.address).call()
    assert (info[1], info[3], info[4]) == (7_200 * 10**6, 0, 0)
    assert manager.functions.calcDebt(opened.address).call() == [7_200 * 10**6, 0, 0]
    assert [tuple(r.values()) for r in events(pool, "Repay", receipt)] == [
        (opened.address, 2_800 * 10**6, 10_000 * 10**6, 0)
    ]
    assert pool.functions.totalBorrowed().call() == borrowed_before - 2_800 * 10**6
    assert pool.functions.totalInterestEarned().call() == earned_before + 10_000 * 10**6
    assert_every_pool_books_balance(chain)


def test_repaying_the_whole_debt_leaves_an_open_account_without_debt(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 1_000)
    )
    advance_time(chain.w3, 30 * 24 * 3600)
    freeze_interest(chain)
    total_debt = manager.functions.calcTotalDebt(opened.address).call()
    assert total_debt > units(chain, "USDC", 10_000)  # interest accrued until the freeze

    send(chain.w3, manager.functions.decreaseDebt(opened.address, total_debt), borrower)

    assert manager.functions.calcDebt(opened.address).call() == [0, 0, 0]
    assert manager.functions.calcHealthFactor(opened.address).call() == MAX_UINT256
    assert not manager.functions.isLiquidatable(opened.address).call()
    assert opened.address in manager.functions.creditAccounts(0, 100).call()
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ swap


def test_swap_pays_the_oracle_price_less_the_dex_fee(chain: Devnet) -> None:
    manager = market(chain).manager
    adapter = chain.deployment.contract(chain.w3, "OracleSwapAdapter")
    borrower = chain.roles.borrowers[0].address
    usdc, weth = token_address(chain, "USDC"), token_address(chain, "WETH")
    freeze_interest(chain)
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 2_000)
    )
    amount_in = units(chain, "USDC", 6_000)
    # 6_000 USDC is 2 WETH at 3000; less 30 bps: 1.994 WETH.
    expected_out = units(chain, "WETH", "1.994")
    assert adapter.functions.quote(usdc, weth, amount_in).call() == expected_out
    changes = snapshot_erc20(
        chain, {"account": opened.address, "adapter": adapter.address}, ("USDC", "WETH")
    )

    receipt = send(
        chain.w3,
        manager.functions.swap(
            opened.address, adapter.address, usdc, weth, amount_in, expected_out
        ),
        borrower,
    )

    assert changes() == {
        ("account", "USDC"): -amount_in,
        ("account", "WETH"): expected_out,
        ("adapter", "USDC"): amount_in,
        ("adapter", "WETH"): -expected_out,
    }
    assert manager.functions.balanceOf(opened.address, usdc).call() == units(chain, "USDC", 6_000)
    assert manager.functions.balanceOf(opened.address, weth).call() == expected_out
    swaps = events(adapter, "Swap", receipt)
    assert [tuple(s.values()) for s in swaps] == [
        (opened.address, usdc, weth, amount_in, expected_out)
    ]
    usdc_token = chain.deployment.contract(chain.w3, "USDC")
    assert usdc_token.functions.allowance(opened.address, adapter.address).call() == 0
    # 6_000 * 0.95 + 5_982 (1.994 WETH) * 0.85 = 10_784.7 against 10_000.
    assert manager.functions.calcHealthFactor(opened.address).call() == 107_847 * 10**13
    assert_every_pool_books_balance(chain)


def test_swap_between_two_non_underlying_tokens(chain: Devnet) -> None:
    manager = market(chain).manager
    adapter_address = chain.deployment.address("OracleSwapAdapter")
    borrower = chain.roles.borrowers[0].address
    weth, link = token_address(chain, "WETH"), token_address(chain, "LINK")
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 1),
        collateral_symbol="WETH",
    )

    send(
        chain.w3,
        manager.functions.swap(
            opened.address, adapter_address, weth, link, units(chain, "WETH", 1), 0
        ),
        borrower,
    )

    # 1 WETH = 3000 USD = 200 LINK at 15; less 30 bps: 199.4 LINK.
    assert manager.functions.balanceOf(opened.address, weth).call() == 0
    assert manager.functions.balanceOf(opened.address, link).call() == units(chain, "LINK", "199.4")
    assert erc20_balance(chain, "LINK", opened.address) == units(chain, "LINK", "199.4")
    # 199.4 LINK = 2_991 USDC at 70 % plus 10_000 USDC at 95 %.
    assert manager.functions.calcTotalValue(opened.address).call() == [
        12_991 * 10**6,
        11_593_700_000,
    ]
    assert_every_pool_books_balance(chain)


def test_views_match_the_python_model_for_a_mixed_account(chain: Devnet) -> None:
    manager = market(chain).manager
    adapter_address = chain.deployment.address("OracleSwapAdapter")
    borrower = chain.roles.borrowers[0].address
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 50_000),
        units(chain, "WBTC", "0.37"),
        collateral_symbol="WBTC",
    )
    for symbol in ("WETH", "LINK"):
        send(
            chain.w3,
            manager.functions.swap(
                opened.address,
                adapter_address,
                token_address(chain, "USDC"),
                token_address(chain, symbol),
                units(chain, "USDC", 12_345),
                0,
            ),
            borrower,
        )
    # A debt change folds interest and its fee into the account; more interest accrues after it,
    # so the model must add the fee on the new interest to the fees already accrued.
    advance_time(chain.w3, 30 * 24 * 3600)
    refresh_feeds(chain.w3, chain.deployment, chain.roles.deployer.address)
    send(
        chain.w3, manager.functions.increaseDebt(opened.address, units(chain, "USDC", 1)), borrower
    )
    advance_time(chain.w3, 3_000)

    timestamp = chain.w3.eth.get_block("latest")["timestamp"]
    account_state = read_account_state(chain, opened.address)
    assert account_state.accrued_interest > 0
    assert account_state.accrued_fees > 0
    health = account_health(account_state, read_market_state(chain), timestamp)
    assert health.debt.interest > account_state.accrued_interest
    assert health.debt.fee > account_state.accrued_fees
    assert manager.functions.calcTotalValue(opened.address).call() == [
        health.value.total_value,
        health.value.weighted_value,
    ]
    assert manager.functions.calcDebt(opened.address).call() == [
        health.debt.principal,
        health.debt.interest,
        health.debt.fee,
    ]
    assert manager.functions.calcHealthFactor(opened.address).call() == health.health_factor_wad
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ closeCreditAccount


def test_close_pulls_the_shortfall_from_the_caller_and_releases_everything(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    treasury = chain.roles.treasury.address
    recipient = fresh_address("close-recipient")
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 4),
        collateral_symbol="WETH",
    )
    run_rate_for(chain, "USDC", DOUBLING_RATE_RAY, ONE_MILLION_SECONDS)
    # Owed: 10_000 principal + 10_000 interest + 1_000 fee; the account holds 10_000 USDC.
    assert manager.functions.calcTotalDebt(opened.address).call() == 21_000 * 10**6
    mint(chain, "USDC", borrower, units(chain, "USDC", 11_000))
    borrowed_before = pool.functions.totalBorrowed().call()
    earned_before = pool.functions.totalInterestEarned().call()
    count_before = manager.functions.creditAccountsCount().call()
    changes = snapshot_erc20(
        chain,
        {
            "borrower": borrower,
            "pool": pool.address,
            "treasury": treasury,
            "recipient": recipient,
            "account": opened.address,
        },
        ("USDC", "WETH"),
    )

    receipt = send(
        chain.w3, manager.functions.closeCreditAccount(opened.address, recipient), borrower
    )

    assert changes() == {
        ("borrower", "USDC"): -11_000 * 10**6,
        ("borrower", "WETH"): 0,
        ("pool", "USDC"): 20_000 * 10**6,
        ("pool", "WETH"): 0,
        ("treasury", "USDC"): 1_000 * 10**6,
        ("treasury", "WETH"): 0,
        ("recipient", "USDC"): 0,
        ("recipient", "WETH"): units(chain, "WETH", 4),
        ("account", "USDC"): -10_000 * 10**6,
        ("account", "WETH"): -units(chain, "WETH", 4),
    }
    assert pool.functions.totalBorrowed().call() == borrowed_before - 10_000 * 10**6
    assert pool.functions.totalInterestEarned().call() == earned_before + 10_000 * 10**6
    repays = events(pool, "Repay", receipt)
    assert [tuple(r.values()) for r in repays] == [
        (opened.address, 10_000 * 10**6, 10_000 * 10**6, 0)
    ]
    closed = events(manager, "CreditAccountClosed", receipt)
    assert [tuple(c.values()) for c in closed] == [(opened.address, borrower, recipient)]
    _assert_forgotten(chain, opened.address, count_before)
    assert_every_pool_books_balance(chain)


def test_close_sends_surplus_and_stray_tokens_to_the_recipient(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address
    recipient = fresh_address("close-surplus-recipient")
    freeze_interest(chain)
    opened = open_account(
        chain, borrower, units(chain, "USDC", 10_000), units(chain, "USDC", 2_000)
    )
    # A token sent straight to the account is not collateral, but it leaves with the account.
    mint(chain, "WBTC", opened.address, units(chain, "WBTC", 1))
    assert manager.functions.balanceOf(opened.address, token_address(chain, "WBTC")).call() == 0
    assert manager.functions.calcTotalValue(opened.address).call()[0] == 12_000 * 10**6
    borrower_usdc_before = erc20_balance(chain, "USDC", borrower)
    count_before = manager.functions.creditAccountsCount().call()

    send(chain.w3, manager.functions.closeCreditAccount(opened.address, recipient), borrower)

    assert erc20_balance(chain, "USDC", recipient) == units(chain, "USDC", 2_000)
    assert erc20_balance(chain, "WBTC", recipient) == units(chain, "WBTC", 1)
    assert erc20_balance(chain, "USDC", borrower) == borrower_usdc_before
    _assert_forgotten(chain, opened.address, count_before)
    assert_every_pool_books_balance(chain)


def test_close_repays_from_accounted_underlying_not_from_tokens_sent_to_the_account(
    chain: Devnet,
) -> None:
    """Underlying sent straight to the account is not collateral: it does not reduce what the
    caller must pay, and it leaves to `to` with the account's other assets."""
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    treasury = chain.roles.treasury.address
    recipient = fresh_address("close-stray-underlying-recipient")
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 4),
        collateral_symbol="WETH",
    )
    # The borrowed 10_000 USDC leaves; 12_000 of WETH at 85 % keeps Hf at 1.02.
    send(
        chain.w3,
        manager.functions.withdrawCollateral(
            opened.address, usdc.underlying.address, units(chain, "USDC", 10_000), borrower
        ),
        borrower,
    )
    mint(chain, "USDC", opened.address, units(chain, "USDC", 7_000))
    assert manager.functions.balanceOf(opened.address, usdc.underlying.address).call() == 0
    assert erc20_balance(chain, "USDC", opened.address) == units(chain, "USDC", 7_000)
    mint(chain, "USDC", borrower, units(chain, "USDC", 10_000))
    changes = snapshot_erc20(
        chain,
        {
            "borrower": borrower,
            "pool": pool.address,
            "treasury": treasury,
            "recipient": recipient,
            "account": opened.address,
        },
        ("USDC", "WETH"),
    )

    receipt = send(
        chain.w3, manager.functions.closeCreditAccount(opened.address, recipient), borrower
    )

    # Owed 10_000 (no interest), accounted underlying 0: the borrower pays all 10_000, the pool
    # gets exactly that, and the 7_000 sent to the account go to the recipient with the 4 WETH.
    assert changes() == {
        ("borrower", "USDC"): -10_000 * 10**6,
        ("borrower", "WETH"): 0,
        ("pool", "USDC"): 10_000 * 10**6,
        ("pool", "WETH"): 0,
        ("treasury", "USDC"): 0,
        ("treasury", "WETH"): 0,
        ("recipient", "USDC"): 7_000 * 10**6,
        ("recipient", "WETH"): units(chain, "WETH", 4),
        ("account", "USDC"): -7_000 * 10**6,
        ("account", "WETH"): -units(chain, "WETH", 4),
    }
    assert [tuple(r.values()) for r in events(pool, "Repay", receipt)] == [
        (opened.address, 10_000 * 10**6, 0, 0)
    ]
    assert_every_pool_books_balance(chain)


def test_close_moves_the_last_account_into_the_freed_slot(chain: Devnet) -> None:
    manager = market(chain).manager
    count_before = manager.functions.creditAccountsCount().call()
    first, second, third = (
        open_account(
            chain, borrower.address, units(chain, "USDC", 1_000), units(chain, "USDC", 100)
        )
        for borrower in chain.roles.borrowers[:3]
    )

    send(
        chain.w3,
        manager.functions.closeCreditAccount(first.address, first.owner),
        first.owner,
    )

    assert manager.functions.creditAccounts(count_before, 10).call() == [
        third.address,
        second.address,
    ]
    send(
        chain.w3,
        manager.functions.closeCreditAccount(third.address, third.owner),
        third.owner,
    )
    assert manager.functions.creditAccounts(count_before, 10).call() == [second.address]
    assert_every_pool_books_balance(chain)


def _assert_forgotten(chain: Devnet, account: str, count_before: int) -> None:
    manager = market(chain).manager
    assert manager.functions.creditAccountsCount().call() == count_before - 1
    count = manager.functions.creditAccountsCount().call()
    assert account not in manager.functions.creditAccounts(0, count).call()
    assert manager.functions.creditAccountInfo(account).call() == [
        "0x0000000000000000000000000000000000000000",
        0,
        0,
        0,
        0,
    ]
    assert manager.functions.balances(account).call()[1] == [0, 0, 0, 0]
    for symbol in chain.deployment.tokens:
        assert erc20_balance(chain, symbol, account) == 0
    reason = view_revert(manager.functions.calcDebt(account))
    assert reason.name == "UnknownCreditAccount"
    assert reason.args == {"creditAccount": account}


def _pool_book(pool: Contract) -> dict[str, int]:
    return {name: pool.functions[name]().call() for name in POOL_BOOK_FIELDS}


# ------------------------------------------------------------------ health factor definition


def test_health_factor_with_full_thresholds_is_value_over_debt(chain: Devnet) -> None:
    """With every liquidation threshold at 10_000, Hf = TV * 1e18 / (principal + interest + fee)."""
    manager = market(chain).manager
    deployer = chain.roles.deployer.address
    borrower = chain.roles.borrowers[0].address
    for symbol in chain.deployment.tokens:
        send(
            chain.w3,
            manager.functions.setLiquidationThreshold(token_address(chain, symbol), 10_000),
            deployer,
        )
    freeze_interest(chain)
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 1),
        collateral_symbol="WETH",
    )
    for symbol, amount in (("WBTC", "0.1"), ("LINK", 100)):
        mint(chain, symbol, borrower, units(chain, symbol, amount))
        approve(chain, symbol, borrower, manager.address)
        send(
            chain.w3,
            manager.functions.addCollateral(
                opened.address, token_address(chain, symbol), units(chain, symbol, amount)
            ),
            borrower,
        )

    # 10_000 USDC + 3_000 (1 WETH) + 6_000 (0.1 WBTC) + 1_500 (100 LINK) = 20_500 over 10_000.
    assert manager.functions.calcTotalValue(opened.address).call() == [20_500 * 10**6] * 2
    assert manager.functions.calcHealthFactor(opened.address).call() == 205 * 10**16

    run_rate_for(chain, "USDC", DOUBLING_RATE_RAY, ONE_MILLION_SECONDS)
    refresh_feeds(chain.w3, chain.deployment, deployer)
    # Debt 10_000 + 10_000 interest + 1_000 fee.
    assert manager.functions.calcHealthFactor(opened.address).call() == (20_500 * 10**18 // 21_000)

    # With a live rate and moved prices, the identity holds on the views themselves.
    send(chain.w3, market(chain).pool.functions.setInterestRate(7 * 10**17), deployer)
    set_price(chain.w3, chain.deployment, "WBTC", 58_123_45678901, deployer)
    advance_time(chain.w3, 365 * 24 * 3600)
    refresh_feeds(chain.w3, chain.deployment, deployer)
    total_value, weighted_value = manager.functions.calcTotalValue(opened.address).call()
    principal, interest, fee = manager.functions.calcDebt(opened.address).call()
    assert total_value == weighted_value
    assert interest > 10_000 * 10**6
    health_factor_wad = manager.functions.calcHealthFactor(opened.address).call()
    assert health_factor_wad == total_value * WAD // (principal + interest + fee)
    assert_every_pool_books_balance(chain)


# ------------------------------------------------------------------ paging and exact repayment


def test_paging_with_an_unbounded_limit_returns_the_rest_of_the_list(chain: Devnet) -> None:
    manager = market(chain).manager
    opened = [
        open_account(
            chain, borrower.address, units(chain, "USDC", 1_000), units(chain, "USDC", 100)
        )
        for borrower in chain.roles.borrowers[:2]
    ]
    count = manager.functions.creditAccountsCount().call()
    listed = manager.functions.creditAccounts(0, MAX_UINT256).call()
    assert len(listed) == count
    assert listed[-2:] == [account.address for account in opened]

    # offset + limit would overflow: the limit saturates at the end of the list.
    assert manager.functions.creditAccounts(1, MAX_UINT256).call() == listed[1:]
    assert manager.functions.creditAccounts(count - 1, MAX_UINT256).call() == [opened[-1].address]
    # An offset at or past the end is an empty page, whatever the limit.
    for offset, limit in (
        (count, MAX_UINT256),
        (count, 1),
        (count + 1, 5),
        (MAX_UINT256, MAX_UINT256),
        (MAX_UINT256, 0),
    ):
        assert manager.functions.creditAccounts(offset, limit).call() == [], (offset, limit)
    assert_every_pool_books_balance(chain)


def test_a_partial_repayment_lowers_total_debt_by_exactly_the_amount(chain: Devnet) -> None:
    manager = market(chain).manager
    treasury = chain.roles.treasury.address
    freeze_interest(chain)
    opened = open_account(chain, chain.roles.borrowers[0].address, 10**9, 10**8)
    # About 5e-9 of growth on 1_000 USDC: a few units of interest whose 10 % fee rounds to 0.
    run_rate_for(chain, "USDC", 5 * 10**15, 1_000)
    principal, interest, fee = manager.functions.calcDebt(opened.address).call()
    assert (principal, fee) == (10**9, 0)
    assert 2 <= interest < 10
    amount = interest - 1
    total_before = principal + interest + fee
    treasury_before = erc20_balance(chain, "USDC", treasury)

    send(chain.w3, manager.functions.decreaseDebt(opened.address, amount), opened.owner)

    # The fee is paid first, but it is 0: all of `amount` is interest, none goes to the treasury.
    treasury_received = erc20_balance(chain, "USDC", treasury) - treasury_before
    total_after = manager.functions.calcTotalDebt(opened.address).call()
    assert (total_before - total_after, treasury_received) == (amount, min(amount, fee))
    assert manager.functions.calcDebt(opened.address).call() == [principal, 1, 0]
    assert_every_pool_books_balance(chain)


def test_closing_a_fully_repaid_account_does_not_touch_the_pool(chain: Devnet) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    borrower = chain.roles.borrowers[0].address
    freeze_interest(chain)
    opened = open_account(chain, borrower, units(chain, "USDC", 1_000), units(chain, "USDC", 100))
    send(chain.w3, manager.functions.decreaseDebt(opened.address, 1_000 * 10**6), borrower)
    assert manager.functions.calcTotalDebt(opened.address).call() == 0
    pool_book_before = _pool_book(pool)

    receipt = send(
        chain.w3, manager.functions.closeCreditAccount(opened.address, borrower), borrower
    )

    assert events(pool, "Repay", receipt) == []
    assert _pool_book(pool) == pool_book_before
    # Only the 100 USDC of collateral moves: from the account back to the borrower.
    assert [
        (t["from"], t["to"], t["value"]) for t in events(usdc.underlying, "Transfer", receipt)
    ] == [(opened.address, borrower, 100 * 10**6)]
    assert_pool_books_balance(pool)
