"""The keeper's life: check the chain, back-fill, then one handler per new block, in order.

Block handlers never overlap: the head follower yields the newest head, and a handler covers every
block since the last one it processed (one `eth_getLogs` over the range), so a slow block cannot
make the keeper fall behind by queueing. Sending runs beside it in the dispatcher's own task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from keeper.chain.heads import Head, HeadFollower, latest_head
from keeper.chain.logs import LogFetcher
from keeper.chain.rpc import RpcClient, RpcTransportError, redact_url
from keeper.config import ConfigError, KeeperConfig
from keeper.execution.dispatcher import Dispatcher, TxRequest
from keeper.execution.liquidator import LiquidationPolicy, Liquidator
from keeper.execution.signer import Signer
from keeper.protocol.calls import MULTICALL3_ADDRESS, feed_call, manager_call, multicall
from keeper.protocol.events import decode_logs
from keeper.risk.monitor import RiskMonitor
from keeper.state.store import MarketState, PriceKey, ProtocolState, StateChanges

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The chain or the contracts are not what the keeper needs; the message says what."""


@dataclass(slots=True)
class Progress:
    """Where the keeper is; read by tests and (later) health endpoints."""

    backfilled: bool = False
    last_block: int = 0
    last_block_timestamp: int = 0
    accounts: int = 0


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The stages wired together for one run; exposed so tests and health checks can look in."""

    rpc: RpcClient
    fetcher: LogFetcher
    state: ProtocolState
    monitor: RiskMonitor
    liquidator: Liquidator


class Keeper:
    def __init__(self, config: KeeperConfig, signer: Signer) -> None:
        self._config = config
        self._signer = signer
        self.progress = Progress()
        self.pipeline: Pipeline | None = None
        self._last_feed_check = 0.0

    async def run(self) -> None:
        """Runs until cancelled; raises `ConfigError`/`StartupError` before following if the
        chain does not match the configuration."""
        rpc = RpcClient(self._config.chain.rpc_url)
        try:
            await self._run(rpc)
        finally:
            await rpc.close()

    async def _run(self, rpc: RpcClient) -> None:
        await self._check_chain(rpc)
        state = ProtocolState(await self._read_markets(rpc))
        fetcher = LogFetcher(rpc, initial_chunk_blocks=self._config.chain.log_chunk_blocks)
        head = await latest_head(rpc)
        await self._backfill(rpc, fetcher, state, head)
        monitor = RiskMonitor(state)
        monitor.rebuild(head.timestamp)
        self._report_prices(set(monitor.stale_prices()), set())

        liquidator: Liquidator

        async def still_wanted(request: TxRequest) -> bool:
            return await liquidator.still_wanted(request)

        dispatcher = Dispatcher(
            rpc,
            self._signer,
            self._config.chain.chain_id,
            priority_fee_wei=self._config.liquidation.priority_fee_wei,
            max_fee_wei=self._config.liquidation.max_fee_wei,
            inclusion_timeout_s=self._config.liquidation.inclusion_timeout_s,
            still_wanted=still_wanted,
        )
        liquidator = Liquidator(rpc, state, dispatcher, self._signer.address, self._policy())
        pipeline = Pipeline(rpc, fetcher, state, monitor, liquidator)
        self.pipeline = pipeline
        dispatcher.observe_base_fee(head.base_fee_per_gas)
        dispatcher_task = asyncio.create_task(dispatcher.run(), name="dispatcher")
        try:
            liquidator.announce_permissions()
            await _first_of(liquidator.ensure_approvals(), dispatcher_task)
            await liquidator.report_funding(head.base_fee_per_gas)
            self.progress.backfilled = True
            await self._liquidate(monitor, liquidator, head)
            follower = HeadFollower(
                rpc,
                ws_url=self._config.chain.ws_url,
                poll_interval_s=self._config.chain.poll_interval_s,
            )
            log.info(
                "keeper.following", from_block=head.number + 1, ws=bool(self._config.chain.ws_url)
            )
            async for new_head in follower:
                if dispatcher_task.done():
                    dispatcher_task.result()
                if new_head.number <= self.progress.last_block:
                    continue
                dispatcher.observe_base_fee(new_head.base_fee_per_gas)
                try:
                    await self._on_head(pipeline, new_head)
                except RpcTransportError as error:
                    # Nothing was applied: the next head's handler covers this block again.
                    log.warning("keeper.block_failed", block=new_head.number, error=str(error))
        finally:
            dispatcher_task.cancel()
            await asyncio.gather(dispatcher_task, return_exceptions=True)

    # ------------------------------------------------------------------ start-up

    def _policy(self) -> LiquidationPolicy:
        settings = self._config.liquidation
        return LiquidationPolicy(
            native_token=settings.native_token,
            min_profit_usd=settings.min_profit_usd,
            emergency=settings.emergency,
            priority_fee_wei=settings.priority_fee_wei,
            max_fee_wei=settings.max_fee_wei,
            gas_limit_margin_bps=settings.gas_limit_margin_bps,
            max_failures=settings.max_failures,
            failure_cooldown_s=settings.failure_cooldown_s,
        )

    async def _check_chain(self, rpc: RpcClient) -> None:
        chain_id = int(await rpc.request("eth_chainId", []), 16)
        if chain_id != self._config.chain.chain_id:
            raise ConfigError(
                "chain.chain_id",
                self._config.chain.chain_id,
                f"the node at {redact_url(rpc.url)} serves chain {chain_id}; point rpc_url at "
                "the right network or correct chain_id",
            )
        named = [
            (f"protocol.credit_managers[{i}]", address)
            for i, address in enumerate(self._config.protocol.credit_managers)
        ]
        named.append(("liquidation.native_token", self._config.liquidation.native_token))
        for field, address in named:
            if not await _has_code(rpc, address):
                raise ConfigError(
                    field, address, f"no contract at this address on chain {chain_id}"
                )
        if not await _has_code(rpc, MULTICALL3_ADDRESS):
            raise StartupError(
                f"no Multicall3 at {MULTICALL3_ADDRESS} on chain {chain_id}; the keeper batches "
                "its reads through it (it is deployed on every major EVM chain)"
            )
        log.info("keeper.chain_checked", chain_id=chain_id, rpc=redact_url(rpc.url))

    async def _read_markets(self, rpc: RpcClient) -> list[MarketState]:
        managers = self._config.protocol.credit_managers
        calls = [
            manager_call(m, name) for m in managers for name in ("underlying", "pool", "oracle")
        ]
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

    async def _backfill(
        self, rpc: RpcClient, fetcher: LogFetcher, state: ProtocolState, head: Head
    ) -> None:
        """Rebuilds the protocol's state from the deploy block's logs up to `head`, then reads
        every feed's latest answer at `head` (one read instead of its whole price history)."""
        started = time.monotonic()
        first = self._config.protocol.deploy_block
        total = max(head.number - first + 1, 1)

        def progress(done_to: int, to_block: int) -> None:
            log.info(
                "keeper.backfill_progress",
                block=done_to,
                to_block=to_block,
                percent=round(100 * (done_to - first + 1) / total, 1),
            )

        logs = await fetcher.fetch(
            state.watched_addresses(), first, head.number, on_progress=progress
        )
        state.apply(decode_logs(logs))
        for market in state.markets.values():
            if market.interest_rate is None:
                raise ConfigError(
                    "protocol.deploy_block",
                    first,
                    f"the logs from there hold no interest-rate checkpoint of pool {market.pool} "
                    f"(CreditManager {market.manager}): set it at or before the pool's deployment",
                )
        await self._read_feeds(rpc, state, head.number)
        self._last_feed_check = time.monotonic()
        self.progress.last_block = head.number
        self.progress.last_block_timestamp = head.timestamp
        self.progress.accounts = state.account_count()
        log.info(
            "keeper.backfilled",
            from_block=first,
            to_block=head.number,
            logs=len(logs),
            accounts=self.progress.accounts,
            feeds=len(state.feeds()),
            seconds=round(time.monotonic() - started, 3),
        )

    async def _read_feeds(self, rpc: RpcClient, state: ProtocolState, block: int) -> set[PriceKey]:
        """Every feed's `latestRoundData` at `block`; returns the prices that changed. A missed
        `AnswerUpdated` or a feed replaced without an event shows up here."""
        feeds = sorted(state.feeds())
        results = await multicall(
            rpc, [feed_call(f, "latestRoundData") for f in feeds], block=block
        )
        changed: set[PriceKey] = set()
        for feed, result in zip(feeds, results, strict=True):
            if result.outputs is None:
                log.error("feed.unreadable", feed=feed, revert=str(result.revert))
                continue
            _, answer, _, updated_at, _ = result.outputs
            changed |= state.set_answer(feed, answer, updated_at)
        return changed

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

    async def _on_head(self, pipeline: Pipeline, head: Head) -> None:
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
            changed = await self._read_feeds(rpc, state, head.number)
            if changed and not changes.feeds_added:
                log.warning("feed.answer_without_event", prices=sorted(changed))
            changes.prices |= changed
        stale_before = set(monitor.stale_prices())
        revalued = monitor.apply(changes, head.timestamp)
        if set(monitor.stale_prices()) != stale_before:
            self._report_prices(set(monitor.stale_prices()), set())
        self._log_changes(changes, liquidator)
        self.progress.last_block = head.number
        self.progress.last_block_timestamp = head.timestamp
        self.progress.accounts = state.account_count()
        log.debug("keeper.block", block=head.number, logs=len(logs), revalued=revalued)
        await self._liquidate(monitor, liquidator, head)

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

    async def _liquidate(self, monitor: RiskMonitor, liquidator: Liquidator, head: Head) -> None:
        candidates = monitor.candidates(head.timestamp)
        if candidates:
            await liquidator.handle(candidates, head)


async def _has_code(rpc: RpcClient, address: str) -> bool:
    return await rpc.request("eth_getCode", [address, "latest"]) not in ("0x", "0x0", None)


async def _first_of(work: Coroutine[Any, Any, None], watchdog: asyncio.Task[None]) -> None:
    """Awaits `work`, but fails at once if the task it depends on dies first."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task, watchdog}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        task.cancel()
        watchdog.result()
        raise StartupError("the dispatcher stopped during start-up")
    task.result()
