"""The verdict every fault scenario ends with, read from the chain alone (events, receipts, view
calls at past blocks), never from what the keeper says about itself:

(a) every account the contracts called liquidatable in `LIQUIDATABLE_BLOCKS` consecutive blocks
    was liquidated by the end (by anyone);
(b) no mined transaction of the keeper liquidated (alone, or in a batch of its BatchLiquidator)
    an account the keeper had already liquidated, and every liquidation credited to the keeper
    (its address or its BatchLiquidator as liquidator) was sent from its address and paid to it;
(c) no transaction mined from the keeper's address reverted;
(d) the keeper's state equals the contracts' views at the block it had processed.

(d) takes a `ProtocolState` and a block, wherever the state comes from: an in-process keeper's
pipeline (`settle`) or a keeper process's checkpoint.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_typing import HexStr
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction

from keeper.devnet.network import Devnet
from keeper.protocol.calls import MULTICALL3_ADDRESS, FunctionAbi, function_abi
from keeper.state.store import MarketState, ProtocolState
from tests.keeper.helpers import (
    InProcessKeeper,
    Liquidation,
    MinedTx,
    assert_account_matches_views,
    batch_liquidator,
    liquidations,
    managers,
    mined_transactions,
    on_chain,
    open_accounts,
    pending_of,
    stop_mining,
    wait_until_async,
)

LIQUIDATABLE_BLOCKS = 3

_AGGREGATE3 = function_abi("Multicall3", "aggregate3")
_IS_LIQUIDATABLE = function_abi("CreditManager", "isLiquidatable")
_LIQUIDATE = function_abi("CreditManager", "liquidateCreditAccount")
_LIQUIDATE_BATCH = function_abi("BatchLiquidator", "liquidateBatch")


@dataclass(frozen=True, slots=True)
class KeeperSnapshot:
    """A keeper's state and the last block it had processed into it."""

    state: ProtocolState
    block: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the criteria looked at, for a scenario's own further assertions."""

    start_block: int
    end_block: int
    liquidatable: dict[str, list[int]]  # account -> blocks in which isLiquidatable was true
    liquidations: list[Liquidation]  # by anyone, in chain order
    keeper_txs: list[MinedTx]  # every transaction mined from the keeper's address
    keeper_liquidations: dict[str, MinedTx]  # account -> the keeper's transaction liquidating it


def assert_fault_criteria(
    net: Devnet,
    keeper: str,
    *,
    start_block: int,
    end_block: int | None = None,
    snapshot: KeeperSnapshot | None = None,
) -> Verdict:
    """(a), (b) and (c) over blocks `start_block`..`end_block` (default: the latest), and (d)
    when given the keeper's state."""
    end = net.w3.eth.block_number if end_block is None else end_block
    keeper = Web3.to_checksum_address(keeper)
    liquidatable = liquidatable_blocks(net, start_block, end)
    found = liquidations(net, start_block, end)
    txs = [tx for tx in mined_transactions(net.w3, keeper, start_block) if tx.block <= end]
    assert_liquidated_when_due(liquidatable, found, end)
    keeper_liquidations = assert_liquidated_once_by_the_keeper(net, keeper, txs, found)
    assert_nothing_reverted(net, txs)
    if snapshot is not None:
        assert_state_matches_views(snapshot.state, net, snapshot.block)
    return Verdict(start_block, end, liquidatable, found, txs, keeper_liquidations)


# ---------------------------------------------------------------------------- (a)


def liquidatable_blocks(net: Devnet, start_block: int, end_block: int) -> dict[str, list[int]]:
    """For every account ever opened by `end_block`, the blocks in `start_block..end_block` in
    which `isLiquidatable` was true: one Multicall3 batch per block. A call that reverts (a
    closed account, or a stale feed, when no one can liquidate) counts as not liquidatable."""
    deployed = net.deployment.deploy_block
    targets = [
        (str(manager.address), account)
        for manager in managers(net).values()
        for account in _opened_accounts(manager, deployed, end_block)
    ]
    batch = [
        (manager, True, bytes.fromhex(_IS_LIQUIDATABLE.encode(account)[2:]))
        for manager, account in targets
    ]
    found: dict[str, list[int]] = defaultdict(list)
    for block in range(start_block, end_block + 1):
        for (_, account), (success, data) in zip(
            targets, _aggregate3(net, batch, block), strict=True
        ):
            if success and _IS_LIQUIDATABLE.decode(data) == (True,):
                found[account].append(block)
    return dict(found)


def assert_liquidated_when_due(
    liquidatable: dict[str, list[int]], found: list[Liquidation], end_block: int
) -> None:
    """(a): each account liquidatable in `LIQUIDATABLE_BLOCKS` consecutive blocks has a
    `CreditAccountLiquidated` by `end_block`."""
    liquidated = {liquidation.account for liquidation in found}
    missed = []
    for account, blocks in sorted(liquidatable.items()):
        run = _longest_run(blocks)
        if len(run) >= LIQUIDATABLE_BLOCKS and account not in liquidated:
            missed.append(
                f"{account}: liquidatable in blocks {run[0]}..{run[-1]} ({len(run)} blocks), "
                f"not liquidated by block {end_block}"
            )
    assert not missed, "accounts left liquidatable:\n" + "\n".join(missed)


def _longest_run(blocks: list[int]) -> list[int]:
    longest: list[int] = []
    current: list[int] = []
    for block in blocks:
        current = [*current, block] if current and block == current[-1] + 1 else [block]
        if len(current) > len(longest):
            longest = current
    return longest


def _opened_accounts(manager: Contract, from_block: int, to_block: int) -> list[str]:
    events = manager.events.CreditAccountOpened.get_logs(from_block=from_block, to_block=to_block)
    return sorted({event["args"]["creditAccount"] for event in events})


def _aggregate3(
    net: Devnet, batch: Sequence[tuple[str, bool, bytes]], block: int
) -> list[tuple[bool, bytes]]:
    if not batch:
        return []
    data = HexStr(_AGGREGATE3.encode(batch))
    raw = net.w3.eth.call({"to": MULTICALL3_ADDRESS, "data": data}, block)
    (results,) = _AGGREGATE3.decode(bytes(raw))
    return [(bool(success), bytes(answer)) for success, answer in results]


# ---------------------------------------------------------------------------- (b) and (c)


def assert_liquidated_once_by_the_keeper(
    net: Devnet, keeper: str, txs: list[MinedTx], found: list[Liquidation]
) -> dict[str, MinedTx]:
    """(b): no mined keeper transaction liquidates an account (`liquidateCreditAccount`, or
    `liquidateBatch` of its BatchLiquidator) that an earlier keeper transaction had already
    liquidated; each pays the keeper; and every liquidation credited to the keeper (its address,
    or its BatchLiquidator, as `liquidator`) came from one of them and paid it. Returns, by
    account, the keeper's transaction that liquidated it."""
    manager_addresses = {str(manager.address) for manager in managers(net).values()}
    batch = batch_liquidator(net)
    batch_owner = _owner(net)
    own = {keeper, batch}
    credited = [liquidation for liquidation in found if liquidation.liquidator in own]
    # account -> hash of the transaction that liquidated it for the keeper
    credited_to = {liquidation.account: liquidation.tx_hash for liquidation in credited}
    liquidated_by: dict[str, MinedTx] = {}
    again: list[str] = []
    for tx in txs:
        call = _liquidation_call(tx, manager_addresses, batch, batch_owner)
        if call is None:
            continue
        accounts, payee = call
        assert payee == keeper, (
            f"keeper tx {tx.tx_hash} (block {tx.block}) liquidates {', '.join(accounts)} "
            f"paying {payee}"
        )
        for account in accounts:
            earlier = liquidated_by.get(account)
            if earlier is not None:
                again.append(
                    f"{account}: {earlier.tx_hash} (block {earlier.block}) liquidated it, then "
                    f"{tx.tx_hash} (block {tx.block}) tried again"
                )
            elif credited_to.get(account) == tx.tx_hash:
                liquidated_by[account] = tx
    assert not again, (
        "accounts the keeper liquidated and then tried again in another transaction:\n"
        + "\n".join(again)
    )
    keeper_hashes = {tx.tx_hash for tx in txs}
    for liquidation in credited:
        assert liquidation.tx_hash in keeper_hashes, (
            f"{liquidation.account} liquidated for the keeper in block {liquidation.block} "
            f"by {liquidation.tx_hash}, which the keeper's address did not send"
        )
        assert liquidation.to == keeper, (
            f"{liquidation.account} liquidated for the keeper by {liquidation.tx_hash} paid "
            f"{liquidation.to}"
        )
    return liquidated_by


def assert_nothing_reverted(net: Devnet, txs: list[MinedTx]) -> None:
    """(c): every transaction mined from the keeper's address has status 1."""
    manager_addresses = {str(manager.address) for manager in managers(net).values()}
    batch, batch_owner = batch_liquidator(net), _owner(net)
    reverted = []
    for tx in txs:
        if tx.status == 1:
            continue
        call = _liquidation_call(tx, manager_addresses, batch, batch_owner)
        what = f"liquidation of {', '.join(call[0])}" if call else f"call to {tx.to}"
        reverted.append(f"{tx.tx_hash} (block {tx.block}, nonce {tx.nonce}): {what}")
    assert not reverted, "keeper transactions reverted on chain:\n" + "\n".join(reverted)


def _liquidation_call(
    tx: MinedTx, manager_addresses: set[str], batch: str, batch_owner: str
) -> tuple[list[str], str] | None:
    """(accounts, payee) when `tx` calls a CreditManager's `liquidateCreditAccount`, or the
    keeper's BatchLiquidator's `liquidateBatch` (which pays its owner, the keeper)."""
    if tx.to in manager_addresses and tx.input.startswith(_selector(_LIQUIDATE)):
        account, payee = decode(list(_LIQUIDATE.input_types), bytes.fromhex(tx.input[10:]))
        return [Web3.to_checksum_address(account)], Web3.to_checksum_address(payee)
    if tx.to == batch and tx.input.startswith(_selector(_LIQUIDATE_BATCH)):
        _, accounts = decode(list(_LIQUIDATE_BATCH.input_types), bytes.fromhex(tx.input[10:]))
        return [Web3.to_checksum_address(a) for a in accounts], batch_owner
    return None


def _owner(net: Devnet) -> str:
    """Whom the BatchLiquidator pays: its owner."""
    owner: str = net.deployment.contract(net.w3, "BatchLiquidator").functions.owner().call()
    return owner


def _selector(function: FunctionAbi) -> str:
    return "0x" + function.selector.hex()


# ---------------------------------------------------------------------------- (d)


def assert_state_matches_views(state: ProtocolState, net: Devnet, block: int) -> None:
    """(d): per market, the paused flag, fees, thresholds, emergency liquidators, the pool's
    rate checkpoint, every open account and every collateral token's feed and answer equal the
    contracts' views at `block`."""
    by_address = {str(manager.address): market for market, manager in managers(net).items()}
    assert set(state.markets) == set(by_address), (
        f"the keeper follows {sorted(state.markets)}, the devnet has {sorted(by_address)}"
    )
    open_at_block = open_accounts(net, block)
    for address, market_state in state.markets.items():
        market = by_address[address]
        _assert_market_matches(net, market, market_state, block)
        expected = {account for account, owner in open_at_block.items() if owner == market}
        held = set(market_state.accounts)
        assert held == expected, (
            f"market {market} in block {block}: accounts only the keeper has "
            f"{sorted(held - expected)}, only the views have {sorted(expected - held)}"
        )
        for account in sorted(expected):
            assert_account_matches_views(
                net, market, account, market_state.accounts[account], block
            )
        for token in market_state.liquidation_thresholds_bps:
            _assert_price_matches(state, net, market_state.oracle, token, block)


def _assert_market_matches(net: Devnet, market: str, held: MarketState, block: int) -> None:
    views = managers(net)[market].functions
    pool = net.deployment.contract(net.w3, f"LendingPool.{market}").functions
    where = f"market {market} in block {block}"
    assert held.paused == _view(views.paused(), block), f"{where}: paused flag differs"
    fees = (
        held.fees.fee_interest_bps,
        held.fees.liquidation_fee_bps,
        held.fees.liquidation_premium_bps,
    )
    viewed_fees = tuple(
        _view(call, block)
        for call in (views.feeInterest(), views.liquidationFee(), views.liquidationPremium())
    )
    assert fees == viewed_fees, f"{where}: keeper has fees {fees}, views {viewed_fees}"
    thresholds = {
        token: _view(views.liquidationThreshold(token), block)
        for token in _view(views.collateralTokens(), block)
    }
    assert held.liquidation_thresholds_bps == thresholds, (
        f"{where}: keeper has thresholds {held.liquidation_thresholds_bps}, views {thresholds}"
    )
    roles = net.roles
    known = {roles.keeper.address, roles.emergency_liquidator.address, roles.competitor.address}
    for candidate in sorted(known | held.emergency_liquidators):
        allowed = _view(views.isEmergencyLiquidator(candidate), block)
        assert (candidate in held.emergency_liquidators) == allowed, (
            f"{where}: emergency liquidator {candidate} is {allowed} in the views"
        )
    rate = held.interest_rate
    assert rate is not None, f"{where}: the keeper has no interest rate"
    checkpoint = (rate.cumulative_index_ray, rate.last_update_timestamp, rate.rate_per_second_ray)
    viewed_checkpoint = tuple(
        _view(call, block)
        for call in (
            pool.cumulativeIndexAtLastUpdate(),
            pool.lastUpdateTimestamp(),
            pool.interestRatePerSecond(),
        )
    )
    assert checkpoint == viewed_checkpoint, (
        f"{where}: keeper has rate checkpoint {checkpoint}, the pool {viewed_checkpoint}"
    )


def _view(call: ContractFunction, block: int) -> Any:
    return call.call(block_identifier=block)


def _assert_price_matches(
    state: ProtocolState, net: Devnet, oracle: str, token: str, block: int
) -> None:
    symbol = net.deployment.symbol_of(token)
    where = f"{symbol} price in block {block}"
    viewed = tuple(
        _view(net.deployment.contract(net.w3, "PriceOracle").functions.feedConfig(token), block)
    )
    config = state.feed_configs.get((oracle, token))
    assert config is not None, f"{where}: the keeper knows no feed"
    held = (config.feed, config.token_decimals, config.feed_decimals, config.staleness_period)
    assert held == viewed, f"{where}: keeper has feed configuration {held}, views {viewed}"
    price = state.prices[oracle].get(token)
    assert price is not None, f"{where}: the keeper has no answer"
    feed = net.deployment.contract(net.w3, f"PriceFeed.{symbol}").functions
    _, answer, _, updated_at, _ = _view(feed.latestRoundData(), block)
    assert (price.answer, price.updated_at) == (answer, updated_at), (
        f"{where}: keeper has answer {price.answer} of {price.updated_at}, "
        f"the feed {answer} of {updated_at}"
    )


# ---------------------------------------------------------------------------- taking the state


async def settle(running: InProcessKeeper, net: Devnet, keeper: str) -> KeeperSnapshot:
    """Stops the chain once the keeper has nothing in flight and nothing of `keeper` (the
    signer's address) waits in the pool, and returns the keeper's state when it has processed
    the last block: with no new block the state stays put while the criteria read the views,
    even if the keeper keeps running."""
    w3 = net.w3
    pipeline = running.keeper.pipeline
    assert pipeline is not None, "the keeper has not started"
    dispatcher = pipeline.dispatcher

    async def idle() -> bool:
        pooled = await on_chain(pending_of, w3, keeper)
        return not pooled and not dispatcher.in_flight_count()

    await wait_until_async(idle, what="the keeper's transactions to be mined", source=running)
    await on_chain(stop_mining, w3)
    head = await on_chain(lambda: w3.eth.block_number)

    async def caught_up() -> bool:
        return running.keeper.progress.last_block >= head

    await wait_until_async(caught_up, what=f"the keeper to process block {head}", source=running)
    return KeeperSnapshot(pipeline.state, running.keeper.progress.last_block)
