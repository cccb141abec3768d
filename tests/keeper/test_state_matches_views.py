"""The keeper's event-sourced picture of an account equals the contracts' views after every
action a borrower can take, from opening to closing, and so does its health factor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from keeper.devnet.controls import advance_time
from keeper.devnet.network import Devnet
from keeper.devnet.tx import send
from keeper.risk.health import account_health, cumulative_index_at
from keeper.state.model import CreditAccountState
from tests.faults.criteria import assert_state_matches_views
from tests.keeper.helpers import (
    Harness,
    InProcessKeeper,
    assert_account_matches_views,
    keeper_in_process,
    manager_of,
    on_chain,
    wait_for_log_async,
    wait_until_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

MAX_UINT256 = 2**256 - 1
USDC = 10**6
WETH = 10**18
INTEREST_S = 20 * 60


@dataclass(frozen=True, slots=True)
class KeeperView:
    """What the keeper holds for one account at one block, copied in one go."""

    block: int
    timestamp: int
    account: CreditAccountState | None
    in_book: bool
    health_factor_wad: int | None
    total_value: int | None
    weighted_value: int | None
    debt: tuple[int, int, int] | None
    book_weighted_value: int | None
    book_says_liquidatable: bool | None


def _keeper_view(running: InProcessKeeper, manager: str, address: str) -> KeeperView:
    """Reads the keeper's state, monitor and risk math without yielding to the event loop, so
    every figure belongs to the same processed block."""
    pipeline = running.keeper.pipeline
    assert pipeline is not None
    progress = running.keeper.progress
    account = pipeline.state.markets[manager].accounts.get(address)
    book = pipeline.monitor.books[manager]
    risk = book.get(address)
    if account is None:
        return KeeperView(
            progress.last_block, progress.last_block_timestamp, None, risk is not None,
            None, None, None, None, None, None,
        )  # fmt: skip
    market = pipeline.state.market_view(manager)
    health = account_health(account, market, progress.last_block_timestamp)
    index = cumulative_index_at(market.interest_rate, progress.last_block_timestamp)
    return KeeperView(
        block=progress.last_block,
        timestamp=progress.last_block_timestamp,
        account=account,
        in_book=risk is not None,
        health_factor_wad=health.health_factor_wad,
        total_value=health.value.total_value,
        weighted_value=health.value.weighted_value,
        debt=(health.debt.principal, health.debt.interest, health.debt.fee),
        book_weighted_value=None if risk is None else risk.weighted_value,
        book_says_liquidatable=address in book.liquidatable(index),
    )


def _assert_matches_views(net: Devnet, market: str, address: str, seen: KeeperView) -> None:
    """The contracts' views at the keeper's block equal what the keeper holds."""
    manager = manager_of(net, market).functions
    block = seen.block
    assert net.w3.eth.get_block(block)["timestamp"] == seen.timestamp
    assert_account_matches_views(net, market, address, seen.account, block)
    if seen.account is None:
        assert not seen.in_book, f"closed in block {block}, still in the keeper's risk book"
        return
    assert seen.in_book
    assert (seen.total_value, seen.weighted_value) == tuple(
        manager.calcTotalValue(address).call(block_identifier=block)
    )
    assert seen.book_weighted_value == seen.weighted_value
    assert seen.debt == tuple(manager.calcDebt(address).call(block_identifier=block))
    assert seen.health_factor_wad == manager.calcHealthFactor(address).call(block_identifier=block)
    assert seen.book_says_liquidatable == manager.isLiquidatable(address).call(
        block_identifier=block
    )


async def test_keeper_state_equals_the_views_through_an_accounts_life(
    harness: Harness, tmp_path: Path
) -> None:
    net = harness.devnet(accounts=3, seed=2)
    w3 = net.w3
    borrower = net.roles.borrowers[0].address
    deployer = net.roles.deployer.address
    manager = manager_of(net, "USDC")
    usdc = net.deployment.contract(w3, "USDC")
    weth = net.deployment.contract(w3, "WETH")
    adapter = net.deployment.address("OracleSwapAdapter")

    # Two blocks per eth_getLogs: the back-fill applies its history in many chunks.
    chunks_of_two = {"chain": {"log_chunk_blocks": 2}}
    async with keeper_in_process(
        net, net.roles.keeper, tmp_path, settings=chunks_of_two
    ) as running:
        await wait_for_log_async(running, "keeper.following")
        pipeline = running.keeper.pipeline
        assert pipeline is not None
        backfilled = running.keeper.progress.last_block
        assert backfilled > 2 * 4, "a history of a few chunks at least"
        await on_chain(assert_state_matches_views, pipeline.state, net, backfilled)

        async def processed(block: int) -> None:
            async def reached() -> bool:
                return running.keeper.progress.last_block >= block

            await wait_until_async(
                reached, what=f"the keeper to process block {block}", source=running
            )

        async def step(call: ContractFunction, sender: str = borrower) -> TxReceipt:
            receipt = await on_chain(send, w3, call, sender)
            await processed(receipt["blockNumber"])
            return receipt

        async def check(address: str, after: str) -> None:
            seen = _keeper_view(running, manager.address, address)
            assert seen.block == await on_chain(lambda: w3.eth.block_number), "blocks raced"
            try:
                await on_chain(_assert_matches_views, net, "USDC", address, seen)
            except AssertionError as error:
                raise AssertionError(f"after {after} (block {seen.block}): {error}") from None

        await step(usdc.functions.mint(borrower, 50_000 * USDC), deployer)
        await step(weth.functions.mint(borrower, 5 * WETH), deployer)
        await step(usdc.functions.approve(manager.address, MAX_UINT256))
        await step(weth.functions.approve(manager.address, MAX_UINT256))

        opened = await step(
            manager.functions.openCreditAccount(20_000 * USDC, usdc.address, 10_000 * USDC)
        )
        events = manager.events.CreditAccountOpened().process_receipt(opened, errors=DISCARD)
        address: str = events[0]["args"]["creditAccount"]
        await check(address, "openCreditAccount")

        functions = manager.functions
        actions: list[ContractFunction] = [
            functions.addCollateral(address, weth.address, 2 * WETH),
            functions.increaseDebt(address, 5_000 * USDC),
            functions.decreaseDebt(address, 3_000 * USDC),
            functions.swap(address, adapter, usdc.address, weth.address, 8_000 * USDC, 0),
            functions.withdrawCollateral(address, weth.address, WETH, borrower),
            functions.closeCreditAccount(address, borrower),
        ]
        for action in actions:
            # Interest accrues before each action, so every debt change folds real interest (the
            # feeds, published at deploy, stay fresh: 6 x 20 min is within their 3 h).
            await on_chain(advance_time, w3, INTEREST_S)
            await processed(await on_chain(lambda: w3.eth.block_number))
            await check(address, f"{INTEREST_S} s of interest")
            await step(action)
            await check(address, action.fn_name)
        running.check_alive()
