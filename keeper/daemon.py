"""The keeper's life: check the chain, back-fill, then one handler per new block, in order.

Block handlers never overlap: the head follower yields the newest head, and a handler covers every
block since the last one it processed (one `eth_getLogs` over the range), so a slow block cannot
make the keeper fall behind by queueing. Sending runs beside it in the dispatcher's own task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from keeper.chain.heads import WEBSOCKET, Head, HeadFollower
from keeper.chain.logs import LogFetcher
from keeper.chain.rpc import RpcClient, RpcObserver, RpcTransportError
from keeper.config import KeeperConfig
from keeper.execution.dispatcher import Dispatcher
from keeper.execution.liquidator import Liquidator
from keeper.execution.observer import ExecutionObserver
from keeper.execution.signer import Signer
from keeper.protocol.events import decode_logs
from keeper.risk.monitor import Candidate, RiskMonitor
from keeper.startup import StartupError, load_state, read_feeds, signing_pipeline
from keeper.state.store import PriceKey, ProtocolState, StateChanges

log = structlog.get_logger(__name__)

_PROGRESS_LOG_INTERVAL_S = 2.0


class KeeperObserver(RpcObserver, ExecutionObserver, Protocol):
    """Everything the keeper's stages report as it happens (implemented by `keeper.ops`)."""


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

    @property
    def config(self) -> KeeperConfig:
        return self._config

    async def run(self) -> None:
        """Runs until cancelled; raises `ConfigError`/`StartupError` before following if the
        chain does not match the configuration. On cancellation, transactions in flight are
        followed for up to `ops.shutdown_grace_s` before it returns."""
        rpc = RpcClient(self._config.chain.rpc_url, observer=self._observer)
        try:
            await self._run(rpc)
        finally:
            await rpc.close()

    async def _run(self, rpc: RpcClient) -> None:
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

        loaded = await load_state(rpc, self._config, backfill_progress)
        state, head = loaded.state, loaded.head
        self._last_feed_check = time.monotonic()
        self._advance(head)
        self.progress.head_block = head.number
        self.progress.head_received_at = time.time()
        monitor = RiskMonitor(state)
        monitor.rebuild(head.timestamp)
        self._report_prices(set(monitor.stale_prices()), set())

        liquidator, dispatcher = signing_pipeline(
            rpc, self._config, self._signer, state, observer=self._observer
        )
        pipeline = Pipeline(rpc, loaded.fetcher, state, monitor, liquidator, dispatcher)
        self.pipeline = pipeline
        dispatcher.observe_base_fee(head.base_fee_per_gas)
        dispatcher_task = asyncio.create_task(dispatcher.run(), name="dispatcher")
        try:
            liquidator.announce_permissions()
            await _first_of(liquidator.ensure_approvals(), dispatcher_task)
            await liquidator.report_funding(head.base_fee_per_gas)
            self.progress.backfilled = True
            await self._liquidate(monitor, liquidator, head, time.monotonic())
            follower = HeadFollower(
                rpc,
                ws_url=self._config.chain.ws_url,
                poll_interval_s=self._config.chain.poll_interval_s,
            )
            log.info(
                "keeper.following", from_block=head.number + 1, ws=bool(self._config.chain.ws_url)
            )
            async for new_head in follower:
                received_at = time.monotonic()
                self.progress.head_received_at = time.time()
                self.progress.head_block = max(self.progress.head_block, new_head.number)
                self.progress.websocket = follower.mode == WEBSOCKET
                if dispatcher_task.done():
                    dispatcher_task.result()
                if new_head.number <= self.progress.last_block:
                    continue
                dispatcher.observe_base_fee(new_head.base_fee_per_gas)
                try:
                    await self._on_head(pipeline, new_head, received_at)
                except RpcTransportError as error:
                    # Nothing was applied: the next head's handler covers this block again.
                    log.warning("keeper.block_failed", block=new_head.number, error=str(error))
        finally:
            dispatcher_task.cancel()
            await asyncio.gather(dispatcher_task, return_exceptions=True)
            await dispatcher.drain(self._config.ops.shutdown_grace_s)

    # ------------------------------------------------------------------ start-up

    def _advance(self, head: Head) -> None:
        self.progress.last_block = head.number
        self.progress.last_block_timestamp = head.timestamp

    @staticmethod
    def _report_prices(unusable: set[PriceKey], before: set[PriceKey]) -> None:
        """Logs each feed once when it becomes unusable and once when it recovers."""
        for oracle, token in sorted(unusable - before):
            log.warning(
                "feed.unusable",
                oracle=oracle,
                token=token,
                detail="price missing, non-positive or stale: accounts holding this token "
                "cannot be valued or liquidated until the feed updates",
            )
        for oracle, token in sorted(before - unusable):
            log.info("feed.recovered", oracle=oracle, token=token)

    # ------------------------------------------------------------------ per block

    async def _on_head(self, pipeline: Pipeline, head: Head, received_at: float) -> None:
        rpc, fetcher, state, monitor, liquidator = (
            pipeline.rpc,
            pipeline.fetcher,
            pipeline.state,
            pipeline.monitor,
            pipeline.liquidator,
        )
        from_block = self.progress.last_block + 1
        logs = await fetcher.fetch(state.watched_addresses(), from_block, head.number)
        changes = state.apply(decode_logs(logs))
        periodic_check = self._feed_check_due()
        if periodic_check:
            await liquidator.report_funding(head.base_fee_per_gas)
        if changes.feeds_added or periodic_check:
            changed = await read_feeds(rpc, state, head.number)
            if changed and not changes.feeds_added:
                log.warning("feed.answer_without_event", prices=sorted(changed))
            changes.prices |= changed
        stale_before = set(monitor.stale_prices())
        revalued = monitor.apply(changes, head.timestamp)
        if set(monitor.stale_prices()) != stale_before:
            self._report_prices(set(monitor.stale_prices()), set())
        self._log_changes(changes, liquidator)
        self._advance(head)
        log.debug("keeper.block", block=head.number, logs=len(logs), revalued=revalued)
        await self._liquidate(monitor, liquidator, head, received_at)

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
                by_this_keeper=event.liquidator == self._signer.address,
                block=event.position.block_number,
                total_value=event.total_value,
                loss=event.loss,
            )

    async def _liquidate(
        self, monitor: RiskMonitor, liquidator: Liquidator, head: Head, received_at: float
    ) -> None:
        candidates = monitor.candidates(head.timestamp)
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


async def _first_of(work: Coroutine[Any, Any, None], watchdog: asyncio.Task[None]) -> None:
    """Awaits `work`, but fails at once if the task it depends on dies first."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task, watchdog}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        task.cancel()
        watchdog.result()
        raise StartupError("the dispatcher stopped during start-up")
    task.result()
