"""What every command that needs the protocol's state does first: check the chain against the
configuration, read the markets, back-fill their history and read every feed.

The daemon runs it once before following heads; `keeper accounts`, `account` and `liquidate` run
it to answer from the same exact state the daemon would act on.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from eth_abi.exceptions import DecodingError

from keeper.chain.heads import Head, latest_head
from keeper.chain.logs import LogFetcher
from keeper.chain.rpc import RpcClient, RpcError, redact_url
from keeper.config import ConfigError, KeeperConfig
from keeper.execution.dispatcher import Dispatcher, TxRequest
from keeper.execution.journal import TxJournal
from keeper.execution.liquidator import LiquidationPolicy, Liquidator
from keeper.execution.observer import ExecutionObserver
from keeper.execution.signer import (
    Signer,
    signer_from_env,
    signer_from_file,
    signer_from_keystore,
)
from keeper.protocol.calls import (
    MULTICALL3_ADDRESS,
    CallRevertedError,
    batch_liquidator_call,
    eth_call,
    feed_call,
    manager_call,
    multicall,
)
from keeper.protocol.events import decode_logs
from keeper.state.database import Database, DatabaseError, DatabaseLockedError
from keeper.state.store import MarketState, PriceKey, ProtocolState, StateChanges

log = structlog.get_logger(__name__)

_BATCH_LIQUIDATOR_FIELD = "liquidation.batch_liquidator"
_BATCH_LIQUIDATOR_FIX = (
    "; deploy a BatchLiquidator whose owner is the signer and set its address, or remove "
    "batch_liquidator to send one transaction per account"
)

# (blocks done, blocks in all): called as the back-fill advances.
BackfillProgress = Callable[[int, int], None]


class StartupError(Exception):
    """The chain or the contracts are not what the keeper needs; the message says what."""


@dataclass(frozen=True, slots=True)
class LoadedState:
    """The protocol's state as of `head`: `logs` logs applied since the deploy block, or since
    the checkpoint it resumed from, changing what `changes` says."""

    state: ProtocolState
    fetcher: LogFetcher
    head: Head
    logs: int
    changes: StateChanges
    genesis_hash: str


@contextlib.contextmanager
def keeper_database(config: KeeperConfig) -> Iterator[Database]:
    """The database `storage.database_path` names, locked for this process; without one, a
    scratch database (nothing survives the process, which is said once)."""
    path = config.storage.database_path
    if path is None:
        log.warning(
            "storage.ephemeral",
            detail="no storage.database_path: the checkpoint and the transaction journal "
            "last only as long as this process; a restart re-reads history",
        )
        with scratch_database() as database:
            yield database
        return
    try:
        database = Database.open(path)
    except DatabaseLockedError as error:
        raise StartupError(str(error)) from None
    except DatabaseError as error:
        raise ConfigError("storage.database_path", str(path), str(error)) from None
    with database:
        yield database


@contextlib.contextmanager
def scratch_database() -> Iterator[Database]:
    """A database in a temporary directory, removed on the way out: for commands that need a
    journal but must not touch (or wait for) the keeper's own."""
    with (
        tempfile.TemporaryDirectory(prefix="asgard-keeper-") as directory,
        Database.open(Path(directory) / "keeper.sqlite") as database,
    ):
        yield database


def load_signer(config: KeeperConfig) -> Signer:
    """The signer the `[signer]` section names; raises `SignerError` (never showing the key)."""
    settings = config.signer
    if settings.private_key_env is not None:
        return signer_from_env(settings.private_key_env)
    if settings.private_key_file is not None:
        return signer_from_file(settings.private_key_file)
    if settings.keystore is None or settings.password_file is None:
        raise ConfigError(
            "signer", None, "set keystore + password_file, private_key_file or private_key_env"
        )
    return signer_from_keystore(settings.keystore, settings.password_file)


async def load_state(
    rpc: RpcClient,
    config: KeeperConfig,
    on_progress: BackfillProgress | None = None,
    *,
    resume: Callable[[str], Awaitable[Resumed | None]] | None = None,
) -> LoadedState:
    """Checks the chain, then brings every market's state up to the latest head: from the
    checkpoint `resume(genesis_hash)` returns, or else from the deploy block."""
    genesis_hash = await check_chain(rpc, config)
    resumed = None if resume is None else await resume(genesis_hash)
    fetcher = LogFetcher(rpc, initial_chunk_blocks=config.chain.log_chunk_blocks)
    head = await latest_head(rpc)
    if resumed is None:
        state = ProtocolState(await read_markets(rpc, config))
        first = config.protocol.deploy_block
    else:
        state, first = resumed.state, resumed.block_number + 1
    logs, changes = await backfill(
        rpc, fetcher, state, config, head, from_block=first, on_progress=on_progress
    )
    return LoadedState(state, fetcher, head, logs, changes, genesis_hash)


@dataclass(frozen=True, slots=True)
class Resumed:
    """A saved state of the protocol as of `block_number` (a block still on the chain)."""

    state: ProtocolState
    block_number: int


async def check_chain(rpc: RpcClient, config: KeeperConfig) -> str:
    """The chain id, and code at every configured address and at Multicall3; returns the
    genesis block's hash, which (with the chain id) names the chain the keeper follows."""
    chain_id = int(await rpc.request("eth_chainId", []), 16)
    if chain_id != config.chain.chain_id:
        raise ConfigError(
            "chain.chain_id",
            config.chain.chain_id,
            f"the node at {redact_url(rpc.url)} serves chain {chain_id}; point rpc_url at "
            "the right network or correct chain_id",
        )
    for field, address in configured_addresses(config):
        if not await has_code(rpc, address):
            fix = _BATCH_LIQUIDATOR_FIX if field == _BATCH_LIQUIDATOR_FIELD else ""
            raise ConfigError(
                field, address, f"no contract at this address on chain {chain_id}{fix}"
            )
    if not await has_code(rpc, MULTICALL3_ADDRESS):
        raise StartupError(
            f"no Multicall3 at {MULTICALL3_ADDRESS} on chain {chain_id}; the keeper batches "
            "its reads through it (it is deployed on every major EVM chain)"
        )
    genesis = await rpc.request("eth_getBlockByNumber", ["0x0", False])
    genesis_hash = str(genesis["hash"]) if isinstance(genesis, dict) else ""
    log.info(
        "keeper.chain_checked", chain_id=chain_id, genesis=genesis_hash, rpc=redact_url(rpc.url)
    )
    return genesis_hash


def configured_addresses(config: KeeperConfig) -> list[tuple[str, str]]:
    """(field name, address) of every contract the configuration names."""
    named = [
        (f"protocol.credit_managers[{i}]", address)
        for i, address in enumerate(config.protocol.credit_managers)
    ]
    named.append(("liquidation.native_token", config.liquidation.native_token))
    if config.liquidation.batch_liquidator is not None:
        named.append((_BATCH_LIQUIDATOR_FIELD, config.liquidation.batch_liquidator))
    return named


async def check_batch_liquidator(rpc: RpcClient, config: KeeperConfig, signer: str) -> None:
    """The configured BatchLiquidator answers as one and belongs to `signer`: it lets only its
    owner liquidate, so any other owner would make every batch revert."""
    batch = config.liquidation.batch_liquidator
    if batch is None:
        return
    problem = await batch_liquidator_problem(rpc, batch, signer)
    if problem is not None:
        raise ConfigError(_BATCH_LIQUIDATOR_FIELD, batch, problem + _BATCH_LIQUIDATOR_FIX)


async def batch_liquidator_problem(rpc: RpcClient, batch: str, signer: str) -> str | None:
    """Why `batch` cannot liquidate for `signer`, or None when it can."""
    if not await has_code(rpc, batch):
        return "no contract at this address"
    try:
        (owner,) = await eth_call(rpc, batch_liquidator_call(batch, "owner"))
    except (CallRevertedError, RpcError, DecodingError):
        return "does not answer owner(): not a BatchLiquidator"
    if owner != signer:
        return f"its owner() is {owner}, not the signer {signer}"
    return None


async def has_code(rpc: RpcClient, address: str) -> bool:
    return await rpc.request("eth_getCode", [address, "latest"]) not in ("0x", "0x0", None)


async def read_markets(rpc: RpcClient, config: KeeperConfig) -> list[MarketState]:
    """Each CreditManager's underlying, pool and oracle, in one Multicall."""
    managers = config.protocol.credit_managers
    calls = [manager_call(m, name) for m in managers for name in ("underlying", "pool", "oracle")]
    results = await multicall(rpc, calls)
    markets = []
    for i, manager in enumerate(managers):
        answers = [result.outputs for result in results[3 * i : 3 * i + 3]]
        if any(outputs is None for outputs in answers):
            raise ConfigError(
                f"protocol.credit_managers[{i}]",
                manager,
                "this contract is not a CreditManager (underlying/pool/oracle views fail)",
            )
        underlying, pool, oracle = (outputs[0] for outputs in answers if outputs)
        markets.append(MarketState(manager, underlying, pool, oracle))
    return markets


async def backfill(
    rpc: RpcClient,
    fetcher: LogFetcher,
    state: ProtocolState,
    config: KeeperConfig,
    head: Head,
    *,
    from_block: int,
    on_progress: BackfillProgress | None = None,
) -> tuple[int, StateChanges]:
    """Applies the logs from `from_block` up to `head` (from the deploy block: the whole
    history), then reads every feed's latest answer at `head` (one read instead of its whole
    price history); returns the number of logs applied and what they changed."""
    started = time.monotonic()
    first = from_block
    total = max(head.number - first + 1, 1)

    def progress(done_to: int, _to_block: int) -> None:
        if on_progress is not None:
            on_progress(done_to - first + 1, total)

    applied, changes = 0, StateChanges()
    # Applied chunk by chunk, so a long history is never in memory whole. A failure part way
    # leaves `state` half-built, and raises: nothing is checkpointed before the back-fill ends.
    chunks = fetcher.chunks(state.watched_addresses(), first, head.number, on_progress=progress)
    async for chunk in chunks:
        changes.merge(state.apply(decode_logs(chunk)))
        applied += len(chunk)
    for market in state.markets.values():
        if market.interest_rate is None:
            raise ConfigError(
                "protocol.deploy_block",
                config.protocol.deploy_block,
                f"the logs from there hold no interest-rate checkpoint of pool {market.pool} "
                f"(CreditManager {market.manager}): set it at or before the pool's deployment",
            )
    changes.prices |= await read_feeds(rpc, state, head.number)
    log.info(
        "keeper.backfilled",
        from_block=first,
        to_block=head.number,
        logs=applied,
        accounts=state.account_count(),
        feeds=len(state.feeds()),
        seconds=round(time.monotonic() - started, 3),
    )
    return applied, changes


async def read_feeds(
    rpc: RpcClient, state: ProtocolState, block: int, *, unreadable: set[str] | None = None
) -> set[PriceKey]:
    """Every feed's `latestRoundData` at `block`; returns the prices that changed. A missed
    `AnswerUpdated` or a feed replaced without an event shows up here. A feed whose call
    reverts keeps its last answer (which goes stale in time; the oracle reverts a liquidation
    that needs it) and is added to `unreadable`."""
    feeds = sorted(state.feeds())
    results = await multicall(rpc, [feed_call(f, "latestRoundData") for f in feeds], block=block)
    changed: set[PriceKey] = set()
    for feed, result in zip(feeds, results, strict=True):
        if result.outputs is None:
            log.error("feed.unreadable", feed=feed, revert=str(result.revert))
            if unreadable is not None:
                unreadable.add(feed)
            continue
        _, answer, _, updated_at, _ = result.outputs
        changed |= state.set_answer(feed, answer, updated_at)
    return changed


def liquidation_policy(config: KeeperConfig) -> LiquidationPolicy:
    """The `[liquidation]` section as the execution stage takes it."""
    settings = config.liquidation
    return LiquidationPolicy(
        native_token=settings.native_token,
        min_profit_usd=settings.min_profit_usd,
        emergency=settings.emergency,
        priority_fee_wei=settings.priority_fee_wei,
        max_fee_wei=settings.max_fee_wei,
        gas_limit_margin_bps=settings.gas_limit_margin_bps,
        max_failures=settings.max_failures,
        failure_cooldown_s=settings.failure_cooldown_s,
        batch_liquidator=settings.batch_liquidator,
        batch_size=settings.batch_size,
    )


def signing_pipeline(
    rpc: RpcClient,
    config: KeeperConfig,
    signer: Signer,
    state: ProtocolState,
    journal: TxJournal,
    *,
    observer: ExecutionObserver | None = None,
) -> tuple[Liquidator, Dispatcher]:
    """The liquidator and the dispatcher for `signer`, wired to each other: before replacing a
    stuck liquidation the dispatcher asks the liquidator whether it is still wanted. Every
    transaction is written to `journal` before it is sent."""
    liquidator: Liquidator

    async def still_wanted(request: TxRequest) -> bool:
        return await liquidator.still_wanted(request)

    settings = config.liquidation
    dispatcher = Dispatcher(
        rpc,
        signer,
        config.chain.chain_id,
        priority_fee_wei=settings.priority_fee_wei,
        max_fee_wei=settings.max_fee_wei,
        inclusion_timeout_s=settings.inclusion_timeout_s,
        journal=journal,
        still_wanted=still_wanted,
        observer=observer,
    )
    liquidator = Liquidator(
        rpc, state, dispatcher, signer.address, liquidation_policy(config), observer=observer
    )
    return liquidator, dispatcher
