"""BatchLiquidator: many liquidations in one transaction, for its owner only.

The devnet deploys one owned by the keeper role and makes it an emergency liquidator of every
market. Checked here against the real contracts: only the owner may call it, and nobody may call
its self-call entry; accounts that revert (healthy, unknown, already liquidated, or listed twice)
are skipped with their revert data while the others are liquidated; the owner pays exactly the
sum of the liquidations' `amountPaid`, receives every asset, and the contract keeps nothing; the
manager names the batch contract as the liquidator; while paused it liquidates only where it is
an emergency liquidator; and a gas limit too low for the whole batch reverts it rather than
skipping accounts (otherwise a gas estimate would settle on a limit that skips them).

Gas, measured here on accounts holding one collateral token (WETH) in the USDC market; the
numbers are printed by `test_gas_per_account_single_and_in_batches` (`pytest -s`):

    single liquidateCreditAccount from the keeper's address       224,185 gas
    batch of 1                                                     252,772 gas
    batch of 10                                                  1,580,230 gas (158,023 per account)
    batch of 100                                                14,082,765 gas (140,827 per account)

(Calldata makes these vary by a few dozen gas with the accounts' addresses; the first batch
through a manager also approves it, once, for 18,505 gas more.) Alone, an account costs about
28,600 gas more in a batch than in a single liquidation (the owner's payment passes through the
contract, and the self-call); from ten accounts on, each costs 30-37 % less, the 21,000 of the
transaction and the cold storage reads being shared. 100 accounts use 14.1 M gas, after the
refunds of the storage they clear; their gas limit must cover the gas before refunds, some 25 %
more (`test_the_gas_an_eth_call_reports_is_enough_to_send_the_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from web3.contract import Contract
from web3.types import TxParams, TxReceipt

from keeper.devnet.controls import reverted_after, set_price
from keeper.devnet.network import Devnet
from keeper.devnet.tx import contract_at, deploy, send
from keeper.execution.batch import batch_gas_limit
from keeper.protocol.errors import decode_revert
from tests.contracts.helpers import (
    ZERO_ADDRESS,
    approve,
    assert_pool_books_balance,
    erc20_balance,
    events,
    freeze_interest,
    fresh_address,
    market,
    open_account,
    reverted,
    token_address,
    units,
)

pytestmark = pytest.mark.chain

WETH_PRICE_USD = 3_000
CRASHED_WETH_PRICE_USD = 2_900  # 4 WETH then back 10,000 USDC of debt at Hf 0.986; 5 WETH do not
DEBT_USDC = 10_000
BLOCK_GAS_LIMIT = 30_000_000


def _batch(chain: Devnet) -> Contract:
    return chain.deployment.contract(chain.w3, "BatchLiquidator")


def _open(chain: Devnet, weth: int) -> str:
    """An account of the USDC market holding `weth` WETH and owing 10,000 USDC (the borrowed
    USDC withdrawn), healthy at 3,000 USD per WETH."""
    borrower = chain.roles.borrowers[0].address
    debt = units(chain, "USDC", DEBT_USDC)
    opened = open_account(
        chain, borrower, debt, units(chain, "WETH", weth), collateral_symbol="WETH"
    )
    send(
        chain.w3,
        market(chain).manager.functions.withdrawCollateral(
            opened.address, token_address(chain, "USDC"), debt, borrower
        ),
        borrower,
    )
    return opened.address


def _open_and_crash(
    chain: Devnet, underwater: int, healthy: int = 0
) -> tuple[list[str], list[str]]:
    """`underwater` accounts with 4 WETH and `healthy` with 5, then WETH at 2,900 USD: the first
    are liquidatable, the others not. Interest is frozen so every figure stays put."""
    freeze_interest(chain)
    sunk = [_open(chain, 4) for _ in range(underwater)]
    safe = [_open(chain, 5) for _ in range(healthy)]
    set_price(
        chain.w3,
        chain.deployment,
        "WETH",
        CRASHED_WETH_PRICE_USD * 10**8,
        chain.roles.deployer.address,
    )
    manager = market(chain).manager
    assert all(manager.functions.isLiquidatable(a).call() for a in sunk)
    assert not any(manager.functions.isLiquidatable(a).call() for a in safe)
    return sunk, safe


def _amount_paid(manager: Contract, account: str) -> int:
    principal, interest, fee = manager.functions.calcDebt(account).call()
    total_value = manager.functions.calcTotalValue(account).call()[0]
    paid: int = manager.functions.calcLiquidationPayout(
        total_value, principal, interest, fee
    ).call()[0]
    return paid


def _liquidate_batch(
    chain: Devnet, accounts: Sequence[str], *, batch: Contract | None = None, gas: int | None = None
) -> TxReceipt:
    """Sends `liquidateBatch` from the keeper role (the devnet batch's owner); with `gas`, at
    exactly that limit (no estimate), and returns the receipt whatever its status."""
    batch = batch or _batch(chain)
    call = batch.functions.liquidateBatch(market(chain).manager.address, list(accounts))
    if gas is None:
        return send(chain.w3, call, chain.roles.keeper.address)
    params: TxParams = {"from": chain.roles.keeper.address, "gas": gas}
    return chain.w3.eth.wait_for_transaction_receipt(call.transact(params), timeout=30)


def _approve_batch(chain: Devnet, batch: Contract) -> None:
    approve(chain, "USDC", chain.roles.keeper.address, batch.address)


def test_the_devnet_batch_belongs_to_the_keeper_and_is_an_emergency_liquidator(
    chain: Devnet,
) -> None:
    batch = _batch(chain)
    assert batch.functions.owner().call() == chain.roles.keeper.address
    for symbol in chain.deployment.markets:
        manager = market(chain, symbol).manager
        assert manager.functions.isEmergencyLiquidator(batch.address).call()


def test_only_the_owner_may_liquidate_through_it(chain: Devnet) -> None:
    (account,), _ = _open_and_crash(chain, 1)
    batch = _batch(chain)
    competitor = chain.roles.competitor.address
    approve(chain, "USDC", competitor, batch.address)

    reason = reverted(
        chain,
        batch.functions.liquidateBatch(market(chain).manager.address, [account]),
        competitor,
    )

    assert reason.name == "NotOwner"
    assert market(chain).manager.functions.isLiquidatable(account).call()


def test_the_self_call_entry_refuses_every_outside_caller(chain: Devnet) -> None:
    (account,), _ = _open_and_crash(chain, 1)
    batch = _batch(chain)
    _approve_batch(chain, batch)
    manager = market(chain).manager.address
    for caller in (chain.roles.keeper.address, chain.roles.competitor.address):
        reason = reverted(chain, batch.functions.liquidateOne(manager, account), caller)
        assert reason.name == "NotSelf"
        assert reason.args == {"caller": caller}
    assert market(chain).manager.functions.isLiquidatable(account).call()


def test_a_batch_skips_what_reverts_and_liquidates_the_rest_paying_exactly(
    chain: Devnet,
) -> None:
    usdc = market(chain)
    manager, pool = usdc.manager, usdc.pool
    keeper = chain.roles.keeper.address
    batch = _batch(chain)
    (first, second, taken), (healthy,) = _open_and_crash(chain, 3, healthy=1)
    unknown = fresh_address("batch-unknown-account")
    competitor = chain.roles.competitor.address
    approve(chain, "USDC", competitor, manager.address)
    send(chain.w3, manager.functions.liquidateCreditAccount(taken, competitor), competitor)
    _approve_batch(chain, batch)
    accounts = [first, healthy, unknown, second, taken, first]
    paid = {account: _amount_paid(manager, account) for account in (first, second)}
    held_weth = {account: erc20_balance(chain, "WETH", account) for account in (first, second)}
    usdc_before = erc20_balance(chain, "USDC", keeper)
    weth_before = erc20_balance(chain, "WETH", keeper)
    liquidated, reasons, gas_spent = batch.functions.liquidateBatch(manager.address, accounts).call(
        {"from": keeper}
    )
    assert liquidated == [True, False, False, True, False, False]
    # A liquidation moves tokens and storage; a revert stops at the check that fails.
    spent_liquidating = [spent for spent, ok in zip(gas_spent, liquidated, strict=True) if ok]
    spent_skipping = [spent for spent, ok in zip(gas_spent, liquidated, strict=True) if not ok]
    assert min(spent_liquidating) > max(spent_skipping) > 0
    assert [decode_revert(reason).name for reason in reasons] == [
        "EmptyRevert",
        "NotLiquidatable",
        "UnknownCreditAccount",
        "EmptyRevert",
        "UnknownCreditAccount",
        "UnknownCreditAccount",
    ]

    receipt = _liquidate_batch(chain, accounts)

    found = events(manager, "CreditAccountLiquidated", receipt)
    assert [event["creditAccount"] for event in found] == [first, second]
    for event in found:
        assert event["liquidator"] == batch.address
        assert event["to"] == keeper
        assert event["amountPaid"] == paid[event["creditAccount"]]
    skipped = events(batch, "LiquidationSkipped", receipt)
    assert [(event["creditManager"], event["creditAccount"]) for event in skipped] == [
        (manager.address, healthy),
        (manager.address, unknown),
        (manager.address, taken),
        (manager.address, first),
    ]
    skip_reasons = [decode_revert(event["reason"]) for event in skipped]
    assert [reason.name for reason in skip_reasons] == [
        "NotLiquidatable",
        "UnknownCreditAccount",
        "UnknownCreditAccount",
        "UnknownCreditAccount",
    ]
    assert skip_reasons[1].args == {"creditAccount": unknown}
    assert erc20_balance(chain, "USDC", keeper) == usdc_before - sum(paid.values())
    assert erc20_balance(chain, "WETH", keeper) == weth_before + sum(held_weth.values())
    for symbol in chain.deployment.tokens:
        assert erc20_balance(chain, symbol, batch.address) == 0, symbol
    for account in (first, second):
        assert manager.functions.creditAccountInfo(account).call()[0] == ZERO_ADDRESS
    assert manager.functions.isLiquidatable(healthy).call() is False
    assert manager.functions.creditAccountInfo(healthy).call()[0] != ZERO_ADDRESS
    assert_pool_books_balance(pool, receipt["blockNumber"])


def test_an_owner_without_the_funds_gets_every_account_skipped_not_a_revert(
    chain: Devnet,
) -> None:
    manager = market(chain).manager
    batch = _batch(chain)
    (account,), _ = _open_and_crash(chain, 1)
    # No approval of the batch by the keeper: the payment cannot be pulled.
    receipt = _liquidate_batch(chain, [account])

    (skipped,) = events(batch, "LiquidationSkipped", receipt)
    assert decode_revert(skipped["reason"]).name == "TokenCallFailed"
    assert events(manager, "CreditAccountLiquidated", receipt) == []
    assert manager.functions.isLiquidatable(account).call()


def test_while_paused_it_liquidates_only_where_it_is_an_emergency_liquidator(
    chain: Devnet,
) -> None:
    manager = market(chain).manager
    keeper = chain.roles.keeper.address
    (first, second), _ = _open_and_crash(chain, 2)
    send(chain.w3, manager.functions.pause(), chain.roles.deployer.address)
    plain_address = deploy(chain.w3, "BatchLiquidator", keeper, keeper)
    plain = contract_at(chain.w3, "BatchLiquidator", plain_address)
    _approve_batch(chain, plain)
    _approve_batch(chain, _batch(chain))

    refused = _liquidate_batch(chain, [first], batch=plain)
    (skipped,) = events(plain, "LiquidationSkipped", refused)
    reason = decode_revert(skipped["reason"])
    assert (reason.name, reason.args) == ("NotEmergencyLiquidator", {"caller": plain_address})

    receipt = _liquidate_batch(chain, [first, second])
    found = events(manager, "CreditAccountLiquidated", receipt)
    assert [event["creditAccount"] for event in found] == [first, second]
    assert {event["liquidator"] for event in found} == {_batch(chain).address}


def test_too_little_gas_reverts_the_batch_instead_of_skipping_accounts(chain: Devnet) -> None:
    manager = market(chain).manager
    batch = _batch(chain)
    accounts, _ = _open_and_crash(chain, 3)
    _approve_batch(chain, batch)
    call = batch.functions.liquidateBatch(manager.address, accounts)
    estimate = call.estimate_gas({"from": chain.roles.keeper.address})

    statuses = []
    for fraction in (0.3, 0.5, 0.7, 0.9, 0.99):
        with reverted_after(chain.w3):
            receipt = _liquidate_batch(chain, accounts, gas=int(estimate * fraction))
            statuses.append(receipt["status"])
            if receipt["status"] == 1:
                assert events(batch, "LiquidationSkipped", receipt) == []
                assert len(events(manager, "CreditAccountLiquidated", receipt)) == len(accounts)
    assert statuses[:4] == [0, 0, 0, 0], statuses

    receipt = _liquidate_batch(chain, accounts, gas=estimate)
    assert receipt["status"] == 1
    assert events(batch, "LiquidationSkipped", receipt) == []
    assert len(events(manager, "CreditAccountLiquidated", receipt)) == len(accounts)


def test_gas_per_account_single_and_in_batches(chain: Devnet) -> None:
    manager = market(chain).manager
    keeper = chain.roles.keeper.address
    batch = _batch(chain)
    sizes = (1, 10, 100)
    accounts, _ = _open_and_crash(chain, 2 + sum(sizes))
    _approve_batch(chain, batch)
    approve(chain, "USDC", keeper, manager.address)

    single = send(chain.w3, manager.functions.liquidateCreditAccount(accounts[0], keeper), keeper)
    measured = {"single": single["gasUsed"]}
    # The first batch through a manager also approves it, once for good: not measured.
    first = _liquidate_batch(chain, accounts[1:2])
    print(f"first batch of 1 (approves the manager): {first['gasUsed']:,} gas")
    start = 2
    for size in sizes:
        chunk = accounts[start : start + size]
        start += size
        receipt = _liquidate_batch(chain, chunk)
        assert len(events(manager, "CreditAccountLiquidated", receipt)) == size
        assert events(batch, "LiquidationSkipped", receipt) == []
        measured[f"batch of {size}"] = receipt["gasUsed"]
        print(
            f"batch of {size}: {receipt['gasUsed']:,} gas, {receipt['gasUsed'] // size:,}/account"
        )
    print(f"single: {single['gasUsed']:,} gas")

    per_account = {size: measured[f"batch of {size}"] / size for size in sizes}
    # One account costs more in a batch than alone (payment through the contract, self-call),
    # ten or more cost less each than alone, and 100 fit well inside a block.
    assert measured["single"] < per_account[1] < measured["single"] + 50_000
    assert per_account[100] < per_account[10] < measured["single"]
    assert measured["batch of 100"] < BLOCK_GAS_LIMIT // 2


def test_the_gas_an_eth_call_reports_is_enough_to_send_the_batch(chain: Devnet) -> None:
    """The keeper sends a batch with `batch_gas_limit` of what one `eth_call` reported, instead
    of a gas estimate: that limit must be enough (sent at exactly it, without the policy's
    margin, every account is liquidated) and close to the node's estimate (a loose bound would
    keep other batches out of the block). The first batch also approves the manager."""
    manager = market(chain).manager
    keeper = chain.roles.keeper.address
    batch = _batch(chain)
    sizes = (1, 10, 40)
    accounts, _ = _open_and_crash(chain, sum(sizes))
    _approve_batch(chain, batch)
    start = 0
    for size in sizes:
        chunk = accounts[start : start + size]
        start += size
        call = batch.functions.liquidateBatch(manager.address, chunk)
        liquidated, _, gas_spent = call.call({"from": keeper})
        assert liquidated == [True] * size
        limit = batch_gas_limit(gas_spent, call._encode_transaction_data())
        estimate = call.estimate_gas({"from": keeper})
        assert estimate <= limit <= estimate * 108 // 100, (size, limit, estimate)

        receipt = _liquidate_batch(chain, chunk, gas=limit)

        assert receipt["status"] == 1, size
        assert len(events(manager, "CreditAccountLiquidated", receipt)) == size
        assert events(batch, "LiquidationSkipped", receipt) == []
