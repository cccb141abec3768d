"""Shared helpers for the contract tests: contract handles, funding, opening accounts, exact time.

Everything here talks to the real anvil of the `chain` fixture. The helpers that shape time
(`run_rate_for`, `freeze_interest`) exist so that tests can assert hand-computed numbers: with the
pool rate at 0 nothing accrues between blocks, and running a rate R for exactly S seconds (the
block timestamp is pinned) multiplies the index by exactly (RAY + R * S) / RAY.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import BlockIdentifier, RPCEndpoint, TxReceipt

from keeper.devnet.network import Devnet
from keeper.devnet.tx import TransactionRevertedError, revert_reason, send
from keeper.protocol.errors import RevertReason
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market, TokenPrice

MAX_UINT256 = 2**256 - 1
WAD = 10**18
RAY = 10**27
PERCENTAGE_FACTOR = 10_000
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# One million seconds divides RAY, so a rate of RAY // ONE_MILLION_SECONDS run for that long
# doubles the index exactly.
ONE_MILLION_SECONDS = 1_000_000
DOUBLING_RATE_RAY = RAY // ONE_MILLION_SECONDS


@dataclass(frozen=True, slots=True)
class MarketContracts:
    """One market's contracts: its CreditManager, LendingPool and underlying token."""

    symbol: str
    manager: Contract
    pool: Contract
    underlying: Contract


@dataclass(frozen=True, slots=True)
class OpenedAccount:
    address: str
    owner: str
    receipt: TxReceipt


def market(net: Devnet, symbol: str = "USDC") -> MarketContracts:
    return MarketContracts(
        symbol=symbol,
        manager=net.deployment.contract(net.w3, f"CreditManager.{symbol}"),
        pool=net.deployment.contract(net.w3, f"LendingPool.{symbol}"),
        underlying=net.deployment.contract(net.w3, symbol),
    )


def token(net: Devnet, symbol: str) -> Contract:
    return net.deployment.contract(net.w3, symbol)


def token_address(net: Devnet, symbol: str) -> str:
    return net.deployment.address(symbol)


def units(net: Devnet, symbol: str, amount: int | str) -> int:
    """`amount` whole tokens (a decimal string for fractions) in the token's smallest unit."""
    scaled = Decimal(amount) * 10 ** net.deployment.decimals[symbol]
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {symbol} is not a whole number of units")
    return int(scaled)


def fresh_address(label: str) -> str:
    """A deterministic address nobody holds anything at, for clean balance accounting."""
    return Web3.to_checksum_address(Web3.keccak(text=f"asgard-test:{label}")[-20:])


def erc20_balance(net: Devnet, symbol: str, holder: str) -> int:
    balance: int = token(net, symbol).functions.balanceOf(holder).call()
    return balance


def balances_of(net: Devnet, symbols: tuple[str, ...], holder: str) -> dict[str, int]:
    return {symbol: erc20_balance(net, symbol, holder) for symbol in symbols}


def mint(net: Devnet, symbol: str, to: str, amount: int) -> None:
    send(net.w3, token(net, symbol).functions.mint(to, amount), net.roles.deployer.address)


def approve(net: Devnet, symbol: str, holder: str, spender: str, amount: int = MAX_UINT256) -> None:
    send(net.w3, token(net, symbol).functions.approve(spender, amount), holder)


def open_account(
    net: Devnet,
    borrower: str,
    debt: int,
    collateral: int = 0,
    *,
    market_symbol: str = "USDC",
    collateral_symbol: str | None = None,
) -> OpenedAccount:
    """Mints `collateral` to `borrower`, approves the manager for it and for the underlying
    (so a later close can pull a shortfall), opens the account and reads its address from
    `CreditAccountOpened`."""
    contracts = market(net, market_symbol)
    collateral_symbol = collateral_symbol or market_symbol
    manager_address = contracts.manager.address
    if collateral:
        mint(net, collateral_symbol, borrower, collateral)
    approve(net, collateral_symbol, borrower, manager_address)
    if collateral_symbol != market_symbol:
        approve(net, market_symbol, borrower, manager_address)
    receipt = send(
        net.w3,
        contracts.manager.functions.openCreditAccount(
            debt, token_address(net, collateral_symbol), collateral
        ),
        borrower,
    )
    opened = events(contracts.manager, "CreditAccountOpened", receipt)
    assert len(opened) == 1
    return OpenedAccount(opened[0]["creditAccount"], borrower, receipt)


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[Any]:
    """The `args` of every `name` event `contract` emitted in `receipt`, in log order."""
    logs = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [log["args"] for log in logs]


def set_next_block_timestamp(net: Devnet, timestamp: int) -> None:
    net.w3.provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [timestamp])


def latest_timestamp(net: Devnet) -> int:
    timestamp: int = net.w3.eth.get_block("latest")["timestamp"]
    return timestamp


def block_timestamp(net: Devnet, receipt: TxReceipt) -> int:
    timestamp: int = net.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    return timestamp


def freeze_interest(net: Devnet, market_symbol: str = "USDC") -> None:
    """Sets the pool rate to 0: the index stays where it is until the rate changes again."""
    pool = market(net, market_symbol).pool
    send(net.w3, pool.functions.setInterestRate(0), net.roles.deployer.address)


def run_rate_for(
    net: Devnet, market_symbol: str, rate_per_second_ray: int, seconds: int
) -> TxReceipt:
    """Runs the pool at `rate_per_second_ray` for exactly `seconds`, then freezes it at 0.

    Returns the receipt of the freezing `setInterestRate(0)`, whose block is `seconds` after the
    block that set the rate, so the index grew by exactly (RAY + rate * seconds) / RAY."""
    pool = market(net, market_symbol).pool
    deployer = net.roles.deployer.address
    started = send(net.w3, pool.functions.setInterestRate(rate_per_second_ray), deployer)
    set_next_block_timestamp(net, block_timestamp(net, started) + seconds)
    return send(net.w3, pool.functions.setInterestRate(0), deployer)


def view_revert(call: ContractFunction) -> RevertReason:
    """The decoded error a view call reverts with; fails the test if it does not revert."""
    try:
        result = call.call()
    except ContractLogicError as error:
        return revert_reason(error)
    raise AssertionError(f"{call.fn_name} did not revert; it returned {result!r}")


def read_market_state(net: Devnet, market_symbol: str = "USDC") -> Market:
    """The keeper's model of a market, read from the latest block: rate checkpoint, fees,
    thresholds and every collateral token's price."""
    contracts = market(net, market_symbol)
    manager, pool = contracts.manager, contracts.pool
    oracle = net.deployment.contract(net.w3, "PriceOracle")
    thresholds: dict[str, int] = {}
    prices: dict[str, TokenPrice] = {}
    for address in manager.functions.collateralTokens().call():
        thresholds[address] = manager.functions.liquidationThreshold(address).call()
        feed_address, token_decimals, feed_decimals, staleness = oracle.functions.feedConfig(
            address
        ).call()
        feed = net.w3.eth.contract(
            address=feed_address, abi=net.deployment.contract(net.w3, "PriceFeed.USDC").abi
        )
        _, answer, _, updated_at, _ = feed.functions.latestRoundData().call()
        prices[address] = TokenPrice(answer, feed_decimals, token_decimals, updated_at, staleness)
    return Market(
        underlying=contracts.underlying.address,
        interest_rate=InterestRate(
            pool.functions.cumulativeIndexAtLastUpdate().call(),
            pool.functions.lastUpdateTimestamp().call(),
            pool.functions.interestRatePerSecond().call(),
        ),
        fees=Fees(
            manager.functions.feeInterest().call(),
            manager.functions.liquidationFee().call(),
            manager.functions.liquidationPremium().call(),
        ),
        liquidation_thresholds_bps=thresholds,
        prices=prices,
    )


def read_account_state(
    net: Devnet, account: str, market_symbol: str = "USDC"
) -> CreditAccountState:
    """The keeper's model of one account, read from the manager's views at the latest block."""
    manager = market(net, market_symbol).manager
    owner, principal, cumulative_index, accrued_interest, accrued_fees = (
        manager.functions.creditAccountInfo(account).call()
    )
    tokens, amounts = manager.functions.balances(account).call()
    return CreditAccountState(
        address=account,
        owner=owner,
        principal=principal,
        cumulative_index_ray=cumulative_index,
        accrued_interest=accrued_interest,
        accrued_fees=accrued_fees,
        balances=dict(zip(tokens, amounts, strict=True)),
    )


DEBT_FIELDS = ("principal", "cumulativeIndex", "accruedInterest", "accruedFees")


def debt_fields(update: Any) -> list[int]:
    """A `DebtUpdated` event's values in `creditAccountInfo` order (without the owner)."""
    return [update[name] for name in DEBT_FIELDS]


def snapshot_erc20(
    net: Devnet, holders: dict[str, str], symbols: tuple[str, ...]
) -> Callable[[], dict[tuple[str, str], int]]:
    """Returns a function giving each (holder label, symbol) balance change since this call."""
    before = {
        (label, symbol): erc20_balance(net, symbol, address)
        for label, address in holders.items()
        for symbol in symbols
    }

    def changes() -> dict[tuple[str, str], int]:
        return {
            (label, symbol): erc20_balance(net, symbol, holders[label]) - before[(label, symbol)]
            for label, symbol in before
        }

    return changes


def assert_events_match_views(manager: Contract, receipt: TxReceipt) -> int:
    """Checks that the manager's events in `receipt` carry absolute values: the last
    `BalanceUpdated` per (account, token) equals `balanceOf` and the last `DebtUpdated` per
    account equals `creditAccountInfo`, both read at the receipt's block. Returns how many events
    it compared, so a caller can assert the action emitted some."""
    block = receipt["blockNumber"]
    last_balance: dict[tuple[str, str], int] = {}
    for update in events(manager, "BalanceUpdated", receipt):
        last_balance[(update["creditAccount"], update["token"])] = update["balance"]
    for (account, token_addr), balance in last_balance.items():
        viewed = manager.functions.balanceOf(account, token_addr).call(block_identifier=block)
        assert viewed == balance, f"BalanceUpdated {balance} but balanceOf {viewed}"
    last_debt: dict[str, list[int]] = {}
    for update in events(manager, "DebtUpdated", receipt):
        last_debt[update["creditAccount"]] = debt_fields(update)
    for account, debt in last_debt.items():
        info = manager.functions.creditAccountInfo(account).call(block_identifier=block)
        assert info[1:] == debt, f"DebtUpdated {debt} but creditAccountInfo {info}"
    return len(last_balance) + len(last_debt)


POOL_BOOK_FIELDS = (
    "totalDeposits",
    "totalInterestEarned",
    "totalLosses",
    "availableLiquidity",
    "totalBorrowed",
)


def assert_pool_books_balance(pool: Contract, block: BlockIdentifier = "latest") -> None:
    """The pool's balance sheet holds at `block`: what depositors put in, plus the interest the
    pool received, less the principal it lost, is what it holds plus what is still lent out:
        totalDeposits + totalInterestEarned - totalLosses == availableLiquidity + totalBorrowed
    Unpaid interest is never earned, so it must not be booked as a loss either: a loss that
    counted it would leave the left side short by exactly that interest."""
    book = {name: pool.functions[name]().call(block_identifier=block) for name in POOL_BOOK_FIELDS}
    funded = book["totalDeposits"] + book["totalInterestEarned"] - book["totalLosses"]
    held = book["availableLiquidity"] + book["totalBorrowed"]
    assert funded == held, f"pool books off by {funded - held} at block {block!r}: {book}"


def assert_every_pool_books_balance(net: Devnet) -> None:
    """`assert_pool_books_balance` for every market's pool, at the latest block."""
    for symbol in net.deployment.markets:
        assert_pool_books_balance(market(net, symbol).pool)


def reverted(net: Devnet, call: ContractFunction, sender: str) -> RevertReason:
    """Sends `call` from `sender`, requires it to revert and returns the decoded error."""
    with pytest.raises(TransactionRevertedError) as excinfo:
        send(net.w3, call, sender)
    return excinfo.value.reason
