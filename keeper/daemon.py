"""The keeper's life: check the chain, resume or back-fill, then one handler per new block.

Block handlers never overlap: the head follower yields the newest head, and a handler covers every
block since the last one it processed (one `eth_getLogs` over the range), so a slow block cannot
make the keeper fall behind by queueing. Sending runs beside it in the dispatcher's own task.

Each handler first checks that the new head descends from the last block it processed. If not,
the chain reorganised: the state is rolled back to the newest block both chains share, the journal
re-checks every transaction mined above it, and the handler goes on from there. After each block
the state is checkpointed, so a restart resumes there instead of re-reading history.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from keeper.chain.heads import WEBSOCKET, Head, HeadFollower, parse_head
from keeper.chain.logs import InconsistentLogsError, LogFetcher
from keeper.chain.rpc import (
    ChainMismatchError,
    RpcClient,
    RpcError,
    RpcObserver,
    RpcTransportError,
)
from keeper.config import KeeperConfig
from keeper.execution.dispatcher import Dispatcher
from keeper.execution.journal import TxJournal
from keeper.execution.liquidator import Liquidator
from keeper.execution.observer import ExecutionObserver
from keeper.execution.signer import Signer
from keeper.protocol.events import checksum, decode_logs
from keeper.risk.monitor import Candidate, RiskMonitor
from keeper.startup import (
    LoadedState,
    Resumed,
    StartupError,
    check_batch_liquidator,
    keeper_database,
    load_state,
    read_feeds,
    signing_pipeline,
)
from keeper.state.checkpoint import CheckpointStore
from keeper.state.database import Database, DatabaseError
from keeper.state.store import PriceKey, ProtocolState, StateChanges, UndoUnavailableError

log = structlog.get_logger(__name__)

_PROGRESS_LOG_INTERVAL_S = 2.0
# What `KeeperObserver.input_rejected` reports, and why each is refused.
REJECTED_INPUTS = (
    "feed_missing",  # a token's feed never answered
    "feed_non_positive",  # a feed answered 0 or a negative price
    "feed_stale",  # a feed's answer is older than its staleness period
    "feed_reverted",  # reading a feed reverted
    "rpc_inconsistent",  # a node's logs contradict the range or the head it announced
)
# How often every RPC endpoint is asked for its head, to set aside one that stalls.
_ENDPOINT_CHECK_INTERVAL_S = 5.0


class KeeperObserver(RpcObserver, ExecutionObserver, Protocol):
    """Everything the keeper's stages report as it happens (implemented by `keeper.ops`)."""

    def input_rejected(self, kind: str) -> None:
        """Data the keeper refused to act on; `kind` is one of `REJECTED_INPUTS`."""

    def chain_reorganised(self, depth: int) -> None:
        """The chain replaced `depth` blocks the keeper had processed."""


class _HistoryLostError(Exception):
    """The state cannot follow the chain from here (a reorg deeper than the undo kept): read it
    again from the start, keeping the journal."""


@dataclass(slots=True)
class Progress:
    """Where the keeper is; read by health checks, metrics and tests."""

    backfilled: bool = False
    head_block: int = 0
    head_received_at: float = 0.0  # unix time the newest head arrived
    last_block: int = 0
    last_block_timestamp: int = 0
    websocket: bool = False
    # account -> (manager, first processed block in which it was below Hf 1)
    liquidatable_since: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The stages wired together for one run; exposed so tests and health checks can look in."""

    rpc: RpcClient
    fetcher: LogFetcher
    state: ProtocolState
    monitor: RiskMonitor
    liquidator: Liquidator
    dispatcher: Dispatcher


class Keeper:
    def __init__(
        self,
        config: KeeperConfig,
        signer: Signer,
        *,
        observer: KeeperObserver | None = None,
    ) -> None:
        self._config = config
        self._signer = signer
        self._observer = observer
        self.progress = Progress()
        self.pipeline: Pipeline | None = None
        self._last_feed_check = 0.0
        # (number, hash) of the last blocks processed, oldest first: where a reorg is found.
        self._recent: list[tuple[int, str]] = []
        # What a handler changed in the state before it failed: the next one revalues and
        # saves it too.
        self._unfinished = StateChanges()
        self._rolled_back_to: int | None = None
        # After a rollback: the journal is re-checked above this block (before any new send)
        # and the feeds re-read, even if the handler that rolled back failed half-way.
        self._recheck_from: int | None = None

    @property
    def config(self) -> KeeperConfig:
        return self._config

    async def run(self) -> None:
        """Runs until cancelled; raises `ConfigError`/`StartupError` before following if the
        chain does not match the configuration, and `ChainMismatchError` if the node turns into
        another chain. On cancellation, transactions in flight are followed for up to
        `ops.shutdown_grace_s` before it returns."""
        chain = self._config.chain
        rpc = RpcClient(
            (chain.rpc_url, *chain.backup_rpc_urls),
            head_stall_s=chain.head_stall_s,
            observer=self._observer,
        )
        try:
            with keeper_database(self._config) as database:
                while True:
                    try:
                        await self._run(rpc, database)
                        return
                    except _HistoryLostError as reason:
                        log.warning("keeper.reading_history_again", reason=str(reason))
                        CheckpointStore(database).clear()
        except ChainMismatchError as error:
            log.error("keeper.chain_changed", error=str(error))
            raise
        except DatabaseError as error:
            raise StartupError(str(error)) from None
        finally:
            await rpc.close()

    async def _load(self, rpc: RpcClient, checkpoints: CheckpointStore) -> LoadedState:
        """The state at the latest head: from the checkpoint when it is still on the chain,
        else from the deploy block; checkpointed before anything else happens."""
        last_progress_log = 0.0

        def backfill_progress(done: int, total: int) -> None:
            nonlocal last_progress_log
            if time.monotonic() - last_progress_log >= _PROGRESS_LOG_INTERVAL_S or done == total:
                last_progress_log = time.monotonic()
                log.info(
                    "keeper.backfill_progress",
                    blocks_done=done,
                    blocks=total,
                    percent=round(100 * done / total, 1),
                )

        recent: list[tuple[int, str]] = []

        async def resume(genesis_hash: str) -> Resumed | None:
            await rpc.expect_chain(self._config.chain.chain_id, genesis_hash)
            checkpoint = checkpoints.load(
                chain_id=self._config.chain.chain_id,
                genesis_hash=genesis_hash,
                managers=self._config.protocol.credit_managers,
                deploy_block=self._config.protocol.deploy_block,
            )
            if checkpoint is None:
                return None
            if await _block_hash(rpc, checkpoint.block_number) != checkpoint.block_hash:
                log.warning(
                    "checkpoint.discarded",
                    reason="its block is no longer on the chain (a reorg while stopped)",
                    block=checkpoint.block_number,
                )
                return None
            recent.extend(checkpoint.recent_blocks)
            log.info(
                "keeper.resuming",
                block=checkpoint.block_number,
                accounts=checkpoint.state.account_count(),
            )
            return Resumed(checkpoint.state, checkpoint.block_number)

        loaded = await load_state(rpc, self._config, backfill_progress, resume=resume)
        head = loaded.head
        checkpoints.set_identity(
            chain_id=self._config.chain.chain_id,
            genesis_hash=loaded.genesis_hash,
            managers=self._config.protocol.credit_managers,
            deploy_block=self._config.protocol.deploy_block,
        )
        checkpoints.save(
            loaded.state,
            block_number=head.number,
            block_hash=head.hash,
            block_timestamp=head.timestamp,
            changes=loaded.changes if recent else None,
        )
        self._recent = [*recent, (head.number, head.hash)][-self._config.chain.max_reorg_depth :]
        return loaded

    async def _run(self, rpc: RpcClient, database: Database) -> None:
        self._unfinished, self._rolled_back_to, self._recheck_from = StateChanges(), None, None
        checkpoints = CheckpointStore(database, keep_blocks=self._config.chain.max_reorg_depth)
        loaded = await self._load(rpc, checkpoints)
        state, head = loaded.state, loaded.head
        self._last_feed_check = time.monotonic()
        self._advance(head)
        self.progress.head_block = head.number
        self.progress.head_received_at = time.time()
        monitor = RiskMonitor(state)
        started = time.perf_counter()
        monitor.rebuild(head.timestamp)
        log.info("risk.rebuilt", accounts=state.account_count(), took_ms=_ms_since(started))
        # The back-fill's address cache holds an entry per account (~250 B each) that live blocks,
        # naming few addresses, do not need.
        checksum.cache_clear()
        # The state and the books are most of the process's objects and live as long as this
        # run: out of the cyclic collector's walks, a full collection cannot stall a block
        # handler (one over 100,000 accounts' objects takes tens of milliseconds).
        gc.collect()
        gc.freeze()
        self._report_prices(set(monitor.stale_prices()), set(), state)

        journal = TxJournal(database, self._signer.address)
        await check_batch_liquidator(rpc, self._config, self._signer.address)
        liquidator, dispatcher = signing_pipeline(
            rpc, self._config, self._signer, state, journal, observer=self._observer
        )
        pipeline = Pipeline(rpc, loaded.fetcher, state, monitor, liquidator, dispatcher)
        self.pipeline = pipeline
        # Before anything is sent: what an earlier run left on the network, or saw mined in
        # blocks a reorg may have replaced since, is settled or followed, never sent again.
        depth = self._config.chain.max_reorg_depth
        liquidator.follow(await dispatcher.reconcile(mined_after=head.number - depth))
        dispatcher.observe_base_fee(head.base_fee_per_gas)
        dispatcher_task = asyncio.create_task(dispatcher.run(), name="dispatcher")
        endpoints_task = asyncio.create_task(self._watch_endpoints(rpc), name="rpc-endpoints")
        starting_over = False
        try:
            liquidator.announce_permissions()
            await _first_of(liquidator.ensure_approvals(), dispatcher_task)
            await liquidator.report_funding(head.base_fee_per_gas)
            self.progress.backfilled = True
            await self._liquidate(
                monitor.candidates(head.timestamp), liquidator, head, time.monotonic()
            )
            await self._follow(pipeline, checkpoints, head, (dispatcher_task, endpoints_task))
        except _HistoryLostError:
            starting_over = True
            raise
        finally:
            for task in (dispatcher_task, endpoints_task):
                task.cancel()
            await asyncio.gather(dispatcher_task, endpoints_task, return_exceptions=True)
            if not starting_over:
                await dispatcher.drain(self._config.ops.shutdown_grace_s)

    async def _follow(
        self,
        pipeline: Pipeline,
        checkpoints: CheckpointStore,
        head: Head,
        tasks: tuple[asyncio.Task[None], ...],
    ) -> None:
        """One handler per new head until cancelled; raises what ended any of `tasks`."""
        follower = HeadFollower(
            pipeline.rpc,
            ws_url=self._config.chain.ws_url,
            poll_interval_s=self._config.chain.poll_interval_s,
        )
        log.info("keeper.following", from_block=head.number + 1, ws=bool(self._config.chain.ws_url))
        async with aclosing(aiter(follower)) as heads:
            while True:
                new_head = await _next_or_failure(heads, tasks)
                received_at = time.monotonic()
                self.progress.head_received_at = time.time()
                self.progress.head_block = max(self.progress.head_block, new_head.number)
                self.progress.websocket = follower.mode == WEBSOCKET
                if new_head.number <= self.progress.last_block:
                    continue
                pipeline.dispatcher.observe_base_fee(new_head.base_fee_per_gas)
                try:
                    await self._on_head(pipeline, checkpoints, new_head, received_at)
                except InconsistentLogsError as error:
                    self._input_rejected("rpc_inconsistent")
                    log.warning("keeper.block_failed", block=new_head.number, error=str(error))
                except ChainMismatchError:
                    raise
                except (RpcTransportError, RpcError) as error:
                    # What was applied is carried to the next head's handler, which covers
                    # this block again.
                    log.warning("keeper.block_failed", block=new_head.number, error=str(error))

    async def _watch_endpoints(self, rpc: RpcClient) -> None:
        """Asks every endpoint for its head now and then, so one that stalls is set aside and
        one that recovers comes back; ends (to be raised by the head loop) on a chain change."""
        while True:
            await asyncio.sleep(_ENDPOINT_CHECK_INTERVAL_S)
            try:
                await rpc.check_endpoints()
            except ChainMismatchError:
                raise
            except RpcTransportError as error:
                log.debug("rpc.endpoint_check_failed", error=str(error))

    # ------------------------------------------------------------------ start-up

    def _advance(self, head: Head) -> None:
        self.progress.last_block = head.number
        self.progress.last_block_timestamp = head.timestamp

    def _report_prices(
        self, unusable: set[PriceKey], before: set[PriceKey], state: ProtocolState
    ) -> None:
        """Logs and counts each feed once when it becomes unusable, and logs it once when it
        recovers."""
        for oracle, token in sorted(unusable - before):
            kind = _unusable_kind(state, oracle, token)
            self._input_rejected(kind)
            log.warning(
                "feed.unusable",
                oracle=oracle,
                token=token,
                kind=kind,
                detail="price missing, non-positive or stale: accounts holding this token "
                "cannot be valued or liquidated until the feed updates",
            )
        for oracle, token in sorted(before - unusable):
            log.info("feed.recovered", oracle=oracle, token=token)

    def _input_rejected(self, kind: str) -> None:
        if self._observer is not None:
            self._observer.input_rejected(kind)

    # ------------------------------------------------------------------ per block

    async def _on_head(
        self, pipeline: Pipeline, checkpoints: CheckpointStore, head: Head, received_at: float
    ) -> None:
        rpc, fetcher, state, monitor, liquidator = (
            pipeline.rpc,
            pipeline.fetcher,
            pipeline.state,
            pipeline.monitor,
            pipeline.liquidator,
        )
        changes = self._unfinished
        if await self._reorganised(rpc, head):
            await self._roll_back(pipeline)
        if self._recheck_from is not None:
            adopted = await pipeline.dispatcher.reconcile(mined_after=self._recheck_from)
            liquidator.follow(adopted)
            changes.prices |= await read_feeds(rpc, state, head.number)
            self._recheck_from = None
        from_block = self.progress.last_block + 1
        if from_block == head.number:
            # One block: read by its hash, which only the block announced can answer.
            logs = await fetcher.fetch_block_logs(state.watched_addresses(), head.hash, head.number)
        else:
            # A range read cannot tell a block the node lacks from one without logs: first make
            # sure the node answering has the head announced.
            if await _block_hash(rpc, head.number) != head.hash:
                raise RpcTransportError(
                    f"the node answering requests does not have block {head.number} "
                    f"({head.hash}) yet"
                )
            logs = await fetcher.fetch(state.watched_addresses(), from_block, head.number)
        _check_head_logs(logs, head)
        changes.merge(state.apply(decode_logs(logs), undoable=True))
        periodic_check = self._feed_check_due()
        if periodic_check:
            await liquidator.report_funding(head.base_fee_per_gas)
        if changes.feeds_added or periodic_check:
            unreadable: set[str] = set()
            changed = await read_feeds(rpc, state, head.number, unreadable=unreadable)
            for _ in unreadable:
                self._input_rejected("feed_reverted")
            if changed and not changes.feeds_added:
                log.warning("feed.answer_without_event", prices=sorted(changed))
            changes.prices |= changed
        stale_before = set(monitor.stale_prices())
        started = time.perf_counter()
        revaluation = monitor.revalue(changes, head.timestamp)
        log.debug(
            "risk.revalued",
            block=head.number,
            accounts=revaluation.revalued,
            candidates=len(revaluation.candidates),
            took_ms=_ms_since(started),
        )
        self._advance(head)
        if set(monitor.stale_prices()) != stale_before:
            self._report_prices(set(monitor.stale_prices()), stale_before, state)
        self._log_changes(changes, liquidator)
        self._recent.append((head.number, head.hash))
        del self._recent[: -self._config.chain.max_reorg_depth]
        state.discard_undo(head.number - self._config.chain.max_reorg_depth)
        log.debug("keeper.block", block=head.number, logs=len(logs), revalued=revaluation.revalued)
        await self._liquidate(revaluation.candidates, liquidator, head, received_at)
        # The books' upkeep that no candidate waited for, once the liquidations are queued.
        monitor.settle()
        checkpoints.save(
            state,
            block_number=head.number,
            block_hash=head.hash,
            block_timestamp=head.timestamp,
            changes=changes,
            rolled_back_to=self._rolled_back_to,
        )
        self._unfinished, self._rolled_back_to = StateChanges(), None

    async def _reorganised(self, rpc: RpcClient, head: Head) -> bool:
        """Whether `head` does not descend from the last block processed: its parent hash
        tells when it is the next block, the node's block at that height otherwise."""
        number, block_hash = self._recent[-1]
        if head.number == number + 1:
            return head.parent_hash != block_hash
        found = await _block_hash(rpc, number)
        if found is None:
            # The node serving requests lags the one that announced the head: not a reorg.
            raise RpcTransportError(f"the node answering requests has no block {number} yet")
        return found != block_hash

    async def _roll_back(self, pipeline: Pipeline) -> None:
        """Takes the state back to the newest processed block still on the chain and marks the
        journal for a re-check above it. What the undo changed is kept in `_unfinished` at
        once, so a handler failing later still revalues and saves it."""
        last_number = self._recent[-1][0]
        ancestor = None
        for number, block_hash in reversed(self._recent):
            block = await pipeline.rpc.request("eth_getBlockByNumber", [hex(number), False])
            if block is not None and parse_head(block).hash == block_hash:
                ancestor = parse_head(block)
                break
        if ancestor is None:
            raise _HistoryLostError(
                f"a reorg replaced every one of the last {len(self._recent)} blocks processed "
                "(chain.max_reorg_depth)"
            )
        depth = last_number - ancestor.number
        log.warning(
            "chain.reorg",
            depth=depth,
            common_ancestor=ancestor.number,
            replaced=[h for n, h in self._recent if n > ancestor.number],
        )
        if self._observer is not None:
            self._observer.chain_reorganised(depth)
        try:
            self._unfinished.merge(pipeline.state.rollback(ancestor.number))
        except UndoUnavailableError as error:
            raise _HistoryLostError(str(error)) from None
        self._recent = [(n, h) for n, h in self._recent if n <= ancestor.number]
        self._advance(ancestor)
        self._rolled_back_to = _lowest(self._rolled_back_to, ancestor.number)
        self._recheck_from = _lowest(self._recheck_from, ancestor.number)

    def _feed_check_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_feed_check < self._config.liquidation.feed_check_interval_s:
            return False
        self._last_feed_check = now
        return True

    def _log_changes(self, changes: StateChanges, liquidator: Liquidator) -> None:
        if changes.permissions:
            liquidator.announce_permissions()
        for event in changes.liquidations:
            log.info(
                "account.liquidated",
                account=event.credit_account,
                liquidator=event.liquidator,
                by_this_keeper=event.liquidator in liquidator.liquidating_addresses,
                block=event.position.block_number,
                total_value=event.total_value,
                loss=event.loss,
            )

    async def _liquidate(
        self,
        candidates: list[Candidate],
        liquidator: Liquidator,
        head: Head,
        received_at: float,
    ) -> None:
        self._track_liquidatable(candidates, head.number)
        if candidates:
            await liquidator.handle(candidates, head, received_at)

    def _track_liquidatable(self, candidates: list[Candidate], block: int) -> None:
        """Remembers since which block each account has been below 1, for the alert on
        accounts left unliquidated."""
        since = self.progress.liquidatable_since
        self.progress.liquidatable_since = {
            c.account: since.get(c.account, (c.manager, block)) for c in candidates
        }


async def _next_or_failure(
    heads: AsyncIterator[Head], tasks: tuple[asyncio.Task[None], ...]
) -> Head:
    """The next head; but if one of `tasks` (which run until cancelled) ends first, what ended
    it is raised at once, even when no head comes (a node turned into another chain)."""
    for task in tasks:
        if task.done():
            task.result()
    next_head = asyncio.ensure_future(anext(heads))
    try:
        await asyncio.wait({next_head, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not next_head.done():
            next_head.cancel()
            await asyncio.gather(next_head, return_exceptions=True)
    for task in tasks:
        if task.done():
            task.result()
    return next_head.result()


async def _first_of(work: Coroutine[Any, Any, None], watchdog: asyncio.Task[None]) -> None:
    """Awaits `work`, but fails at once if the task it depends on dies first."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task, watchdog}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task not in done:
        task.cancel()
        watchdog.result()
        raise StartupError("the dispatcher stopped during start-up")
    task.result()


def _ms_since(started: float) -> float:
    """Milliseconds since the `time.perf_counter()` reading `started`."""
    return round((time.perf_counter() - started) * 1000, 3)


def _lowest(earlier: int | None, block: int) -> int:
    return block if earlier is None else min(earlier, block)


async def _block_hash(rpc: RpcClient, number: int) -> str | None:
    """The hash of the node's block at `number`, None when it has none."""
    block = await rpc.request("eth_getBlockByNumber", [hex(number), False])
    return None if block is None else parse_head(block).hash


def _check_head_logs(logs: list[dict[str, Any]], head: Head) -> None:
    """Logs of the head's block must come from that very block: a node behind a load balancer
    may answer `eth_getLogs` from another fork than the one it announced."""
    number = hex(head.number)
    for entry in logs:
        if entry.get("blockNumber") == number and entry.get("blockHash") != head.hash:
            raise InconsistentLogsError(
                f"logs of block {head.number} carry hash {entry.get('blockHash')}, but the head "
                f"announced is {head.hash}: the node answered from another fork"
            )


def _unusable_kind(state: ProtocolState, oracle: str, token: str) -> str:
    """Why a feed's price cannot be used: missing, not positive, or stale."""
    price = state.prices.get(oracle, {}).get(token)
    if price is None:
        return "feed_missing"
    return "feed_non_positive" if price.answer <= 0 else "feed_stale"
